//! The GPU engine (feature `cuda`). Tests that need a GPU print why they skip on a machine without one
//! (CI); on the GPU machine (scripts/gpu/run.sh runs this binary) they compare the engine with a plain
//! f64 CPU forward pass of the same network, written here as the reference.

#![cfg(feature = "cuda")]

use engine::backend::{BackendKind, BackendOptions, Model};
use engine::cuda::net::GpuOptions;
use engine::cuda::{pack, probe, CudaBackend};
use engine::loader::backend_for;
use engine::model::{ActQuant, Bottleneck, Conv, Linear, QuantTable, ResNet, WeightQuant};
use engine::variants::VARIANTS;
use engine::{Error, INPUT_LEN, INPUT_SIZE, NUM_CLASSES};

/// xorshift64*, so the tests need no RNG crate and are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32) / (1u64 << 24) as f32 * 2.0
            - 1.0
    }
}

fn conv(
    rng: &mut Rng,
    name: &str,
    out_ch: usize,
    in_ch: usize,
    kernel: usize,
    stride: usize,
    relu: bool,
) -> Conv {
    // Uniform with variance 2/fan_in (He), so activations stay of order 1 through the network.
    let a = (6.0 / (in_ch * kernel * kernel) as f32).sqrt();
    Conv {
        name: name.into(),
        out_ch,
        in_ch,
        kernel,
        stride,
        pad: kernel / 2,
        weight: (0..out_ch * in_ch * kernel * kernel)
            .map(|_| rng.next() * a)
            .collect(),
        bias: (0..out_ch).map(|_| rng.next() * 0.1).collect(),
        relu,
    }
}

/// A small ResNet of the real topology (stem, 4 stages with projection shortcuts, 1000 classes), with
/// one channel count that is not a multiple of 8 (as a pruned network may have).
fn tiny_net(seed: u64) -> ResNet {
    tiny_net_with(
        seed,
        &[
            (8, 32, 1, 2),
            (12, 48, 2, 1),
            (16, 64, 2, 1),
            (32, 128, 2, 1),
        ],
    )
}

/// The same topology with the given (inner width, output width, stride, blocks) per stage.
fn tiny_net_with(seed: u64, widths: &[(usize, usize, usize, usize)]) -> ResNet {
    let mut rng = Rng(seed);
    let stem = conv(&mut rng, "conv1", 16, 3, 7, 2, true);
    let mut stages = Vec::new();
    let mut ch = 16;
    for (s, &(mid, out, stride, blocks)) in widths.iter().enumerate() {
        let mut stage = Vec::new();
        for b in 0..blocks {
            let name = format!("layer{}.{b}", s + 1);
            let st = if b == 0 { stride } else { 1 };
            stage.push(Bottleneck {
                conv1: conv(&mut rng, &format!("{name}.conv1"), mid, ch, 1, st, true),
                conv2: conv(&mut rng, &format!("{name}.conv2"), mid, mid, 3, 1, true),
                conv3: conv(&mut rng, &format!("{name}.conv3"), out, mid, 1, 1, false),
                downsample: (b == 0).then(|| {
                    conv(
                        &mut rng,
                        &format!("{name}.downsample"),
                        out,
                        ch,
                        1,
                        st,
                        false,
                    )
                }),
                name,
            });
            ch = out;
        }
        stages.push(stage);
    }
    let a = (3.0 / ch as f32).sqrt();
    let fc = Linear {
        name: "fc".into(),
        out_features: NUM_CLASSES,
        in_features: ch,
        weight: (0..NUM_CLASSES * ch).map(|_| rng.next() * a).collect(),
        bias: (0..NUM_CLASSES).map(|_| rng.next() * 0.1).collect(),
    };
    let net = ResNet {
        input_offset: [0.1, -0.2, 0.3],
        stem,
        stages,
        fc,
        quant: None,
    };
    net.validate().expect("tiny net is valid");
    net
}

fn input(seed: u64, batch: usize) -> Vec<f32> {
    let mut rng = Rng(seed);
    (0..batch * INPUT_LEN).map(|_| rng.next() * 2.0).collect()
}

// ---- the f64 reference (NCHW, one image) ----

fn conv_ref(c: &Conv, x: &[f64], h: usize) -> (Vec<f64>, usize) {
    let oh = c.out_size(h);
    let mut y = vec![0.0; c.out_ch * oh * oh];
    for o in 0..c.out_ch {
        for oy in 0..oh {
            for ox in 0..oh {
                let mut acc = f64::from(c.bias[o]);
                for i in 0..c.in_ch {
                    for ky in 0..c.kernel {
                        let iy = (oy * c.stride + ky) as isize - c.pad as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..c.kernel {
                            let ix = (ox * c.stride + kx) as isize - c.pad as isize;
                            if ix < 0 || ix >= h as isize {
                                continue;
                            }
                            acc += f64::from(c.w(o, i, ky, kx))
                                * x[(i * h + iy as usize) * h + ix as usize];
                        }
                    }
                }
                y[(o * oh + oy) * oh + ox] = if c.relu { acc.max(0.0) } else { acc };
            }
        }
    }
    (y, oh)
}

fn forward_ref(net: &ResNet, img: &[f32]) -> Vec<f64> {
    forward_obs(net, img, &mut |_, _| {})
}

/// [`forward_ref`], reporting every tensor a QDQ file quantizes (by its name) to `obs`.
fn forward_obs(net: &ResNet, img: &[f32], obs: &mut dyn FnMut(&str, &[f64])) -> Vec<f64> {
    let plane = INPUT_SIZE * INPUT_SIZE;
    let x: Vec<f64> = img
        .iter()
        .enumerate()
        .map(|(i, &v)| f64::from(v) - f64::from(net.input_offset[i / plane]))
        .collect();
    obs("stem_in", &x);
    let (y, h) = conv_ref(&net.stem, &x, INPUT_SIZE);
    obs("conv1.out", &y);
    let ph = (h + 2 - 3) / 2 + 1;
    let c = net.stem.out_ch;
    let mut x = vec![f64::MIN; c * ph * ph];
    for ch in 0..c {
        for oy in 0..ph {
            for ox in 0..ph {
                for dy in 0..3 {
                    for dx in 0..3 {
                        let (iy, ix) = ((oy * 2 + dy) as isize - 1, (ox * 2 + dx) as isize - 1);
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < h {
                            let v = y[(ch * h + iy as usize) * h + ix as usize];
                            let m = &mut x[(ch * ph + oy) * ph + ox];
                            *m = m.max(v);
                        }
                    }
                }
            }
        }
    }
    obs("pool", &x);
    let mut s = ph;
    for b in net.blocks() {
        let (t1, s1) = conv_ref(&b.conv1, &x, s);
        obs(&format!("{}.out", b.conv1.name), &t1);
        let (t2, s2) = conv_ref(&b.conv2, &t1, s1);
        obs(&format!("{}.out", b.conv2.name), &t2);
        let (t3, s3) = conv_ref(&b.conv3, &t2, s2);
        obs(&format!("{}.out", b.conv3.name), &t3);
        let short = match &b.downsample {
            Some(d) => {
                let y = conv_ref(d, &x, s).0;
                obs(&format!("{}.out", d.name), &y);
                y
            }
            None => x.clone(),
        };
        x = t3
            .iter()
            .zip(&short)
            .map(|(a, b)| (a + b).max(0.0))
            .collect();
        obs(&format!("{}.out", b.name), &x);
        s = s3;
    }
    let ch = net.fc.in_features;
    let gap: Vec<f64> = (0..ch)
        .map(|c| x[c * s * s..(c + 1) * s * s].iter().sum::<f64>() / (s * s) as f64)
        .collect();
    obs("gap", &gap);
    (0..net.fc.out_features)
        .map(|o| {
            f64::from(net.fc.bias[o])
                + (0..ch)
                    .map(|i| f64::from(net.fc.weight[o * ch + i]) * gap[i])
                    .sum::<f64>()
        })
        .collect()
}

fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn argmax64(v: &[f64]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]))
        .unwrap_or(0)
}

/// The GPU backend, or `None` (with the reason printed) on a machine without one.
fn gpu(max_batch: usize) -> Option<CudaBackend> {
    match probe(0) {
        Ok(_) => Some(
            CudaBackend::new(
                0,
                GpuOptions {
                    max_batch,
                    ..Default::default()
                },
            )
            .expect("GPU found but unusable"),
        ),
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

// ---- tests that run everywhere ----

#[test]
fn asking_for_cuda_without_a_gpu_is_a_clear_error() {
    let result = backend_for(BackendKind::Cuda, &BackendOptions::default());
    match (probe(0), result) {
        (Ok(_), Ok(b)) => assert_eq!(b.kind(), BackendKind::Cuda),
        (Err(_), Err(Error::BackendUnavailable { backend, reason })) => {
            assert_eq!(backend, "cuda");
            assert!(
                reason.contains("not found") || reason.contains("GPU"),
                "unclear reason: {reason}"
            );
        }
        (probe, result) => panic!(
            "probe {probe:?} disagrees with the backend: {:?}",
            result.err()
        ),
    }
}

#[test]
fn pack_round_trip_keeps_the_network_at_fp16_precision() {
    let mut net = tiny_net(7);
    // A quantized layer and activation scales travel as int8 + scales.
    let c = &mut net.stages[0][0].conv2;
    let per = c.fan_in();
    let scales: Vec<f32> = c
        .weight
        .chunks(per)
        .map(|w| w.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0)
        .collect();
    for (i, w) in c.weight.iter_mut().enumerate() {
        *w = ((*w / scales[i / per]).round().clamp(-127.0, 127.0) as f64
            * f64::from(scales[i / per])) as f32;
    }
    let mut quant = QuantTable::default();
    quant
        .weights
        .insert(c.name.clone(), WeightQuant { scales, bits: 8 });
    quant.acts.insert(
        "pool".into(),
        ActQuant {
            scale: 0.05,
            zero_point: 0,
            signed: false,
        },
    );
    net.quant = Some(quant);

    let bytes = pack::to_bytes(&net, "test").expect("serializes");
    let back = pack::from_bytes(&bytes).expect("parses");
    let expected = pack::round_to_pack(&net);
    assert!(
        back.quant == expected.quant,
        "quantization table: {:?} vs {:?}",
        back.quant,
        expected.quant
    );
    assert!(
        back == expected,
        "the network read back differs from the fp16-rounded original"
    );
    // fp16 rounding moved the fp32 weights, but by at most half an fp16 ulp (relative 2^-11).
    let (a, b) = (&net.stem.weight, &back.stem.weight);
    assert!(a.iter().zip(b).any(|(x, y)| x != y));
    assert!(a
        .iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= x.abs() * 4.9e-4 + 1e-7));
    // The quantized layer is exact.
    assert_eq!(
        net.stages[0][0].conv2.weight,
        back.stages[0][0].conv2.weight
    );

    assert!(
        pack::from_bytes(&bytes[..bytes.len() / 2]).is_err(),
        "a truncated pack must not parse"
    );
}

/// A tiny network in INT8 QDQ form (channel counts multiples of 16, as the int8 path needs): 7-bit
/// per-channel weights and fixed activation ranges of the right order for this He-initialized net.
fn tiny_int8_net(seed: u64, mids: [usize; 4]) -> ResNet {
    let mut net = tiny_net(seed);
    let mut rng = Rng(seed ^ 0x5eed);
    // Widen the inner channels to `mids` (fresh weights, same topology).
    let mut ch = net.stem.out_ch;
    for (stage, &mid) in net.stages.iter_mut().zip(&mids) {
        for b in stage.iter_mut() {
            let out = b.conv3.out_ch;
            let st = b.conv1.stride;
            b.conv1 = conv(&mut rng, &b.conv1.name.clone(), mid, ch, 1, st, true);
            b.conv2 = conv(&mut rng, &b.conv2.name.clone(), mid, mid, 3, 1, true);
            b.conv3 = conv(&mut rng, &b.conv3.name.clone(), out, mid, 1, 1, false);
            ch = out;
        }
    }
    let mut quant = QuantTable::default();
    let bits = 7u8;
    let qmax = 63f32;
    let mut quantize_weights = |name: &str, w: &mut Vec<f32>, out: usize| {
        let per = w.len() / out;
        let scales: Vec<f32> = w
            .chunks(per)
            .map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6) / qmax)
            .collect();
        for (i, v) in w.iter_mut().enumerate() {
            *v = (*v / scales[i / per]).round().clamp(-qmax, qmax) * scales[i / per];
        }
        quant
            .weights
            .insert(name.to_string(), WeightQuant { scales, bits });
    };
    for c in net.convs_mut() {
        let out = c.out_ch;
        quantize_weights(&c.name.clone(), &mut c.weight, out);
    }
    let out = net.fc.out_features;
    quantize_weights("fc", &mut net.fc.weight, out);
    // Activation ranges: the largest magnitude of each tensor on two inputs (max calibration).
    let mut ranges = std::collections::BTreeMap::<String, (f64, bool)>::new();
    for seed in [21, 22] {
        forward_obs(&net, &input(seed, 1), &mut |name, v| {
            let e = ranges.entry(name.to_string()).or_insert((0.0, true));
            for &x in v {
                e.0 = e.0.max(x.abs());
                e.1 &= x >= 0.0;
            }
        });
    }
    for (name, (range, nonneg)) in ranges {
        let range = range.max(1e-3) as f32;
        let q = if nonneg {
            ActQuant {
                scale: range / 255.0,
                zero_point: 0,
                signed: false,
            }
        } else {
            ActQuant {
                scale: range / 127.0,
                zero_point: 128,
                signed: false,
            }
        };
        quant.acts.insert(name, q);
    }
    // The file's rules: the pool is quantized like the stem's output.
    let stem = quant.acts["conv1.out"];
    quant.acts.insert("pool".into(), stem);
    net.quant = Some(quant);
    net.validate().expect("valid");
    net
}

const INT8_MIDS: [usize; 4] = [16, 32, 32, 48];

#[test]
fn the_tiny_int8_net_has_an_integer_form() {
    let net = tiny_int8_net(11, INT8_MIDS);
    let q = engine::int8::QNet::new(&net).expect("integer form");
    assert_eq!(q.convs().count(), net.convs().count());
    let x = input(12, 1);
    let logits = q.forward(&x);
    // Close to the float network it quantizes (7-bit weights, 8-bit activations).
    let float = forward_ref(&net, &x);
    let err = rel_err(&logits, &float);
    assert!(err < 0.2, "integer form vs float: {err:.2e}");
    // Channel counts the int8 tensor-core path cannot take are refused with the reason.
    let odd = tiny_int8_net(11, [8, 12, 16, 32]);
    let err = engine::int8::QNet::new(&odd).unwrap_err().to_string();
    assert!(err.contains("multiples of 16"), "{err}");
}

// ---- GPU tests ----

#[test]
fn int8_path_matches_its_cpu_reference() {
    let Some(gpu) = gpu(8) else { return };
    let net = tiny_int8_net(11, INT8_MIDS);
    let q = engine::int8::QNet::new(&net).expect("integer form");
    let x = input(13, 5);
    let model = gpu.load_net_with(&VARIANTS[3], &net, true).expect("loads");
    assert!(
        model.path().starts_with("int8 tensor cores"),
        "{}",
        model.path()
    );
    // 5 images: the graph of bucket 8; then each alone (bucket 1).
    let (logits, probs) = model.run_with_probs(&x, 5).expect("runs");
    for i in 0..5 {
        let img = &x[i * INPUT_LEN..(i + 1) * INPUT_LEN];
        let want: Vec<f64> = q.forward(img).iter().map(|&v| f64::from(v)).collect();
        let got = &logits[i * NUM_CLASSES..(i + 1) * NUM_CLASSES];
        let err = rel_err(got, &want);
        // Integer arithmetic is exact; the FC runs in fp16 on the GPU, f32 on the CPU.
        assert!(err < 1e-2, "image {i}: relative error {err:.2e}");
        assert_eq!(engine::classify::argmax(got), argmax64(&want), "image {i}");
        // Alone (another graph, other GEMM algorithms): the same up to the FC's fp16 rounding.
        let alone = model.run(img, 1).expect("runs alone");
        let alone64: Vec<f64> = alone.iter().map(|&v| f64::from(v)).collect();
        let d = rel_err(got, &alone64);
        assert!(
            d < 2e-3,
            "image {i}: batch of 1 vs batch of 5 differ by {d:.1e}"
        );
        let sum: f32 = probs[i * NUM_CLASSES..(i + 1) * NUM_CLASSES].iter().sum();
        assert!((sum - 1.0).abs() < 1e-3);
    }
    // A quantized network the int8 path cannot take runs dequantized in fp16, and says why.
    let odd = tiny_int8_net(11, [8, 12, 16, 32]);
    let model = gpu.load_net(&VARIANTS[3], &odd).expect("loads in fp16");
    assert!(model.path().contains("multiples of 16"), "{}", model.path());
}

/// Image bytes (HWC) and the floats preprocessing makes of them (NCHW, `(v / 255 − mean) / std`).
fn image_bytes(seed: u64, batch: usize) -> (Vec<u8>, Vec<f32>) {
    use engine::preprocess::{MEAN, STD};
    let mut rng = Rng(seed);
    let bytes: Vec<u8> = (0..batch * INPUT_LEN)
        .map(|_| ((rng.next() + 1.0) * 127.9) as u8)
        .collect();
    let plane = INPUT_SIZE * INPUT_SIZE;
    let mut floats = vec![0f32; batch * INPUT_LEN];
    for (i, &v) in bytes.iter().enumerate() {
        let (img, rest) = (i / INPUT_LEN, i % INPUT_LEN);
        let (p, c) = (rest / 3, rest % 3);
        floats[img * INPUT_LEN + c * plane + p] = (v as f32 / 255.0 - MEAN[c]) / STD[c];
    }
    (bytes, floats)
}

#[test]
fn u8_input_gives_exactly_the_logits_of_the_normalized_floats() {
    let Some(gpu) = gpu(4) else { return };
    let (bytes, floats) = image_bytes(21, 3);
    for (spec, net) in [
        (&VARIANTS[0], tiny_net(6)),
        (&VARIANTS[3], tiny_int8_net(11, INT8_MIDS)),
    ] {
        let model = gpu.load_net(spec, &net).expect("loads");
        let (want, _) = model.run_with_probs(&floats, 3).expect("runs f32");
        let got = model.run_u8(&bytes, 3).expect("runs u8");
        assert_eq!(got, want, "{}: u8 and f32 inputs differ", model.path());
        // Declared sizes are checked before anything is copied.
        assert!(matches!(
            model.run_u8(&bytes[..100], 1),
            Err(Error::Shape(_))
        ));
        assert!(matches!(model.run_u8(&bytes, 2), Err(Error::Shape(_))));
    }
}

#[test]
fn gpu_logits_match_an_f64_reference() {
    let Some(gpu) = gpu(8) else { return };
    let net = tiny_net(1);
    let model = gpu.load_net(&VARIANTS[0], &net).expect("loads");
    // 3 images run in the graph of bucket 4 (one padded row).
    let x = input(2, 3);
    let (logits, probs) = model.run_with_probs(&x, 3).expect("runs");
    assert_eq!(logits.len(), 3 * NUM_CLASSES);
    let reference = pack::round_to_pack(&net);
    for i in 0..3 {
        let want = forward_ref(&reference, &x[i * INPUT_LEN..(i + 1) * INPUT_LEN]);
        let got = &logits[i * NUM_CLASSES..(i + 1) * NUM_CLASSES];
        let err = rel_err(got, &want);
        assert!(err < 1e-2, "image {i}: relative error {err:.2e}");
        assert_eq!(
            engine::classify::argmax(got),
            argmax64(&want),
            "image {i}: top-1 differs"
        );
        let p = &probs[i * NUM_CLASSES..(i + 1) * NUM_CLASSES];
        let sum: f32 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}");
        let softmax = engine::classify::softmax(got);
        assert!(
            p.iter().zip(&softmax).all(|(a, b)| (a - b).abs() < 1e-4),
            "GPU softmax differs from classify::softmax"
        );
    }
}

#[test]
fn graph_replay_equals_the_eager_pass_and_images_are_independent_of_their_batch() {
    let Some(gpu) = gpu(8) else { return };
    let net = tiny_net(3);
    let model = gpu.load_net(&VARIANTS[0], &net).expect("loads");
    let x = input(4, 8);
    let (graph, _) = model.run_with_probs(&x, 8).expect("runs");
    let eager = model
        .lock()
        .expect("lock")
        .run_eager(&x, 8)
        .expect("runs eagerly");
    let scale = eager.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = graph
        .iter()
        .zip(&eager)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff <= 1e-3 * scale,
        "graph vs eager: {diff} (scale {scale})"
    );
    // Image 5 alone (bucket 1, its own algorithms) and inside the batch of 8.
    let alone = model
        .run(&x[5 * INPUT_LEN..6 * INPUT_LEN], 1)
        .expect("runs");
    let in_batch = &graph[5 * NUM_CLASSES..6 * NUM_CLASSES];
    let err = rel_err(
        &alone,
        &in_batch.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
    );
    assert!(err < 5e-3, "batch 1 vs batch 8: relative error {err:.2e}");
    // More images than max_batch are split into several graph runs.
    let x20 = input(5, 20);
    let all = model.run(&x20, 20).expect("runs 20");
    let last = model.run(&x20[19 * INPUT_LEN..], 1).expect("runs 1");
    let err = rel_err(
        &all[19 * NUM_CLASSES..],
        &last.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
    );
    assert!(err < 5e-3, "image 20 of 20 vs alone: {err:.2e}");
}

/// Makes every 1×1 stride-1 convolution 2:4 along its input channels (the two largest weights of
/// each group of four kept), as the 2:4 variant builder does.
fn make_two_four(net: &mut ResNet) -> usize {
    let mut count = 0;
    let mut sparsify = |c: &mut Conv| {
        if c.kernel != 1 || c.stride != 1 || !c.in_ch.is_multiple_of(4) {
            return;
        }
        // The shapes the engine hands to cuSPARSELt (channel counts multiples of 32).
        if c.in_ch.is_multiple_of(32) && c.out_ch.is_multiple_of(32) {
            count += 1;
        }
        for g in c.weight.chunks_mut(4) {
            let mut idx = [0, 1, 2, 3];
            idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
            g[idx[2]] = 0.0;
            g[idx[3]] = 0.0;
        }
    };
    for stage in &mut net.stages {
        for b in stage {
            sparsify(&mut b.conv1);
            sparsify(&mut b.conv3);
            if let Some(d) = &mut b.downsample {
                sparsify(d);
            }
        }
    }
    count
}

#[test]
fn two_four_layers_on_cusparselt_match_the_f64_reference() {
    let Some(gpu) = gpu(32) else { return };
    let mut net = tiny_net_with(
        7,
        &[
            (32, 64, 1, 2),
            (32, 128, 2, 2),
            (64, 256, 2, 1),
            (64, 256, 2, 1),
        ],
    );
    let eligible = make_two_four(&mut net);
    assert!(eligible >= 8, "{eligible} 2:4 layers");
    // cuSPARSELt wherever it takes the shape and matches, faster or not: the sparse path must run.
    let opts = GpuOptions {
        max_batch: 32,
        prefer_sparse: true,
        ..Default::default()
    };
    let model = gpu
        .load_net_with_options(&VARIANTS[2], &net, opts)
        .expect("loads");
    let x = input(8, 32);
    let (logits, _) = model.run_with_probs(&x, 32).expect("runs");
    let path = model.path();
    if !path.contains("try the sparse tensor cores") {
        eprintln!("skipping the sparse part: cuSPARSELt unavailable ({path})");
        return;
    }
    assert!(
        path.contains(&format!("{eligible} of ")),
        "every 2:4 layer compressed: {path}"
    );
    assert!(
        path.contains("cuSPARSELt 2:4 (sparse tensor cores)"),
        "no layer ran on cuSPARSELt at batch 32: {path}"
    );
    let reference = pack::round_to_pack(&net);
    for i in [0, 13, 31] {
        let want = forward_ref(&reference, &x[i * INPUT_LEN..(i + 1) * INPUT_LEN]);
        let got = &logits[i * NUM_CLASSES..(i + 1) * NUM_CLASSES];
        let err = rel_err(got, &want);
        assert!(err < 1e-2, "image {i}: relative error {err:.2e} ({path})");
        assert_eq!(engine::classify::argmax(got), argmax64(&want), "image {i}");
    }
    // The replayed graph (cuSPARSELt calls captured in it) equals the eager pass.
    let eager = model
        .lock()
        .expect("lock")
        .run_eager(&x, 32)
        .expect("runs eagerly");
    let scale = eager.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = logits
        .iter()
        .zip(&eager)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff <= 1e-3 * scale,
        "graph vs eager: {diff} (scale {scale})"
    );
    // Off: the same network dense, and the path says so.
    let dense = gpu
        .load_net_with_options(
            &VARIANTS[2],
            &net,
            GpuOptions {
                max_batch: 32,
                sparse: false,
                ..Default::default()
            },
        )
        .expect("loads");
    let (dense_logits, _) = dense.run_with_probs(&x, 32).expect("runs");
    assert!(dense.path().contains("run dense"), "{}", dense.path());
    assert!(!dense.path().contains("cuSPARSELt 2:4"), "{}", dense.path());
    let err = rel_err(
        &logits,
        &dense_logits
            .iter()
            .map(|&v| f64::from(v))
            .collect::<Vec<_>>(),
    );
    assert!(err < 1e-2, "sparse vs dense: relative error {err:.2e}");
}

#[test]
fn buckets_without_a_graph_answer_like_the_graph_and_say_so() {
    let Some(gpu) = gpu(8) else { return };
    let net = tiny_net(11);
    let x = input(12, 5);
    let with = gpu.load_net(&VARIANTS[0], &net).expect("loads");
    let eager = gpu
        .load_net_with_options(
            &VARIANTS[0],
            &net,
            GpuOptions {
                max_batch: 8,
                graphs: false,
                ..Default::default()
            },
        )
        .expect("loads");
    // 5 images run in bucket 8: through its graph, and enqueued eagerly (the fallback of a bucket
    // whose graph fails the replay check).
    let a = with.run(&x, 5).expect("runs");
    let b = eager.run(&x, 5).expect("runs eagerly");
    let u8_b = {
        let (bytes, floats) = image_bytes(13, 2);
        let f = eager.run(&floats, 2).expect("runs");
        let u = eager.run_u8(&bytes, 2).expect("runs u8");
        assert_eq!(f, u, "eager u8 vs f32");
        u
    };
    assert_eq!(u8_b.len(), 2 * NUM_CLASSES);
    let err = rel_err(&b, &a.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
    assert!(err < 5e-3, "eager vs graph: relative error {err:.2e}");
    let path = eager.path();
    assert!(
        path.contains(
            "batch 8 (run eagerly, without a CUDA graph: CUDA graphs off in the options)"
        ),
        "{path}"
    );
    assert!(!with.path().contains("run eagerly"), "{}", with.path());
}

#[test]
fn gpu_model_rejects_bad_input_and_missing_files() {
    let Some(gpu) = gpu(4) else { return };
    let model = gpu.load_net(&VARIANTS[0], &tiny_net(9)).expect("loads");
    assert!(matches!(model.run(&[0.0; 10], 1), Err(Error::Shape(_))));
    assert!(matches!(model.run(&[], 0), Err(Error::Shape(_))));
    let missing = engine::backend::Backend::load(&gpu, &VARIANTS[0], "no/such/model.onnx".as_ref());
    assert!(matches!(missing, Err(Error::MissingModel(_))));
}

/// The f64 reference above is itself checked against ONNX Runtime (the CPU engine) on the same network,
/// so a GPU failure cannot be a reference bug.
#[cfg(feature = "ort")]
#[test]
fn the_f64_reference_agrees_with_onnx_runtime() {
    let net = tiny_net(11);
    let dir = std::env::temp_dir().join(format!("inferscope-cuda-ref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tiny.onnx");
    engine::onnx_io::save(&net, &path, &Default::default()).expect("writes ONNX");
    let cpu = match backend_for(
        BackendKind::Cpu,
        &BackendOptions {
            intra_threads: 1,
            device: 0,
        },
    ) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let model = cpu
        .load(&VARIANTS[0], &path)
        .expect("ONNX Runtime loads the tiny net");
    let x = input(12, 2);
    let logits = model.run(&x, 2).expect("runs");
    for i in 0..2 {
        let want = forward_ref(&net, &x[i * INPUT_LEN..(i + 1) * INPUT_LEN]);
        let err = rel_err(&logits[i * NUM_CLASSES..(i + 1) * NUM_CLASSES], &want);
        assert!(
            err < 1e-4,
            "image {i}: ONNX Runtime vs f64 reference {err:.2e}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `serve --gpus all --executors-per-gpu 2` through the engine's one loader: a replica per executor
/// on every GPU, calls from many threads at once spread over them, and every replica answers like
/// the model loaded alone (same top-1, logits within fp16 tolerance: each GPU's per-layer search may
/// pick other kernels).
#[test]
fn replicas_on_every_gpu_answer_like_one_model() {
    use engine::loader::{load_all, LoadPlan, Placement, VariantLoad};
    let Some(gpu) = gpu(64) else { return };
    let count = engine::cuda::device_count().expect("a GPU was probed");
    let net = tiny_net(6);
    let dir = std::env::temp_dir().join(format!("inferscope-cuda-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    engine::onnx_io::save(&net, &dir.join(VARIANTS[0].file), &Default::default())
        .expect("writes ONNX");
    let gpus: Vec<usize> = (0..count).collect();
    let mut plan = LoadPlan::new(&dir, BackendKind::Cuda);
    plan.default = Placement::gpus(&gpus, 2);
    let loaded = load_all(&plan);
    std::fs::remove_dir_all(&dir).ok();
    let model = match &loaded[0].load {
        VariantLoad::Ready(m) => m.clone(),
        VariantLoad::Failed(e) => panic!("replicas failed to load: {e}"),
        VariantLoad::Missing | VariantLoad::Unloaded => panic!("the file was written"),
    };
    let info = model.info();
    assert_eq!(info.backend, BackendKind::Cuda);
    assert!(
        info.device
            .starts_with(&format!("{} replicas: ", 2 * count)),
        "{}",
        info.device
    );
    for g in &gpus {
        assert!(
            info.device.contains("2 × ") && info.device.contains(&format!("(GPU {g})")),
            "{}",
            info.device
        );
    }
    let alone = gpu.load_net(&VARIANTS[0], &net).expect("loads");
    let (bytes, _) = image_bytes(31, 5);
    let want = alone.run_u8(&bytes, 5).expect("runs alone");
    let want64: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
    let start = std::sync::Barrier::new(4 * count);
    std::thread::scope(|s| {
        for _ in 0..4 * count {
            s.spawn(|| {
                start.wait();
                for _ in 0..5 {
                    let got = model.run_u8(&bytes, 5).expect("runs on a replica");
                    for i in 0..5 {
                        let r = i * NUM_CLASSES..(i + 1) * NUM_CLASSES;
                        let got64: Vec<f64> =
                            got[r.clone()].iter().map(|&v| f64::from(v)).collect();
                        assert!(rel_err(&got[r.clone()], &want64[r.clone()]) < 1e-2);
                        assert_eq!(argmax64(&got64), argmax64(&want64[r]));
                    }
                }
            });
        }
    });
}

// ---- class activation maps: the feature map read back from the device ----

/// The f64 reference's last block output (the global average pool's input), `[c, h, w]`.
fn last_map_ref(net: &ResNet, img: &[f32]) -> Vec<f64> {
    let last = net.blocks().last().expect("a block").name.clone() + ".out";
    let mut map = Vec::new();
    forward_obs(net, img, &mut |name, t| {
        if name == last {
            map = t.to_vec();
        }
    });
    map
}

/// `run_explained` on both executors: the fp16 one returns the map the f64 reference computes (within
/// fp16 precision), the int8 one exactly the integer reference's (`QNet::feature_map`: the same
/// integers, dequantized with the same single f32 multiplication); the logits are the plain run's,
/// bit for bit (the same graph); the byte path gives the same maps; a request larger than
/// `max_batch` is split and every image keeps its own map.
#[test]
fn explained_runs_return_the_last_feature_map_of_every_image() {
    use engine::cam::{class_activation_map, same_hottest, Cam};
    let Some(gpu) = gpu(4) else { return };
    let net = tiny_net(21);
    let model = gpu.load_net(&VARIANTS[0], &net).expect("loads");
    assert!(model.explains().is_ok());
    // 6 images: buckets 4 and 2.
    let (bytes, x) = image_bytes(22, 6);
    let (logits, explained) = model.run_explained(&x, 6).expect("runs explained");
    assert_eq!(
        logits,
        model.run(&x, 6).expect("runs"),
        "explaining changed the logits"
    );
    assert_eq!(explained.maps.len(), 6);
    let fc = &explained.classifier;
    assert_eq!((fc.classes, fc.features), (NUM_CLASSES, net.fc.in_features));
    assert_eq!(fc.weight, net.fc.weight);
    for (i, map) in explained.maps.iter().enumerate() {
        let img = &x[i * INPUT_LEN..(i + 1) * INPUT_LEN];
        assert_eq!((map.channels, map.height, map.width), (128, 7, 7));
        let want = last_map_ref(&net, img);
        let err = rel_err(&map.data, &want);
        assert!(err < 1e-2, "image {i}: feature map off by {err:.2e}");
        // The CAM of the top-1 class: its mean + bias is the logit; it looks where the f64 one does.
        let row = &logits[i * NUM_CLASSES..(i + 1) * NUM_CLASSES];
        let class = engine::classify::argmax(row);
        let cam = class_activation_map(map, fc, class).expect("cam");
        assert!(
            (cam.logit() - row[class]).abs() < 2e-2 * row[class].abs().max(1.0),
            "image {i}: mean(CAM) + b = {} against the logit {}",
            cam.logit(),
            row[class]
        );
        let want_map =
            engine::cam::FeatureMap::new(128, 7, 7, want.iter().map(|&v| v as f32).collect())
                .unwrap();
        let want_cam: Cam = class_activation_map(&want_map, fc, class).unwrap();
        assert!(
            same_hottest(&want_cam, &cam, 2e-2),
            "image {i}: hottest {:?}, f64 reference {:?}",
            cam.hottest(),
            want_cam.hottest()
        );
    }
    let (logits_u8, from_bytes) = model.run_u8_explained(&bytes, 6).expect("bytes");
    assert_eq!(logits_u8, logits);
    for (a, b) in from_bytes.maps.iter().zip(&explained.maps) {
        assert_eq!(a, b, "the byte path's feature map differs");
    }

    // INT8: exactly the integer reference's map.
    let qnet = tiny_int8_net(11, INT8_MIDS);
    let q = engine::int8::QNet::new(&qnet).expect("integer form");
    let model = gpu.load_net_with(&VARIANTS[3], &qnet, true).expect("loads");
    assert!(
        model.path().starts_with("int8 tensor cores"),
        "{}",
        model.path()
    );
    let (logits, explained) = model.run_u8_explained(&bytes, 6).expect("runs explained");
    assert_eq!(logits, model.run_u8(&bytes, 6).expect("runs"));
    assert_eq!(explained.classifier.weight, qnet.fc.weight);
    for (i, map) in explained.maps.iter().enumerate() {
        let want = q.feature_map(&x[i * INPUT_LEN..(i + 1) * INPUT_LEN]);
        assert_eq!(map.channels, want.channels);
        let differ = map
            .data
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "image {i}: {differ} values differ from QNet's");
        assert!(
            want.data.iter().any(|&v| v != 0.0),
            "an all-zero map proves nothing"
        );
    }
}

/// The real variants on the GPU machine: every pack in `INFERSCOPE_GPU_DIR` with the CPU engine's
/// feature maps beside it (`gpu_bench prepare` writes `maps-<variant>.f32` and `cams-<variant>.json`
/// for the first photos of `inputs.u8`, from ONNX Runtime on the original file) explains like the CPU:
/// the same top-1, the feature map within fp16 precision (relative L2 error < 1e-2; the pack's weights
/// are fp16) or, for INT8, within one quantization step on at most 0.1% of the values (the GPU computes
/// the integer reference exactly, which equals ONNX Runtime up to rare rounding ties), and the CAM's
/// hottest cell the CPU's (or a near tie, within 2% of the map's range: see `same_hottest`).
#[test]
fn every_variant_pack_explains_like_the_cpu_engine() {
    let Some(dir) = std::env::var_os("INFERSCOPE_GPU_DIR").map(std::path::PathBuf::from) else {
        eprintln!(
            "skipping: INFERSCOPE_GPU_DIR (the carried packs and CPU feature maps) is not set"
        );
        return;
    };
    let Some(gpu) = gpu(8) else { return };
    let bytes_chw = std::fs::read(dir.join("inputs.u8")).expect("inputs.u8");
    let mut tested = 0;
    for spec in VARIANTS.iter() {
        let (pack_path, maps_path) = (
            dir.join(format!("{}.safetensors", spec.id)),
            dir.join(format!("maps-{}.f32", spec.id)),
        );
        if !pack_path.is_file() || !maps_path.is_file() {
            eprintln!(
                "{}: no pack or CPU feature maps in {} (skipped)",
                spec.id,
                dir.display()
            );
            continue;
        }
        let cams: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("cams-{}.json", spec.id))).expect("cams json"),
        )
        .expect("json");
        let cpu_maps: Vec<f32> = std::fs::read(&maps_path)
            .expect("maps")
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let photos = cams["photos"].as_array().expect("photos").len();
        let per = cpu_maps.len() / photos;
        let net = pack::load(&pack_path).expect("pack");
        let step = net.quant.as_ref().map(|_| {
            engine::int8::QNet::new(&net)
                .expect("integer form")
                .last
                .scale
        });
        let model = gpu.load_net(spec, &net).expect("loads");
        // CHW bytes (as carried) → HWC, what `run_u8` takes.
        let plane = INPUT_SIZE * INPUT_SIZE;
        let mut hwc = vec![0u8; photos * INPUT_LEN];
        for (i, &v) in bytes_chw[..photos * INPUT_LEN].iter().enumerate() {
            let (img, r) = (i / INPUT_LEN, i % INPUT_LEN);
            hwc[img * INPUT_LEN + (r % plane) * 3 + r / plane] = v;
        }
        let (logits, explained) = model.run_u8_explained(&hwc, photos).expect("runs");
        for (i, map) in explained.maps.iter().enumerate() {
            let want = &cpu_maps[i * per..(i + 1) * per];
            assert_eq!(map.data.len(), per, "{}: map size", spec.id);
            let row = &logits[i * NUM_CLASSES..(i + 1) * NUM_CLASSES];
            let entry = &cams["photos"][i];
            let cpu_top1 = entry["top1"].as_u64().expect("top1") as usize;
            assert_eq!(
                engine::classify::argmax(row),
                cpu_top1,
                "{} photo {i}: top-1",
                spec.id
            );
            let want64: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
            let err = rel_err(&map.data, &want64);
            let hot_cpu = engine::cam::Cam {
                class: cpu_top1 as u32,
                height: 7,
                width: 7,
                values: serde_json::from_value(entry["cam"].clone()).expect("cam values"),
                bias: 0.0,
            };
            let cam = engine::cam::class_activation_map(map, &explained.classifier, cpu_top1)
                .expect("cam");
            let same = engine::cam::same_hottest(&hot_cpu, &cam, 2e-2);
            match step {
                Some(s) => {
                    let off: Vec<f32> = map
                        .data
                        .iter()
                        .zip(want)
                        .map(|(a, b)| (a - b).abs())
                        .filter(|&d| d > 0.0)
                        .collect();
                    let worst = off.iter().fold(0f32, |m, &d| m.max(d));
                    eprintln!(
                        "{} photo {i}: {} of {per} values differ (largest {:.2} steps), rel. L2 {err:.1e}, hottest {:?} vs CPU {:?}",
                        spec.id,
                        off.len(),
                        worst / s,
                        cam.hottest(),
                        hot_cpu.hottest()
                    );
                    assert!(
                        worst <= s * 1.001,
                        "{} photo {i}: {worst} > one step {s}",
                        spec.id
                    );
                    assert!(
                        off.len() * 1000 <= per,
                        "{} photo {i}: {} values off",
                        spec.id,
                        off.len()
                    );
                }
                None => {
                    eprintln!(
                        "{} photo {i}: rel. L2 {err:.1e}, hottest {:?} vs CPU {:?}",
                        spec.id,
                        cam.hottest(),
                        hot_cpu.hottest()
                    );
                    assert!(
                        err < 1e-2,
                        "{} photo {i}: feature map off by {err:.2e}",
                        spec.id
                    );
                }
            }
            assert!(
                same,
                "{} photo {i}: hottest {:?}, CPU {:?}",
                spec.id,
                cam.hottest(),
                hot_cpu.hottest()
            );
        }
        tested += 1;
    }
    assert!(
        tested > 0,
        "INFERSCOPE_GPU_DIR holds no pack with CPU feature maps"
    );
}

/// A request of several chunks is pipelined (`run_u8`: the host copies one chunk while the GPU runs
/// the previous one, two buffer sets taking turns, a copy stream and events between the streams).
/// Its logits and probabilities must be exactly those of the same chunks run one call at a time on the
/// plain path (one thread copying, no pipeline), and of the f32 path; for several staging settings,
/// including chunks below `max_batch` and parts copied by several threads (a chunk of 32 images is
/// 4.8 MB: two parts).
#[test]
fn pipelined_chunks_give_the_bits_of_chunks_run_one_by_one() {
    use engine::cuda::io::Staging;
    let Some(gpu) = gpu(32) else { return };
    let images = 70;
    let (bytes, floats) = image_bytes(41, images);
    for (spec, net) in [
        (&VARIANTS[0], tiny_net(7)),
        (&VARIANTS[3], tiny_int8_net(12, INT8_MIDS)),
    ] {
        let model = gpu.load_net(spec, &net).expect("loads");
        let set = |s: Staging| model.lock().expect("lock").io().staging = s;
        let (f32_logits, f32_probs) = model.run_with_probs(&floats, images).expect("runs f32");
        for (threads, chunk, part_bytes) in
            [(8, 0, 0), (3, 8, 1 << 20), (1, 5, 0), (16, 32, 300_000)]
        {
            // The reference: each chunk a call of its own, copied by one thread, not pipelined.
            let per = if chunk == 0 { 32 } else { chunk };
            set(Staging {
                threads: 1,
                chunk: 0,
                part_bytes: 0,
            });
            let (mut want_l, mut want_p) = (Vec::new(), Vec::new());
            for s in (0..images).step_by(per) {
                let n = per.min(images - s);
                let (l, p) = model
                    .run_u8_with_probs(&bytes[s * INPUT_LEN..(s + n) * INPUT_LEN], n)
                    .expect("runs one chunk");
                want_l.extend(l);
                want_p.extend(p);
            }
            set(Staging {
                threads,
                chunk,
                part_bytes,
            });
            let (got_l, got_p) = model
                .run_u8_with_probs(&bytes, images)
                .expect("runs pipelined");
            let what = format!("{} (threads {threads}, chunk {per})", model.path());
            assert_eq!(got_l.len(), images * NUM_CLASSES, "{what}");
            assert!(got_l == want_l, "{what}: pipelined logits differ");
            assert!(got_p == want_p, "{what}: pipelined probabilities differ");
            if per == 32 {
                // Chunks of max_batch are what the f32 path runs too: the same bits.
                assert!(got_l == f32_logits, "{what}: u8 and f32 logits differ");
                assert!(
                    got_p == f32_probs,
                    "{what}: u8 and f32 probabilities differ"
                );
            }
            // Twice in a row (the slots' events and buffers reused; `run_u8` copies the logits
            // alone back), and a short request after it.
            let again = model.run_u8(&bytes, images).expect("runs again");
            assert!(again == got_l, "{what}: a second pipelined call differs");
            let first = model
                .run_u8(&bytes[..per * INPUT_LEN], per)
                .expect("runs one chunk");
            assert!(
                first == got_l[..per * NUM_CLASSES],
                "{what}: the first chunk alone differs"
            );
        }
        set(Staging::default());
    }
}

/// `Model::run_u8_parts` (what the server's batcher sends: each request's bytes copied into a pinned
/// buffer of the caller's before the executor is locked) gives the bits of `run_u8` on the joined
/// bytes, for parts of uneven sizes, with several callers at once, and for a batch over `max_batch`
/// (joined, pipelined); so does the executor's own gathered upload (`Images::U8Parts`) under several
/// staging settings (parts crossing the copy's part and stripe boundaries).
#[test]
fn u8_parts_give_the_bits_of_the_joined_bytes() {
    use engine::cuda::io::{Images, Staging};
    use engine::cuda::GpuModel;
    let Some(gpu) = gpu(32) else { return };
    let images = 29;
    let (bytes, _) = image_bytes(43, images);
    for (spec, net) in [
        (&VARIANTS[0], tiny_net(8)),
        (&VARIANTS[3], tiny_int8_net(13, INT8_MIDS)),
    ] {
        let model = gpu.load_net(spec, &net).expect("loads");
        let set = |s: Staging| model.lock().expect("lock").io().staging = s;
        let want = GpuModel::run_u8(&model, &bytes, images).expect("runs joined");
        // Requests of 1, 3, 1, 7, 2, … images, as a batcher gathers them.
        let mut parts = Vec::new();
        let (mut at, mut k) = (0, 0);
        while at < images {
            let n = [1, 3, 1, 7, 2, 5][k % 6].min(images - at);
            parts.push(&bytes[at * INPUT_LEN..(at + n) * INPUT_LEN]);
            at += n;
            k += 1;
        }
        for (threads, part_bytes) in [(1, 0), (8, 0), (3, 200_000), (16, 100_003)] {
            set(Staging {
                threads,
                chunk: 0,
                part_bytes,
            });
            let got = model.run_u8_parts(&parts, images).expect("runs parts");
            let gathered = model
                .lock()
                .expect("lock")
                .run_logits(Images::U8Parts(&parts), images)
                .expect("runs gathered");
            let what = format!(
                "{} (threads {threads}, part bytes {part_bytes})",
                model.path()
            );
            assert!(
                got == want,
                "{what}: the parts' logits differ from the joined bytes'"
            );
            assert!(
                gathered == want,
                "{what}: the gathered upload's logits differ from the joined bytes'"
            );
            let one = model
                .run_u8_parts(&[&bytes[..INPUT_LEN]], 1)
                .expect("runs one part");
            let alone = GpuModel::run_u8(&model, &bytes[..INPUT_LEN], 1).expect("runs one");
            assert!(one == alone, "{what}: one part differs");
        }
        set(Staging::default());
        // Two callers at once (a served variant's two batcher workers): each fills a staging buffer
        // of its own while the other's batch runs; every answer is the batch's own.
        let few: Vec<Vec<f32>> = (1..=5)
            .map(|n| GpuModel::run_u8(&model, &bytes[..n * INPUT_LEN], n).expect("runs a few"))
            .collect();
        std::thread::scope(|scope| {
            for t in 0..3 {
                let (model, parts, want, bytes, few) = (&model, &parts, &want, &bytes, &few);
                scope.spawn(move || {
                    for i in 0..6 {
                        if (t + i) % 2 == 0 {
                            let got = model.run_u8_parts(parts, images).expect("runs parts");
                            assert!(got == *want, "thread {t} call {i}: logits differ");
                        } else {
                            let n = 1 + (t + i) % 5;
                            let got = model
                                .run_u8_parts(&[&bytes[..n * INPUT_LEN]], n)
                                .expect("runs a few");
                            assert!(
                                got == few[n - 1],
                                "thread {t} call {i}: {n} images differ from the same call alone"
                            );
                        }
                    }
                });
            }
        });
        // More than max_batch images in parts: joined and pipelined, the same bits as the joined call.
        let (big, _) = image_bytes(44, 40);
        let want = GpuModel::run_u8(&model, &big, 40).expect("runs 40 joined");
        let parts: Vec<&[u8]> = big.chunks(10 * INPUT_LEN).collect();
        let got = model.run_u8_parts(&parts, 40).expect("runs 40 in parts");
        assert!(got == want, "{}: 40 images in parts differ", model.path());
        // A part that is not whole images, or a wrong count, is a shape error.
        assert!(model
            .run_u8_parts(&[&bytes[..INPUT_LEN + 1], &bytes[..INPUT_LEN - 1]], 2)
            .is_err());
        assert!(model.run_u8_parts(&[&bytes[..INPUT_LEN]], 2).is_err());
    }
}
