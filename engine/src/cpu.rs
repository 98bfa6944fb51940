//! The embedded CPU engine: ONNX Runtime through the `ort` crate, libonnxruntime loaded at run time from
//! the pinned PyPI `onnxruntime` wheel that `./x setup` installs (`ORT_DYLIB_PATH`, or the path the
//! application gives [`set_default_dylib`]: the engine knows no install layout of its own).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::{builder::GraphOptimizationLevel, OutputSelector, RunOptions, Session};
use ort::value::TensorRef;

use crate::backend::{check_input, Backend, BackendKind, BackendOptions, Model, ModelInfo, LOCAL};
use crate::cam::{Classifier, Explained, FeatureMap};
use crate::error::{Error, IoContext, Result};
use crate::onnx_io;
use crate::variants::{Precision, VariantSpec};
use onnx_protobuf::{Message, ModelProto};

static DEFAULT_DYLIB: OnceLock<PathBuf> = OnceLock::new();

static INIT: OnceLock<std::result::Result<(PathBuf, Environment), String>> = OnceLock::new();

/// Where to load libonnxruntime from when `ORT_DYLIB_PATH` is not set: the application says where it
/// installs it (the `inferscope` binary: `./x`'s `.tools/ort/...`). Call before the first session;
/// later calls change nothing.
pub fn set_default_dylib(path: impl Into<PathBuf>) {
    let _ = DEFAULT_DYLIB.set(path.into());
}

/// Loads libonnxruntime once per process (`ORT_DYLIB_PATH`, else the path given to
/// [`set_default_dylib`]) and returns the process's ONNX Runtime environment.
pub fn init_runtime() -> Result<Environment> {
    INIT.get_or_init(|| {
        let path = std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .or_else(|| DEFAULT_DYLIB.get().cloned())
            .ok_or_else(|| {
                "ORT_DYLIB_PATH is not set (the path of libonnxruntime.so; `./x` sets it)"
                    .to_string()
            })?;
        if !path.exists() {
            return Err(format!(
                "libonnxruntime not found at {} (run `./x setup`, or set ORT_DYLIB_PATH)",
                path.display()
            ));
        }
        let builder =
            ort::init_from(&path).map_err(|e| format!("loading {}: {e}", path.display()))?;
        let env = builder
            .with_name("inferscope")
            .build()
            .map_err(|e| format!("ONNX Runtime environment: {e}"))?;
        Ok((path, env))
    })
    .clone()
    .map(|(_, env)| env)
    .map_err(|reason| Error::BackendUnavailable {
        backend: "cpu".into(),
        reason,
    })
}

fn rt(e: impl std::fmt::Display) -> Error {
    Error::Runtime(e.to_string())
}

/// An ONNX Runtime session with inferscope's settings, usable from many threads.
pub struct OrtSession {
    session: Mutex<Session>,
}

impl OrtSession {
    /// Opens `path` with full graph optimization and `intra_threads` threads per operator, with ONNX
    /// Runtime's default settings otherwise (as python onnxruntime has them: the benchmarks compare).
    pub fn open(path: &Path, intra_threads: usize) -> Result<Self> {
        Self::open_with(path, intra_threads, true)
    }

    /// As [`open`](Self::open); `spinning: false` makes idle intra-op threads sleep instead of
    /// busy-waiting for the next operator. A server with several models on a few cores wants that: a
    /// model that just answered would otherwise keep the cores busy for a while, slowing the others
    /// (and, co-hosted, the HTTP stack and a browser on the same machine).
    pub fn open_with(path: &Path, intra_threads: usize, spinning: bool) -> Result<Self> {
        if !path.exists() {
            return Err(Error::MissingModel(path.into()));
        }
        let session = Self::builder(intra_threads, spinning)?.commit_from_file(path);
        Self::committed(session, path)
    }

    /// As [`open_with`](Self::open_with), from the bytes of an ONNX model (`path` names it in errors).
    pub fn open_bytes(
        bytes: &[u8],
        path: &Path,
        intra_threads: usize,
        spinning: bool,
    ) -> Result<Self> {
        let session = Self::builder(intra_threads, spinning)?.commit_from_memory(bytes);
        Self::committed(session, path)
    }

    /// The session ONNX Runtime committed, or why the file at `path` is not a model it can run.
    fn committed(session: ort::Result<ort::session::Session>, path: &Path) -> Result<Self> {
        let session = session.map_err(|e| Error::InvalidModel {
            path: path.into(),
            reason: e.to_string(),
        })?;
        Ok(OrtSession {
            session: Mutex::new(session),
        })
    }

    fn builder(
        intra_threads: usize,
        spinning: bool,
    ) -> Result<ort::session::builder::SessionBuilder> {
        let env = init_runtime()?;
        Session::builder(&env)
            .map_err(rt)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(rt)?
            .with_intra_threads(intra_threads.max(1))
            .map_err(rt)?
            .with_inter_threads(1)
            .map_err(rt)?
            .with_intra_op_spinning(spinning)
            .map_err(rt)
    }

    /// Runs a `[batch, 3, 224, 224]` input and returns the named float outputs (shape, values); the
    /// model's other outputs are not fetched.
    pub fn run_named(
        &self,
        input: &[f32],
        batch: usize,
        outputs: &[&str],
    ) -> Result<Vec<(Vec<i64>, Vec<f32>)>> {
        check_input(input, batch)?;
        let shape = [
            batch as i64,
            3,
            crate::INPUT_SIZE as i64,
            crate::INPUT_SIZE as i64,
        ];
        let tensor = TensorRef::from_array_view((shape, input)).map_err(rt)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| rt("session lock poisoned"))?;
        let selected = outputs
            .iter()
            .fold(OutputSelector::no_default(), |sel, name| sel.with(*name));
        let options = RunOptions::new().map_err(rt)?.with_outputs(selected);
        let out = session
            .run_with_options(ort::inputs!["input" => tensor], &options)
            .map_err(rt)?;
        outputs
            .iter()
            .map(|name| {
                let v = out
                    .get(*name)
                    .ok_or_else(|| rt(format!("model has no output {name}")))?;
                let (shape, data) = v.try_extract_tensor::<f32>().map_err(rt)?;
                Ok((shape.to_vec(), data.to_vec()))
            })
            .collect()
    }
}

/// The CPU backend.
pub struct CpuBackend {
    intra_threads: usize,
}

impl CpuBackend {
    pub fn new(opts: &BackendOptions) -> Result<Self> {
        init_runtime()?;
        Ok(CpuBackend {
            intra_threads: opts.intra_threads,
        })
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn load(&self, spec: &VariantSpec, path: &Path) -> Result<Arc<dyn Model>> {
        // Several variants share the cores: idle threads must not spin.
        let (session, classifier) = open_explainable(path, self.intra_threads)?;
        Ok(Arc::new(CpuModel {
            spec: *spec,
            session,
            classifier,
            file: path.to_path_buf(),
            intra_threads: self.intra_threads,
            traced: OnceLock::new(),
            info: ModelInfo {
                backend: BackendKind::Cpu,
                device: format!("CPU, {} intra-op threads", self.intra_threads.max(1)),
                path: match spec.precision {
                    Precision::Fp32 => "ONNX Runtime CPU fp32".into(),
                    // ONNX Runtime's graph optimizations (level All, as the session is opened) fuse
                    // the file's QuantizeLinear/DequantizeLinear pairs around each Conv into
                    // QLinearConv: the convolutions run in integer arithmetic.
                    Precision::Int8 => "ONNX Runtime CPU int8 QLinearConv (from QDQ)".into(),
                },
                location: LOCAL.into(),
            },
        }))
    }
}

/// Opens a variant's file with its last feature map as an extra output ([`onnx_io::expose_feature_map`])
/// and its FC weights, or, for a file that is not a ResNet of ours, as it is, with the reason why it
/// cannot explain.
fn open_explainable(
    path: &Path,
    intra_threads: usize,
) -> Result<(OrtSession, std::result::Result<Arc<Classifier>, String>)> {
    if !path.exists() {
        return Err(Error::MissingModel(path.into()));
    }
    let bytes = std::fs::read(path).context(|| format!("reading {}", path.display()))?;
    let mut proto = ModelProto::parse_from_bytes(&bytes).map_err(|e| Error::InvalidModel {
        path: path.into(),
        reason: e.to_string(),
    })?;
    match onnx_io::expose_feature_map(&mut proto) {
        Ok(classifier) => {
            drop(bytes);
            let bytes = proto.write_to_bytes().map_err(rt)?;
            drop(proto);
            let session = OrtSession::open_bytes(&bytes, path, intra_threads, false)?;
            Ok((session, Ok(Arc::new(classifier))))
        }
        Err(why) => {
            tracing::info!(path = %path.display(), %why, "no class activation maps for this file");
            let session = OrtSession::open_bytes(&bytes, path, intra_threads, false)?;
            Ok((
                session,
                Err(format!(
                    "its file has no recognizable last feature map: {why}"
                )),
            ))
        }
    }
}

/// A variant on ONNX Runtime.
pub struct CpuModel {
    spec: VariantSpec,
    session: OrtSession,
    /// The FC weights for class activation maps, or why this file cannot give them.
    classifier: std::result::Result<Arc<Classifier>, String>,
    /// The file and thread count, for the traced session.
    file: PathBuf,
    intra_threads: usize,
    /// A second session of the file with the drift points as extra outputs
    /// ([`onnx_io::expose_block_outputs`]) and their labels, opened on the first
    /// [`Model::run_traced`]: extra outputs change which nodes ONNX Runtime fuses, so the served
    /// session never carries them. Or why the file cannot be traced.
    traced: OnceLock<std::result::Result<(OrtSession, Vec<String>), String>>,
    info: ModelInfo,
}

impl CpuModel {
    fn traced_session(&self) -> std::result::Result<&(OrtSession, Vec<String>), String> {
        self.traced
            .get_or_init(|| {
                let bytes = std::fs::read(&self.file)
                    .map_err(|e| format!("reading {}: {e}", self.file.display()))?;
                let mut proto = ModelProto::parse_from_bytes(&bytes).map_err(|e| e.to_string())?;
                drop(bytes);
                let labels = onnx_io::expose_block_outputs(&mut proto)
                    .map_err(|why| format!("its file has no recognizable blocks: {why}"))?;
                let bytes = proto.write_to_bytes().map_err(|e| e.to_string())?;
                drop(proto);
                let session = OrtSession::open_bytes(&bytes, &self.file, self.intra_threads, false)
                    .map_err(|e| e.to_string())?;
                tracing::info!(
                    variant = self.spec.id,
                    points = labels.len(),
                    "traced session opened"
                );
                Ok((session, labels))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Model for CpuModel {
    fn spec(&self) -> &VariantSpec {
        &self.spec
    }

    fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        let mut out = self.session.run_named(input, batch, &["logits"])?;
        let (shape, logits) = out.pop().expect("one output requested");
        if shape != [batch as i64, crate::NUM_CLASSES as i64] {
            return Err(rt(format!("logits have shape {shape:?}")));
        }
        Ok(logits)
    }

    fn explains(&self) -> std::result::Result<(), String> {
        self.classifier.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn run_explained(&self, input: &[f32], batch: usize) -> Result<(Vec<f32>, Explained)> {
        let classifier = self.classifier.clone().map_err(Error::Unsupported)?;
        let mut out = self
            .session
            .run_named(input, batch, &["logits", onnx_io::FEATURE_MAP])?;
        let (map_shape, maps) = out.pop().expect("two outputs requested");
        let (shape, logits) = out.pop().expect("two outputs requested");
        if shape != [batch as i64, crate::NUM_CLASSES as i64] {
            return Err(rt(format!("logits have shape {shape:?}")));
        }
        let maps = FeatureMap::split_batch(&map_shape, &maps)?;
        if maps.len() != batch {
            return Err(rt(format!(
                "feature map of shape {map_shape:?} for {batch} images"
            )));
        }
        Ok((logits, Explained { maps, classifier }))
    }

    /// Answers from the file's structure, without opening the traced session: a file of ours has a
    /// classifier (checked at load) and blocks.
    fn traces(&self) -> std::result::Result<(), String> {
        match self.traced.get() {
            Some(opened) => opened.as_ref().map(|_| ()).map_err(Clone::clone),
            None => self.explains(),
        }
    }

    fn run_traced(&self, input: &[f32]) -> Result<(Vec<f32>, Vec<crate::drift::Activation>)> {
        let (session, labels) = self.traced_session().map_err(Error::Unsupported)?;
        let names: Vec<String> = std::iter::once("logits".to_string())
            .chain(
                labels
                    .iter()
                    .map(|l| format!("{}{l}", crate::drift::TRACE_PREFIX)),
            )
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut out = session.run_named(input, 1, &names)?.into_iter();
        let (shape, logits) = out.next().expect("logits requested");
        if shape != [1, crate::NUM_CLASSES as i64] {
            return Err(rt(format!("logits have shape {shape:?}")));
        }
        let acts = labels
            .iter()
            .zip(out)
            .map(|(label, (shape, data))| {
                let shape = shape
                    .iter()
                    .skip(1)
                    .map(|&d| usize::try_from(d).map_err(|_| rt(format!("shape {shape:?}"))))
                    .collect::<Result<Vec<usize>>>()?;
                Ok(crate::drift::Activation {
                    label: label.clone(),
                    shape,
                    data,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((logits, acts))
    }

    fn info(&self) -> ModelInfo {
        self.info.clone()
    }
}
