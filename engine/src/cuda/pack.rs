//! A compact, GPU-ready copy of a [`ResNet`]: fp16 weights (int8 + scales for a quantized layer) in one
//! safetensors file, the network's structure in its metadata.
//!
//! The GPU engine computes in fp16, so rounding the weights to fp16 on the way loses nothing it would
//! keep: a network read back from a pack runs bit-identically to the same network read from its ONNX
//! file. The pack is half the size of the fp32 ONNX file, which is what lets the benchmark carry the
//! weights to a lent GPU machine (docs/gpu.md), and PyTorch reads the same file (`safetensors`) to build
//! the identical reference network there (scripts/gpu/torch_ref.py).
//!
//! Tensors: `{conv}.weight` f16 `[O, I, k, k]` (ONNX/PyTorch OIHW), or for a quantized layer
//! `{conv}.weight_q` i8 with `{conv}.weight_scale` f32 `[O]`; `{conv}.bias` f32 `[O]`; the same for `fc`.
//! Metadata key `inferscope` holds [`PackMeta`] as JSON.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use half::f16;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::model::{ActQuant, Bottleneck, Conv, Linear, QuantTable, ResNet, WeightQuant};

/// Metadata key holding [`PackMeta`].
pub const META_KEY: &str = "inferscope";
/// Format version written into [`PackMeta::format`].
pub const FORMAT: u32 = 1;

/// The structure of the network (everything but the tensors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackMeta {
    pub format: u32,
    /// Free text: which variant, from which file.
    pub source: String,
    pub input_offset: [f32; 3],
    pub stem: ConvMeta,
    pub stages: Vec<Vec<BlockMeta>>,
    /// Activation quantization by tensor name (INT8 variant).
    #[serde(default)]
    pub acts: BTreeMap<String, ActMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvMeta {
    pub name: String,
    pub stride: usize,
    pub pad: usize,
    pub relu: bool,
    /// Weight bits of a quantized layer (8, or 7 for "reduce range"); absent for fp16 weights.
    #[serde(default)]
    pub bits: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub name: String,
    pub conv1: ConvMeta,
    pub conv2: ConvMeta,
    pub conv3: ConvMeta,
    pub downsample: Option<ConvMeta>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ActMeta {
    pub scale: f32,
    pub zero_point: i32,
    pub signed: bool,
}

/// Rounds every weight to fp16 (biases and quantized layers stay as they are): the network exactly as
/// the GPU engine and a pack see it.
pub fn round_to_pack(net: &ResNet) -> ResNet {
    let mut out = net.clone();
    let quantized = |name: &str| {
        net.quant
            .as_ref()
            .is_some_and(|q| q.weights.contains_key(name))
    };
    for c in out.convs_mut() {
        if !quantized(&c.name) {
            c.weight
                .iter_mut()
                .for_each(|w| *w = f16::from_f32(*w).to_f32());
        }
    }
    if !quantized("fc") {
        out.fc
            .weight
            .iter_mut()
            .for_each(|w| *w = f16::from_f32(*w).to_f32());
    }
    out
}

/// Serializes the network to pack bytes.
pub fn to_bytes(net: &ResNet, source: &str) -> Result<Vec<u8>> {
    net.validate()
        .map_err(|e| Error::Shape(format!("invalid network: {e}")))?;
    let quant = net.quant.clone().unwrap_or_default();
    let conv_meta = |c: &Conv| ConvMeta {
        name: c.name.clone(),
        stride: c.stride,
        pad: c.pad,
        relu: c.relu,
        bits: quant.weights.get(&c.name).map(|w| w.bits),
    };
    let meta = PackMeta {
        format: FORMAT,
        source: source.into(),
        input_offset: net.input_offset,
        stem: conv_meta(&net.stem),
        stages: net
            .stages
            .iter()
            .map(|s| {
                s.iter()
                    .map(|b| BlockMeta {
                        name: b.name.clone(),
                        conv1: conv_meta(&b.conv1),
                        conv2: conv_meta(&b.conv2),
                        conv3: conv_meta(&b.conv3),
                        downsample: b.downsample.as_ref().map(conv_meta),
                    })
                    .collect()
            })
            .collect(),
        acts: quant
            .acts
            .iter()
            .map(|(k, a)| {
                (
                    k.clone(),
                    ActMeta {
                        scale: a.scale,
                        zero_point: a.zero_point,
                        signed: a.signed,
                    },
                )
            })
            .collect(),
    };

    // name → (dtype, shape, bytes)
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut layer = |name: &str, shape: Vec<usize>, weight: &[f32], bias: &[f32]| -> Result<()> {
        match quant.weights.get(name) {
            Some(wq) => {
                let per = weight.len() / wq.scales.len();
                let lim = f32::from((1i16 << (wq.bits - 1)) as i8 - 1);
                let q: Vec<u8> = weight
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v / wq.scales[i / per]).round().clamp(-lim, lim) as i8 as u8)
                    .collect();
                tensors.push((format!("{name}.weight_q"), Dtype::I8, shape, q));
                tensors.push((
                    format!("{name}.weight_scale"),
                    Dtype::F32,
                    vec![wq.scales.len()],
                    f32_bytes(&wq.scales),
                ));
            }
            None => {
                let bytes = weight
                    .iter()
                    .flat_map(|&w| f16::from_f32(w).to_le_bytes())
                    .collect();
                tensors.push((format!("{name}.weight"), Dtype::F16, shape, bytes));
            }
        }
        tensors.push((
            format!("{name}.bias"),
            Dtype::F32,
            vec![bias.len()],
            f32_bytes(bias),
        ));
        Ok(())
    };
    for c in net.convs() {
        layer(
            &c.name,
            vec![c.out_ch, c.in_ch, c.kernel, c.kernel],
            &c.weight,
            &c.bias,
        )?;
    }
    let fc = &net.fc;
    layer(
        &fc.name,
        vec![fc.out_features, fc.in_features],
        &fc.weight,
        &fc.bias,
    )?;

    let views = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(pack_err)
        })
        .collect::<Result<Vec<_>>>()?;
    let json =
        serde_json::to_string(&meta).map_err(|e| Error::Runtime(format!("pack metadata: {e}")))?;
    safetensors::serialize(views, Some(HashMap::from([(META_KEY.to_string(), json)])))
        .map_err(pack_err)
}

/// Writes the network as a pack file.
pub fn save(net: &ResNet, path: &Path, source: &str) -> Result<()> {
    let bytes = to_bytes(net, source)?;
    std::fs::write(path, bytes).context(|| format!("writing {}", path.display()))
}

/// Reads a pack file back into a network (weights are the fp16 values, or `q * scale` exactly as the
/// ONNX reader dequantizes them).
pub fn load(path: &Path) -> Result<ResNet> {
    if !path.exists() {
        return Err(Error::MissingModel(path.into()));
    }
    let bytes = std::fs::read(path).context(|| format!("reading {}", path.display()))?;
    from_bytes(&bytes).map_err(|e| Error::InvalidModel {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// Parses pack bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<ResNet> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(pack_err)?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| {
            Error::Runtime(format!("not an inferscope pack (no `{META_KEY}` metadata)"))
        })?;
    let meta: PackMeta =
        serde_json::from_str(json).map_err(|e| Error::Runtime(format!("pack metadata: {e}")))?;
    if meta.format != FORMAT {
        return Err(Error::Runtime(format!(
            "pack format {} (this build reads {FORMAT})",
            meta.format
        )));
    }
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(pack_err)?;
    let mut weights = BTreeMap::new();

    let mut layer = |name: &str| -> Result<(Vec<usize>, Vec<f32>, Vec<f32>)> {
        let bias = f32_values(&st.tensor(&format!("{name}.bias")).map_err(pack_err)?)?;
        if let Ok(w) = st.tensor(&format!("{name}.weight")) {
            if w.dtype() != Dtype::F16 {
                return Err(Error::Runtime(format!(
                    "{name}.weight is {:?}, expected F16",
                    w.dtype()
                )));
            }
            let vals = w
                .data()
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            return Ok((w.shape().to_vec(), vals, bias));
        }
        let q = st.tensor(&format!("{name}.weight_q")).map_err(pack_err)?;
        let scales = f32_values(
            &st.tensor(&format!("{name}.weight_scale"))
                .map_err(pack_err)?,
        )?;
        if q.dtype() != Dtype::I8 || scales.is_empty() || q.data().len() % scales.len() != 0 {
            return Err(Error::Runtime(format!("{name}: bad quantized weight")));
        }
        let per = q.data().len() / scales.len();
        let vals = q
            .data()
            .iter()
            .enumerate()
            .map(|(i, &b)| (f64::from(b as i8) * f64::from(scales[i / per])) as f32)
            .collect();
        let max_abs = q
            .data()
            .iter()
            .map(|&b| (b as i8).unsigned_abs())
            .max()
            .unwrap_or(0);
        weights.insert(
            name.to_string(),
            WeightQuant {
                scales,
                bits: if max_abs <= 63 { 7 } else { 8 },
            },
        );
        Ok((q.shape().to_vec(), vals, bias))
    };
    let mut conv = |m: &ConvMeta| -> Result<Conv> {
        let (shape, weight, bias) = layer(&m.name)?;
        if shape.len() != 4 || shape[2] != shape[3] {
            return Err(Error::Runtime(format!(
                "{}: weight shape {shape:?} is not [O, I, k, k]",
                m.name
            )));
        }
        Ok(Conv {
            name: m.name.clone(),
            out_ch: shape[0],
            in_ch: shape[1],
            kernel: shape[2],
            stride: m.stride,
            pad: m.pad,
            weight,
            bias,
            relu: m.relu,
        })
    };
    let stem = conv(&meta.stem)?;
    let mut stages = Vec::new();
    for s in &meta.stages {
        let mut blocks = Vec::new();
        for b in s {
            blocks.push(Bottleneck {
                name: b.name.clone(),
                conv1: conv(&b.conv1)?,
                conv2: conv(&b.conv2)?,
                conv3: conv(&b.conv3)?,
                downsample: b.downsample.as_ref().map(&mut conv).transpose()?,
            });
        }
        stages.push(blocks);
    }
    let (shape, weight, bias) = layer("fc")?;
    if shape.len() != 2 {
        return Err(Error::Runtime(format!(
            "fc weight shape {shape:?} is not [out, in]"
        )));
    }
    let fc = Linear {
        name: "fc".into(),
        out_features: shape[0],
        in_features: shape[1],
        weight,
        bias,
    };
    let acts: BTreeMap<String, ActQuant> = meta
        .acts
        .iter()
        .map(|(k, a)| {
            (
                k.clone(),
                ActQuant {
                    scale: a.scale,
                    zero_point: a.zero_point,
                    signed: a.signed,
                },
            )
        })
        .collect();
    let quant = QuantTable { acts, weights };
    let quant = if quant == QuantTable::default() {
        None
    } else {
        Some(quant)
    };
    let net = ResNet {
        input_offset: meta.input_offset,
        stem,
        stages,
        fc,
        quant,
    };
    net.validate()
        .map_err(|e| Error::Runtime(format!("pack describes an invalid network: {e}")))?;
    Ok(net)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_values(t: &TensorView<'_>) -> Result<Vec<f32>> {
    if t.dtype() != Dtype::F32 {
        return Err(Error::Runtime(format!(
            "expected an F32 tensor, found {:?}",
            t.dtype()
        )));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn pack_err(e: safetensors::SafeTensorError) -> Error {
    Error::Runtime(format!("pack: {e}"))
}
