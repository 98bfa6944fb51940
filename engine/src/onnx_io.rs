//! Reading and writing [`ResNet`] as a standard ONNX file (opset 17) that ONNX Runtime and Netron open.
//!
//! Written graphs: `input [N,3,224,224]` → `Sub` (exact input offset) → `Conv`/`Relu` stem → `MaxPool`
//! → bottleneck blocks (`Conv`, `Relu`, `Add`) → `GlobalAveragePool` → `Flatten` → `Gemm` → `logits
//! [N,1000]`. With a [`QuantTable`] the graph is in QDQ form: int8 weights (per output channel,
//! symmetric) behind `DequantizeLinear`, int32 biases, and a `QuantizeLinear`/`DequantizeLinear` pair on
//! every quantized activation, which ONNX Runtime turns into integer kernels.
//!
//! The reader understands the graphs this module writes (it finds layers by node name), which is what the
//! GPU engine and the variant builders need.

use std::collections::HashMap;
use std::path::Path;

use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::error::{Error, IoContext, Result};
use crate::model::{
    tensor_names as tn, ActQuant, Bottleneck, Conv, Linear, QuantTable, ResNet, WeightQuant,
};

/// ONNX opset the files use.
pub const OPSET: i64 = 17;

/// Options for [`to_onnx`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Intermediate tensors (see [`crate::model::tensor_names`]) to expose as extra graph outputs, e.g.
    /// for calibration.
    pub extra_outputs: Vec<String>,
    /// Free text stored in the model's `doc_string` (what was done to the model).
    pub doc: String,
    /// Key/value pairs stored in `metadata_props` (shown by Netron).
    pub metadata: Vec<(String, String)>,
}

/// Serializes the network to an ONNX model.
pub fn to_onnx(model: &ResNet, opts: &WriteOptions) -> ModelProto {
    let mut g = GraphWriter {
        quant: model.quant.as_ref(),
        graph: GraphProto::new(),
    };
    g.graph.name = "resnet50".into();

    let offset = g.init_f32("input_offset", &[1, 3, 1, 1], &model.input_offset);
    let stem_in = g.node(
        "Sub",
        "stem_in.sub",
        &[tn::INPUT, &offset],
        tn::STEM_IN,
        vec![],
    );
    let stem_in = g.qdq(&stem_in);
    let x = g.conv(&model.stem, &stem_in);
    let pool = g.node(
        "MaxPool",
        "maxpool",
        &[&x],
        tn::POOL,
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let mut x = g.qdq(&pool);
    for block in model.blocks() {
        let h = g.conv(&block.conv1, &x);
        let h = g.conv(&block.conv2, &h);
        let h = g.conv(&block.conv3, &h);
        let short = match &block.downsample {
            Some(d) => g.conv(d, &x),
            None => x.clone(),
        };
        let sum = g.node(
            "Add",
            &format!("{}.add", block.name),
            &[&h, &short],
            &tn::block_add(&block.name),
            vec![],
        );
        if let Some(q) = g.relu_by_quantization(&block.name) {
            // Quantizing the sum with the zero point at the bottom of the integer range clips exactly what
            // the ReLU removes: Add → Q → DQ, which ONNX Runtime runs as one QLinearAdd.
            x = g.qdq_with(&sum, q);
        } else {
            let sum = g.qdq(&sum);
            let out = g.node(
                "Relu",
                &format!("{}.relu", block.name),
                &[&sum],
                &tn::block_out(&block.name),
                vec![],
            );
            x = g.qdq(&out);
        }
    }
    let pooled = g.node("GlobalAveragePool", "avgpool", &[&x], "avgpool", vec![]);
    let flat = g.node(
        "Flatten",
        "flatten",
        &[&pooled],
        tn::GAP,
        vec![attr_int("axis", 1)],
    );
    let flat = g.qdq(&flat);
    let fc = &model.fc;
    let w = g.weight(
        &fc.name,
        &[fc.out_features as i64, fc.in_features as i64],
        &fc.weight,
        fc.out_features,
    );
    let b = g.bias(&fc.name, &fc.bias, &flat);
    g.node(
        "Gemm",
        &fc.name,
        &[&flat, &w, &b],
        tn::LOGITS,
        vec![attr_int("transB", 1)],
    );

    g.graph.input.push(value_info(
        tn::INPUT,
        Some(&[-1, 3, crate::INPUT_SIZE as i64, crate::INPUT_SIZE as i64]),
    ));
    g.graph.output.push(value_info(
        tn::LOGITS,
        Some(&[-1, crate::NUM_CLASSES as i64]),
    ));
    for name in &opts.extra_outputs {
        g.graph.output.push(value_info(name, None));
    }

    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.producer_name = "inferscope".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    m.doc_string = opts.doc.clone();
    let mut opset = OperatorSetIdProto::new();
    opset.version = OPSET;
    m.opset_import.push(opset);
    for (k, v) in &opts.metadata {
        let mut e = StringStringEntryProto::new();
        e.key = k.clone();
        e.value = v.clone();
        m.metadata_props.push(e);
    }
    m.graph = Some(g.graph).into();
    m
}

/// Writes the network to `path` (atomically: a temporary file renamed into place).
pub fn save(model: &ResNet, path: &Path, opts: &WriteOptions) -> Result<()> {
    let bytes = to_onnx(model, opts)
        .write_to_bytes()
        .map_err(|e| Error::InvalidModel {
            path: path.into(),
            reason: e.to_string(),
        })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("onnx.tmp");
    std::fs::write(&tmp, bytes).context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Reads a file written by [`save`].
pub fn load(path: &Path) -> Result<ResNet> {
    if !path.exists() {
        return Err(Error::MissingModel(path.into()));
    }
    let bytes = std::fs::read(path).context(|| format!("reading {}", path.display()))?;
    let proto = ModelProto::parse_from_bytes(&bytes).map_err(|e| Error::InvalidModel {
        path: path.into(),
        reason: e.to_string(),
    })?;
    from_onnx(&proto).map_err(|reason| Error::InvalidModel {
        path: path.into(),
        reason,
    })
}

struct GraphWriter<'a> {
    quant: Option<&'a QuantTable>,
    graph: GraphProto,
}

impl GraphWriter<'_> {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<AttributeProto>,
    ) -> String {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = name.into();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.to_string()];
        n.attribute = attrs;
        self.graph.node.push(n);
        output.to_string()
    }

    fn init(&mut self, name: &str, dims: &[i64], dtype: DataType, raw: Vec<u8>) -> String {
        let mut t = TensorProto::new();
        t.name = name.into();
        t.dims = dims.to_vec();
        t.data_type = dtype as i32;
        t.raw_data = raw;
        self.graph.initializer.push(t);
        name.to_string()
    }

    fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        self.init(
            name,
            dims,
            DataType::FLOAT,
            data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// A Q/DQ pair after `tensor` if the table quantizes it; returns the name consumers should read.
    fn qdq(&mut self, tensor: &str) -> String {
        let Some(q) = self.quant.and_then(|t| t.acts.get(tensor)).copied() else {
            return tensor.to_string();
        };
        self.qdq_with(tensor, q)
    }

    /// The quantization that makes a block's ReLU redundant, if the table gives the block's sum and/or
    /// output one whose zero point is the lowest integer (identical ones when it gives both).
    fn relu_by_quantization(&self, block: &str) -> Option<ActQuant> {
        let t = self.quant?;
        let q = match (
            t.acts.get(&tn::block_add(block)),
            t.acts.get(&tn::block_out(block)),
        ) {
            (Some(a), Some(b)) if a == b => *a,
            (Some(a), None) | (None, Some(a)) => *a,
            _ => return None,
        };
        let at_min = if q.signed {
            q.zero_point == -128
        } else {
            q.zero_point == 0
        };
        at_min.then_some(q)
    }

    /// A Q/DQ pair with the parameters `q` after `tensor`.
    fn qdq_with(&mut self, tensor: &str, q: ActQuant) -> String {
        let scale = self.init_f32(&format!("{tensor}.scale"), &[], &[q.scale]);
        let zp = if q.signed {
            self.init(
                &format!("{tensor}.zero_point"),
                &[],
                DataType::INT8,
                vec![q.zero_point as i8 as u8],
            )
        } else {
            self.init(
                &format!("{tensor}.zero_point"),
                &[],
                DataType::UINT8,
                vec![q.zero_point as u8],
            )
        };
        let quantized = self.node(
            "QuantizeLinear",
            &format!("{tensor}.quantize"),
            &[tensor, &scale, &zp],
            &format!("{tensor}.q"),
            vec![],
        );
        self.node(
            "DequantizeLinear",
            &format!("{tensor}.dequantize"),
            &[&quantized, &scale, &zp],
            &format!("{tensor}.dq"),
            vec![],
        )
    }

    fn act_scale(&self, tensor: &str) -> Option<f32> {
        let base = tensor.strip_suffix(".dq").unwrap_or(tensor);
        self.quant.and_then(|t| t.acts.get(base)).map(|a| a.scale)
    }

    /// A weight initializer, int8 behind DequantizeLinear when the layer is quantized.
    fn weight(&mut self, layer: &str, dims: &[i64], w: &[f32], out_ch: usize) -> String {
        let Some(wq) = self.quant.and_then(|t| t.weights.get(layer)) else {
            return self.init_f32(&format!("{layer}.weight"), dims, w);
        };
        let per = w.len() / out_ch;
        let lim = f32::from((1i16 << (wq.bits - 1)) as i8 - 1);
        let q: Vec<u8> = w
            .iter()
            .enumerate()
            .map(|(i, &v)| (v / wq.scales[i / per]).round().clamp(-lim, lim) as i8 as u8)
            .collect();
        let scales = wq.scales.clone();
        let qn = self.init(&format!("{layer}.weight_q"), dims, DataType::INT8, q);
        let sn = self.init_f32(&format!("{layer}.weight_scale"), &[out_ch as i64], &scales);
        let zn = self.init(
            &format!("{layer}.weight_zero_point"),
            &[out_ch as i64],
            DataType::INT8,
            vec![0; out_ch],
        );
        self.node(
            "DequantizeLinear",
            &format!("{layer}.weight_dequantize"),
            &[&qn, &sn, &zn],
            &format!("{layer}.weight"),
            vec![attr_int("axis", 0)],
        )
    }

    /// A bias initializer: int32 with scale `input_scale × weight_scale[o]` in a quantized layer.
    fn bias(&mut self, layer: &str, b: &[f32], input: &str) -> String {
        let wq = self.quant.and_then(|t| t.weights.get(layer));
        let (Some(wq), Some(in_scale)) = (wq, self.act_scale(input)) else {
            return self.init_f32(&format!("{layer}.bias"), &[b.len() as i64], b);
        };
        let scales: Vec<f32> = wq.scales.iter().map(|s| s * in_scale).collect();
        let q: Vec<u8> = b
            .iter()
            .zip(&scales)
            .flat_map(|(&v, &s)| {
                ((f64::from(v) / f64::from(s))
                    .round()
                    .clamp(i32::MIN as f64, i32::MAX as f64) as i32)
                    .to_le_bytes()
            })
            .collect();
        let n = b.len() as i64;
        let qn = self.init(&format!("{layer}.bias_q"), &[n], DataType::INT32, q);
        let sn = self.init_f32(&format!("{layer}.bias_scale"), &[n], &scales);
        let zn = self.init(
            &format!("{layer}.bias_zero_point"),
            &[n],
            DataType::INT32,
            vec![0; 4 * b.len()],
        );
        self.node(
            "DequantizeLinear",
            &format!("{layer}.bias_dequantize"),
            &[&qn, &sn, &zn],
            &format!("{layer}.bias"),
            vec![attr_int("axis", 0)],
        )
    }

    fn conv(&mut self, c: &Conv, input: &str) -> String {
        let k = c.kernel as i64;
        let w = self.weight(
            &c.name,
            &[c.out_ch as i64, c.in_ch as i64, k, k],
            &c.weight,
            c.out_ch,
        );
        let b = self.bias(&c.name, &c.bias, input);
        let s = c.stride as i64;
        let p = c.pad as i64;
        let attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[s, s]),
            attr_ints("pads", &[p, p, p, p]),
            attr_ints("dilations", &[1, 1]),
            attr_int("group", 1),
        ];
        let out = tn::conv_out(&c.name);
        let y = if c.relu {
            let pre = self.node(
                "Conv",
                &c.name,
                &[input, &w, &b],
                &format!("{}.conv", c.name),
                attrs,
            );
            self.node("Relu", &format!("{}.relu", c.name), &[&pre], &out, vec![])
        } else {
            self.node("Conv", &c.name, &[input, &w, &b], &out, attrs)
        };
        self.qdq(&y)
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn value_info(name: &str, dims: Option<&[i64]>) -> ValueInfoProto {
    let mut tt = type_proto::Tensor::new();
    tt.elem_type = DataType::FLOAT as i32;
    if let Some(dims) = dims {
        let mut shape = TensorShapeProto::new();
        for &d in dims {
            let mut dim = tensor_shape_proto::Dimension::new();
            if d < 0 {
                dim.set_dim_param("N".into());
            } else {
                dim.set_dim_value(d);
            }
            shape.dim.push(dim);
        }
        tt.shape = Some(shape).into();
    }
    let mut tp = TypeProto::new();
    tp.set_tensor_type(tt);
    let mut vi = ValueInfoProto::new();
    vi.name = name.into();
    vi.type_ = Some(tp).into();
    vi
}

// ---- reading ----

/// Decodes an initializer's values as f64 (raw_data or typed fields).
fn tensor_values(t: &TensorProto) -> Result<Vec<f64>, String> {
    let dt = t.data_type;
    let raw = &t.raw_data;
    let v: Vec<f64> = if dt == DataType::FLOAT as i32 {
        if raw.is_empty() {
            t.float_data.iter().map(|&x| f64::from(x)).collect()
        } else {
            raw.chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
    } else if dt == DataType::INT8 as i32 {
        if raw.is_empty() {
            t.int32_data.iter().map(|&x| f64::from(x)).collect()
        } else {
            raw.iter().map(|&b| f64::from(b as i8)).collect()
        }
    } else if dt == DataType::UINT8 as i32 {
        if raw.is_empty() {
            t.int32_data.iter().map(|&x| f64::from(x)).collect()
        } else {
            raw.iter().map(|&b| f64::from(b)).collect()
        }
    } else if dt == DataType::INT32 as i32 {
        if raw.is_empty() {
            t.int32_data.iter().map(|&x| f64::from(x)).collect()
        } else {
            raw.chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
    } else {
        return Err(format!(
            "initializer {} has unsupported data type {dt}",
            t.name
        ));
    };
    let expect: i64 = t.dims.iter().product();
    if v.len() as i64 != expect {
        return Err(format!(
            "initializer {} has {} values for dims {:?}",
            t.name,
            v.len(),
            t.dims
        ));
    }
    Ok(v)
}

/// A dequantized constant's per-channel scales and the magnitude of its integer range.
type Dequantized = (Vec<f32>, f64);

struct GraphReader<'a> {
    inits: HashMap<&'a str, &'a TensorProto>,
    producers: HashMap<&'a str, &'a NodeProto>,
    consumers: HashMap<&'a str, Vec<&'a NodeProto>>,
    by_name: HashMap<&'a str, &'a NodeProto>,
    quant: QuantTable,
}

impl<'a> GraphReader<'a> {
    fn new(g: &'a GraphProto) -> Self {
        let mut r = GraphReader {
            inits: g.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
            producers: HashMap::new(),
            consumers: HashMap::new(),
            by_name: HashMap::new(),
            quant: QuantTable::default(),
        };
        for n in &g.node {
            for o in &n.output {
                r.producers.insert(o.as_str(), n);
            }
            for i in &n.input {
                r.consumers.entry(i.as_str()).or_default().push(n);
            }
            r.by_name.insert(n.name.as_str(), n);
        }
        r
    }

    fn init(&self, name: &str) -> Result<&'a TensorProto, String> {
        self.inits
            .get(name)
            .copied()
            .ok_or_else(|| format!("missing initializer {name}"))
    }

    /// Values of a constant input: a float initializer, or DequantizeLinear of an integer one.
    /// Returns the values and, for a dequantized constant, its per-channel scales and integer range.
    fn constant(&self, name: &str) -> Result<(Vec<f32>, Option<Dequantized>), String> {
        if let Some(t) = self.inits.get(name) {
            return Ok((
                tensor_values(t)?.into_iter().map(|v| v as f32).collect(),
                None,
            ));
        }
        let dq = self
            .producers
            .get(name)
            .filter(|n| n.op_type == "DequantizeLinear");
        let dq = dq.ok_or_else(|| {
            format!("{name} is neither an initializer nor a dequantized constant")
        })?;
        let q = tensor_values(self.init(&dq.input[0])?)?;
        let scales: Vec<f32> = tensor_values(self.init(&dq.input[1])?)?
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let zps = match dq.input.get(2) {
            Some(z) if !z.is_empty() => tensor_values(self.init(z)?)?,
            _ => vec![0.0; scales.len()],
        };
        if scales.is_empty() || q.len() % scales.len() != 0 {
            return Err(format!(
                "{name}: {} values for {} scales",
                q.len(),
                scales.len()
            ));
        }
        let per = q.len() / scales.len();
        let vals = q
            .iter()
            .enumerate()
            .map(|(i, &v)| ((v - zps[i / per]) * f64::from(scales[i / per])) as f32)
            .collect();
        let max_abs = q.iter().fold(0f64, |m, v| m.max(v.abs()));
        Ok((vals, Some((scales, max_abs))))
    }

    /// Records every activation Q/DQ pair of the graph in the quantization table.
    fn read_act_quant(&mut self, g: &GraphProto) -> Result<(), String> {
        for q in g.node.iter().filter(|n| n.op_type == "QuantizeLinear") {
            let scale = tensor_values(self.init(&q.input[1])?)?[0] as f32;
            let zpt = self.init(q.input.get(2).ok_or("QuantizeLinear without zero point")?)?;
            let zero_point = tensor_values(zpt)?[0] as i32;
            let signed = zpt.data_type == DataType::INT8 as i32;
            self.quant.acts.insert(
                q.input[0].clone(),
                ActQuant {
                    scale,
                    zero_point,
                    signed,
                },
            );
        }
        Ok(())
    }

    fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
        node.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
    }

    fn conv(&mut self, name: &str) -> Result<Conv, String> {
        let node = *self
            .by_name
            .get(name)
            .ok_or_else(|| format!("no Conv node named {name}"))?;
        if node.op_type != "Conv" {
            return Err(format!("node {name} is {} not Conv", node.op_type));
        }
        let wt = match self.inits.get(node.input[1].as_str()) {
            Some(t) => t.dims.clone(),
            None => {
                let dq = self
                    .producers
                    .get(node.input[1].as_str())
                    .ok_or("weight without producer")?;
                self.init(&dq.input[0])?.dims.clone()
            }
        };
        if wt.len() != 4 || wt[2] != wt[3] {
            return Err(format!("{name}: weight dims {wt:?} are not [O, I, k, k]"));
        }
        let (weight, wq) = self.constant(&node.input[1])?;
        if let Some((scales, max_abs)) = wq {
            let bits = if max_abs <= 63.0 { 7 } else { 8 };
            self.quant
                .weights
                .insert(name.to_string(), WeightQuant { scales, bits });
        }
        let bias = match node.input.get(2) {
            Some(b) if !b.is_empty() => self.constant(b)?.0,
            _ => vec![0.0; wt[0] as usize],
        };
        let strides = Self::ints(node, "strides").unwrap_or(vec![1, 1]);
        let pads = Self::ints(node, "pads").unwrap_or(vec![0; 4]);
        let out = &node.output[0];
        let relu = self
            .consumers
            .get(out.as_str())
            .is_some_and(|c| c.len() == 1 && c[0].op_type == "Relu")
            && !name.ends_with("conv3")
            && !name.ends_with("downsample");
        let conv = Conv {
            name: name.into(),
            out_ch: wt[0] as usize,
            in_ch: wt[1] as usize,
            kernel: wt[2] as usize,
            stride: strides[0] as usize,
            pad: pads[0] as usize,
            weight,
            bias,
            relu,
        };
        conv.validate()?;
        Ok(conv)
    }
}

/// The tensor the network's one `GlobalAveragePool` reads: its last feature map.
fn last_feature_map(g: &GraphProto) -> Result<String, String> {
    let pools: Vec<&NodeProto> = g
        .node
        .iter()
        .filter(|n| n.op_type == "GlobalAveragePool")
        .collect();
    let [pool] = pools[..] else {
        return Err(format!(
            "expected one GlobalAveragePool before the classifier, found {}",
            pools.len()
        ));
    };
    pool.input
        .first()
        .cloned()
        .ok_or_else(|| "GlobalAveragePool has no input".to_string())
}

/// Name of the feature-map output that [`expose_feature_map`] adds.
pub const FEATURE_MAP: &str = "inferscope.feature_map";

/// Prepares a model written by [`to_onnx`] to return its last feature map on request (class activation
/// maps, [`crate::cam`]): the input of its `GlobalAveragePool` (in the INT8 file, the dequantized
/// tensor) becomes an extra graph output named [`FEATURE_MAP`] (through an `Identity`, so the graph's
/// own tensors keep their names), and the FC weights (dequantized) are read. A caller that asks only
/// for `logits` gets the graph it had: ONNX Runtime computes that tensor anyway.
pub fn expose_feature_map(m: &mut ModelProto) -> Result<crate::cam::Classifier, String> {
    let g = m.graph.as_mut().ok_or("model has no graph")?;
    let features = last_feature_map(g)?;
    let classifier = {
        let r = GraphReader::new(g);
        let fc = *r.by_name.get("fc").ok_or("no Gemm node named fc")?;
        if fc.op_type != "Gemm" || fc.input.len() < 3 {
            return Err("node fc is not a Gemm with a bias".into());
        }
        let (weight, _) = r.constant(&fc.input[1])?;
        let (bias, _) = r.constant(&fc.input[2])?;
        let classes = bias.len();
        if classes == 0 || weight.len() % classes != 0 {
            return Err("fc weight/bias sizes disagree".into());
        }
        crate::cam::Classifier::new(classes, weight.len() / classes, weight, bias)
            .map_err(|e| e.to_string())?
    };
    if !g.output.iter().any(|o| o.name == FEATURE_MAP) {
        let mut n = NodeProto::new();
        n.op_type = "Identity".into();
        n.name = FEATURE_MAP.into();
        n.input.push(features);
        n.output.push(FEATURE_MAP.into());
        g.node.push(n);
        g.output.push(value_info(FEATURE_MAP, None));
    }
    Ok(classifier)
}

/// Prepares a model written by [`to_onnx`] to return the activations that per-layer drift compares
/// ([`crate::drift`]): the stem's output after max pooling and every block's output, each as an extra
/// graph output `inferscope.trace.<label>` (through an `Identity`). Returns the labels in graph order
/// ([`crate::drift::STEM`], then the block names).
///
/// The points are found from the graph's structure, so they are the tensors the file really computes
/// (in the INT8 file, the dequantized ones): a block's input is its `<block>.conv1`'s first input (the
/// previous block's output, the max pool's for the first), and the last block's output is the
/// `GlobalAveragePool`'s input. Extra outputs keep ONNX Runtime from fusing some of the nodes that
/// produce them, so this is for a session of its own, not the one that is timed.
pub fn expose_block_outputs(m: &mut ModelProto) -> Result<Vec<String>, String> {
    use crate::drift::{STEM, TRACE_PREFIX};
    let g = m.graph.as_mut().ok_or("model has no graph")?;
    // (block name, its input tensor), in graph order.
    let blocks: Vec<(String, String)> = g
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .filter_map(|n| {
            let block = n.name.strip_suffix(".conv1")?;
            Some((block.to_string(), n.input.first()?.clone()))
        })
        .collect();
    if blocks.is_empty() {
        return Err(
            "no convolution named <block>.conv1: not a ResNet written by inferscope".into(),
        );
    }
    let last = last_feature_map(g)?;
    // The stem's output is the first block's input; block i's output is block i+1's input.
    let mut points = vec![(STEM.to_string(), blocks[0].1.clone())];
    for (i, (name, _)) in blocks.iter().enumerate() {
        let output = blocks.get(i + 1).map_or(&last, |next| &next.1);
        points.push((name.clone(), output.clone()));
    }
    for (label, tensor) in &points {
        let name = format!("{TRACE_PREFIX}{label}");
        if g.output.iter().any(|o| o.name == name) {
            continue;
        }
        let mut n = NodeProto::new();
        n.op_type = "Identity".into();
        n.name = name.clone();
        n.input.push(tensor.clone());
        n.output.push(name.clone());
        g.node.push(n);
        g.output.push(value_info(&name, None));
    }
    Ok(points.into_iter().map(|(label, _)| label).collect())
}

/// Rebuilds the network from a model written by [`to_onnx`].
pub fn from_onnx(m: &ModelProto) -> Result<ResNet, String> {
    let g = m.graph.as_ref().ok_or("model has no graph")?;
    let mut r = GraphReader::new(g);
    r.read_act_quant(g)?;
    let offset = tensor_values(r.init("input_offset")?)?;
    if offset.len() != 3 {
        return Err("input_offset must have 3 values".into());
    }
    let stem = r.conv("conv1")?;
    let mut stages = Vec::new();
    for s in 1.. {
        let mut blocks = Vec::new();
        for b in 0.. {
            let name = format!("layer{s}.{b}");
            if !r.by_name.contains_key(format!("{name}.conv1").as_str()) {
                break;
            }
            let downsample = if r
                .by_name
                .contains_key(format!("{name}.downsample").as_str())
            {
                Some(r.conv(&format!("{name}.downsample"))?)
            } else {
                None
            };
            blocks.push(Bottleneck {
                conv1: r.conv(&format!("{name}.conv1"))?,
                conv2: r.conv(&format!("{name}.conv2"))?,
                conv3: r.conv(&format!("{name}.conv3"))?,
                downsample,
                name,
            });
        }
        if blocks.is_empty() {
            break;
        }
        stages.push(blocks);
    }
    let fc_node = *r.by_name.get("fc").ok_or("no Gemm node named fc")?;
    let (weight, wq) = r.constant(&fc_node.input[1])?;
    let (bias, _) = r.constant(&fc_node.input[2])?;
    if let Some((scales, max_abs)) = wq {
        r.quant.weights.insert(
            "fc".into(),
            WeightQuant {
                scales,
                bits: if max_abs <= 63.0 { 7 } else { 8 },
            },
        );
    }
    let out_features = bias.len();
    if out_features == 0 || weight.len() % out_features != 0 {
        return Err("fc weight/bias sizes disagree".into());
    }
    let fc = Linear {
        name: "fc".into(),
        out_features,
        in_features: weight.len() / out_features,
        weight,
        bias,
    };
    let quant = if r.quant == QuantTable::default() {
        None
    } else {
        Some(r.quant)
    };
    let net = ResNet {
        input_offset: [offset[0] as f32, offset[1] as f32, offset[2] as f32],
        stem,
        stages,
        fc,
        quant,
    };
    net.validate()?;
    Ok(net)
}
