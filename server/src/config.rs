//! The serving configuration: which engine answers each variant, and how each variant batches.
//!
//! From flags (`--max-batch-size` ...: the default batching of every variant) and an optional TOML file
//! (`--config`, `INFERSCOPE_CONFIG`):
//!
//! ```toml
//! [batching]                       # every variant (overrides the flags' defaults)
//! max_batch_size = 8
//! max_queue_delay_us = 2000
//! queue_capacity = 64
//! timeout_ms = 30000
//! instances = 1
//!
//! fallback = "error"               # a variant placed on a missing local backend (no GPU) fails to
//!                                  # load; "cpu": it runs on the CPU instead (its card says so)
//!
//! [variants.resnet50-baseline]
//! backend = "cpu"                  # or "cuda": the models directory's ONNX file, on this machine
//! batching = { max_batch_size = 16 }   # overrides these fields for this variant only
//!
//! [variants.resnet50-sparse24]
//! backend = "cuda"
//! device = 0                       # GPU ordinal (default 0)
//! replicas = 2                     # one copy per GPU (0 and 1); requests go to the least busy one
//!
//! [variants.resnet50-int8]
//! backend = "kserve"               # any KServe v2 server: Triton, KServe, another inferscope
//! url = "http://10.0.0.7:8000"
//! model = "resnet50-int8"          # the remote's model name (default: the variant id)
//! timeout_ms = 5000                # per HTTP call (default 30000)
//! retries = 2                      # after connection failures and 429/502/503/504 (default 2)
//!
//! [variants.resnet50-pruned]
//! backend = "vertex"
//! project = "my-project"
//! region = "europe-west4"
//! endpoint = "1234567890"
//! method = "predict"               # or "rawPredict" (KServe v2 body, e.g. Triton on Vertex)
//! auth = "adc"                     # Application Default Credentials (default), or "none"
//! ```
//!
//! Variants the file does not name are served by `--backend` from the models directory. This module
//! only reads the file into a [`LoadPlan`]; the engine's loader ([`engine::loader`]) loads it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use app::ssr::{AppState, StateConfig};
use engine::backend::BackendKind;
use engine::batcher::BatchConfig;
use engine::loader::{self, Fallback, LoadPlan, Placement};
use engine::remote::{RemoteOptions, Target, VertexAuth};
use engine::variants::{VariantSpec, VARIANTS};
use serde::Deserialize;

/// Serving flags of `inferscope serve` (batching defaults and the variants file).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServingArgs {
    /// Variants config (TOML): the backend of each variant (cpu, cuda, kserve, vertex) and batching.
    #[arg(long = "config", env = "INFERSCOPE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Dynamic batching: most images in one model call [default: 8].
    #[arg(long, env = "INFERSCOPE_MAX_BATCH_SIZE")]
    pub max_batch_size: Option<usize>,
    /// Dynamic batching: longest a request waits for others to join its batch, µs [default: 2000].
    #[arg(long, env = "INFERSCOPE_MAX_QUEUE_DELAY_US")]
    pub max_queue_delay_us: Option<u64>,
    /// Requests that may wait per variant; more get 503 [default: 64].
    #[arg(long, env = "INFERSCOPE_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Deadline of a request, ms [default: 30000].
    #[arg(long, env = "INFERSCOPE_TIMEOUT_MS")]
    pub timeout_ms: Option<u64>,
    /// Model calls in flight per variant [default: 1 on the CPU, 2 per GPU executor with
    /// `--backend cuda`, 4 remote].
    #[arg(long, env = "INFERSCOPE_INSTANCES")]
    pub instances: Option<usize>,
    /// A variant placed on a local backend this machine lacks (no GPU): `error` (it fails to load,
    /// the default) or `cpu` (it runs on the CPU, and its card says so). Overrides the file's
    /// `fallback`.
    #[arg(long, env = "INFERSCOPE_FALLBACK")]
    pub fallback: Option<Fallback>,
    /// The `instances` default of `--backend cuda` (two model calls in flight per GPU executor,
    /// `serve --gpus` places several); `--instances` and the file override it.
    #[arg(skip)]
    pub default_instances: Option<usize>,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    #[serde(default)]
    batching: Option<toml::Table>,
    /// What a variant placed on a missing local backend does: `error` (default) or `cpu`.
    #[serde(default, deserialize_with = "fallback")]
    fallback: Option<Fallback>,
    #[serde(default)]
    variants: BTreeMap<String, VariantEntry>,
    /// The machines the page prices with (`[[machines]]`: name, kind, usd_per_hour, source, date,
    /// terms); the page's defaults when absent.
    #[serde(default)]
    machines: Option<Vec<app::cost::Machine>>,
    /// Where the variants the file does not place run, when the command line says more than
    /// `--backend` (`serve --gpus`); not a key of the file.
    #[serde(skip)]
    default_placement: Option<Placement>,
}

fn fallback<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Fallback>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

/// One `[variants.<id>]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantEntry {
    pub backend: BackendKind,
    #[serde(default)]
    pub batching: Option<toml::Table>,
    // local backends
    /// GPU ordinal (cuda; the first of `replicas` consecutive GPUs).
    pub device: Option<usize>,
    /// Copies of the model (one per GPU on cuda); each request goes to the least busy one.
    pub replicas: Option<usize>,
    // kserve
    pub url: Option<String>,
    pub model: Option<String>,
    pub input: Option<String>,
    pub output: Option<String>,
    // vertex
    pub project: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub method: Option<String>,
    pub auth: Option<VertexAuth>,
    /// Replaces `https://{region}-aiplatform.googleapis.com` (a dedicated endpoint's domain).
    pub api_base: Option<String>,
    // both remotes
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub backoff_ms: Option<u64>,
}

impl ServeFile {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: ServeFile = toml::from_str(text)?;
        if let Some(machines) = &file.machines {
            app::cost::check_machines(machines)
                .map_err(|e| anyhow::anyhow!("[[machines]]: {e}"))?;
        }
        for (id, entry) in &file.variants {
            let spec = engine::variants::by_id(id).with_context(|| {
                let ids: Vec<_> = VARIANTS.iter().map(|v| v.id).collect();
                format!("unknown variant `{id}` (variants: {})", ids.join(", "))
            })?;
            entry
                .placement(spec)
                .with_context(|| format!("[variants.{id}]"))?;
        }
        Ok(file)
    }
}

impl ServeFile {
    /// The `[[machines]]` of the file, if it has any.
    pub fn machines(&self) -> Option<Vec<app::cost::Machine>> {
        self.machines.clone()
    }
}

impl VariantEntry {
    fn require<'a>(&self, field: &'a Option<String>, name: &str) -> anyhow::Result<&'a str> {
        match field.as_deref() {
            Some(v) if !v.is_empty() => Ok(v),
            _ => bail!("backend `{}` needs `{name}`", self.backend),
        }
    }

    /// The remote target of a kserve/vertex entry (`None` for a local one).
    pub fn target(&self, spec: &VariantSpec) -> anyhow::Result<Option<Target>> {
        let input = self.input.clone().unwrap_or_else(|| "input".into());
        let output = self.output.clone().unwrap_or_else(|| "logits".into());
        let remote_only = [
            ("url", self.url.is_some()),
            ("model", self.model.is_some()),
            ("project", self.project.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
        ];
        match self.backend {
            BackendKind::Cpu | BackendKind::Cuda => {
                if let Some((field, _)) = remote_only.iter().find(|(_, set)| *set) {
                    bail!("`{field}` is for remote backends (kserve, vertex)");
                }
                Ok(None)
            }
            BackendKind::Kserve => {
                let url = self.require(&self.url, "url")?;
                reqwest_url(url)?;
                Ok(Some(Target::Kserve {
                    url: url.to_string(),
                    model: self.model.clone().unwrap_or_else(|| spec.id.to_string()),
                    input,
                    output,
                }))
            }
            BackendKind::Vertex => {
                let raw = match self.method.as_deref().unwrap_or("predict") {
                    "predict" => false,
                    "rawPredict" => true,
                    other => bail!("method must be `predict` or `rawPredict`, not `{other}`"),
                };
                let url = Target::vertex_url(
                    self.require(&self.project, "project")?,
                    self.require(&self.region, "region")?,
                    self.require(&self.endpoint, "endpoint")?,
                    raw,
                    self.api_base.as_deref(),
                );
                reqwest_url(&url)?;
                Ok(Some(Target::Vertex {
                    url,
                    auth: self.auth.clone().unwrap_or(VertexAuth::Adc),
                    input,
                    output,
                }))
            }
        }
    }

    /// Where this entry places its variant.
    pub fn placement(&self, spec: &VariantSpec) -> anyhow::Result<Placement> {
        let replicas = self.replicas.unwrap_or(1);
        if replicas == 0 {
            bail!("replicas must be at least 1");
        }
        let target = match self.target(spec)? {
            Some(target) => {
                if self.device.is_some() {
                    bail!("`device` is for local backends (cpu, cuda)");
                }
                loader::Target::Remote {
                    target,
                    options: self.remote_options(),
                }
            }
            None => {
                if self.backend == BackendKind::Cpu && self.device.is_some_and(|d| d != 0) {
                    bail!("`device` is a GPU ordinal (backend `cuda`)");
                }
                let first = self.device.unwrap_or(0);
                loader::Target::Local {
                    backend: self.backend,
                    // On cuda one replica per GPU from `device` on; the CPU has one.
                    devices: if self.backend == BackendKind::Cuda {
                        (first..first + replicas).collect()
                    } else {
                        vec![0]
                    },
                }
            }
        };
        Ok(Placement { target, replicas })
    }

    fn remote_options(&self) -> RemoteOptions {
        let d = RemoteOptions::default();
        RemoteOptions {
            timeout: self
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(d.timeout),
            retries: self.retries.unwrap_or(d.retries),
            backoff: self
                .backoff_ms
                .map(Duration::from_millis)
                .unwrap_or(d.backoff),
        }
    }
}

fn reqwest_url(url: &str) -> anyhow::Result<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("`{url}` is not an http(s) URL");
    }
    Ok(())
}

impl ServingArgs {
    /// The file, if any.
    pub fn file(&self) -> anyhow::Result<ServeFile> {
        let mut file = match &self.config {
            Some(path) => ServeFile::read(path)?,
            None => ServeFile::default(),
        };
        if self.fallback.is_some() {
            file.fallback = self.fallback;
        }
        Ok(file)
    }

    /// Batching of every variant: built-in defaults < flags < the file's `[batching]` < the variant's
    /// own `batching` table.
    pub fn batching(
        &self,
        file: &ServeFile,
    ) -> anyhow::Result<(BatchConfig, HashMap<String, BatchConfig>)> {
        let mut base = toml::Table::try_from(BatchConfig::default())?;
        if let Some(n) = self.default_instances {
            base.insert("instances".into(), toml::Value::Integer(n.try_into()?));
        }
        let flags: [(&str, Option<u64>); 5] = [
            ("max_batch_size", self.max_batch_size.map(|v| v as u64)),
            ("max_queue_delay_us", self.max_queue_delay_us),
            ("queue_capacity", self.queue_capacity.map(|v| v as u64)),
            ("timeout_ms", self.timeout_ms),
            ("instances", self.instances.map(|v| v as u64)),
        ];
        for (key, value) in flags {
            if let Some(v) = value {
                base.insert(key.into(), toml::Value::Integer(v.try_into()?));
            }
        }
        if let Some(t) = &file.batching {
            base.extend(t.clone());
        }
        let build = |t: toml::Table, what: &str| -> anyhow::Result<BatchConfig> {
            let c: BatchConfig = t.try_into().with_context(|| format!("{what} batching"))?;
            c.validate().with_context(|| format!("{what} batching"))?;
            Ok(c)
        };
        let default = build(base.clone(), "the default")?;
        let mut per_variant = HashMap::new();
        for (id, entry) in &file.variants {
            let remote = entry.backend.is_remote();
            if entry.batching.is_none() && !remote {
                continue;
            }
            let mut t = base.clone();
            // Remote calls wait on the network, not on this machine's cores: keep several in flight.
            if remote && self.instances.is_none() && !has(&file.batching, "instances") {
                t.insert("instances".into(), toml::Value::Integer(4));
            }
            if let Some(own) = &entry.batching {
                t.extend(own.clone());
            }
            per_variant.insert(id.clone(), build(t, &format!("[variants.{id}]"))?);
        }
        Ok((default, per_variant))
    }
}

fn has(table: &Option<toml::Table>, key: &str) -> bool {
    table.as_ref().is_some_and(|t| t.contains_key(key))
}

impl ServeFile {
    /// Places the variants the file does not name (`serve --gpus`: a replica on each GPU).
    pub fn set_default_placement(&mut self, placement: Placement) {
        self.default_placement = Some(placement);
    }

    /// The load plan: `config`'s backend and models directory for every variant, with the file's
    /// `[variants.<id>]` placements and fallback on top.
    pub fn plan(&self, config: &StateConfig) -> anyhow::Result<LoadPlan> {
        let mut plan = config.plan();
        if let Some(p) = &self.default_placement {
            plan.default = p.clone();
        }
        if let Some(f) = self.fallback {
            plan.fallback = f;
        }
        for (id, entry) in &self.variants {
            let spec =
                engine::variants::by_id(id).with_context(|| format!("unknown variant `{id}`"))?;
            let placement = entry
                .placement(spec)
                .with_context(|| format!("[variants.{id}]"))?;
            plan.per_variant.insert(id.clone(), placement);
        }
        Ok(plan)
    }
}

/// Loads every variant as `file` places it (the models directory and `config.backend` for those it
/// does not name) through the engine's one loader. Blocking. Never fails as a whole: what goes wrong
/// is recorded per variant and shown.
pub fn load_state(config: StateConfig, file: &ServeFile) -> AppState {
    // Every entry was checked when the file was read (`ServeFile::parse`), the only way to get one
    // with variants.
    let plan = file
        .plan(&config)
        .expect("the serving file was checked when read");
    AppState::load_plan(config, &plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [batching]
        max_queue_delay_us = 500

        [variants.resnet50-baseline]
        backend = "cpu"
        batching = { max_batch_size = 16 }

        [variants.resnet50-int8]
        backend = "kserve"
        url = "http://127.0.0.1:9000"
        timeout_ms = 1500

        [variants.resnet50-pruned]
        backend = "vertex"
        project = "p"
        region = "europe-west4"
        endpoint = "42"
        method = "rawPredict"
        auth = "none"
    "#;

    #[test]
    fn machines_need_a_source_and_a_date() {
        let file = ServeFile::parse(
            "[[machines]]\nname = \"box\"\nkind = \"CPU\"\nusd_per_hour = 0.5\nsource = \"list\"\ndate = \"2026-11-30\"\n",
        )
        .unwrap();
        assert_eq!(file.machines().unwrap()[0].usd_per_hour, 0.5);
        let err = format!(
            "{:#}",
            ServeFile::parse("[[machines]]\nname = \"box\"\nkind = \"CPU\"\nusd_per_hour = 0.5\nsource = \"list\"\ndate = \"\"\n")
                .unwrap_err()
        );
        assert!(err.contains("source and the date"), "{err}");
    }

    #[test]
    fn the_documented_example_parses_with_layered_batching() {
        let file = ServeFile::parse(EXAMPLE).unwrap();
        let args = ServingArgs {
            max_batch_size: Some(4),
            queue_capacity: Some(10),
            ..Default::default()
        };
        let (default, per) = args.batching(&file).unwrap();
        assert_eq!(default.max_batch_size, 4);
        assert_eq!(default.queue_capacity, 10);
        assert_eq!(default.max_queue_delay, Duration::from_micros(500));
        let base = &per["resnet50-baseline"];
        assert_eq!(
            (base.max_batch_size, base.queue_capacity, base.instances),
            (16, 10, 1)
        );
        assert_eq!(
            per["resnet50-int8"].instances, 4,
            "remote variants keep calls in flight"
        );
        let int8 = &file.variants["resnet50-int8"];
        assert_eq!(
            int8.target(&VARIANTS[3]).unwrap(),
            Some(Target::Kserve {
                url: "http://127.0.0.1:9000".into(),
                model: "resnet50-int8".into(),
                input: "input".into(),
                output: "logits".into()
            })
        );
        assert_eq!(int8.remote_options().timeout, Duration::from_millis(1500));
        match file.variants["resnet50-pruned"]
            .target(&VARIANTS[1])
            .unwrap()
        {
            Some(Target::Vertex { url, auth, .. }) => {
                assert!(
                    url.ends_with("/locations/europe-west4/endpoints/42:rawPredict"),
                    "{url}"
                );
                assert_eq!(auth, VertexAuth::None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| format!("{:#}", ServeFile::parse(text).unwrap_err());
        assert!(
            err("[variants.resnet51]\nbackend = \"cpu\"").contains("unknown variant `resnet51`")
        );
        assert!(err("[variants.resnet50-int8]\nbackend = \"kserve\"").contains("needs `url`"));
        assert!(err("[variants.resnet50-int8]\nbackend = \"tpu\"").contains("unknown variant"));
        assert!(
            err("[variants.resnet50-int8]\nbackend = \"cpu\"\nurl = \"http://x\"")
                .contains("`url` is for remote backends")
        );
        assert!(
            err("[variants.resnet50-int8]\nbackend = \"kserve\"\nurl = \"ftp://x\"")
                .contains("not an http(s) URL")
        );
        assert!(err("[batchin]\nx = 1").contains("unknown field"));
        let file = ServeFile::parse("[batching]\nmax_batch_size = 0").unwrap();
        let e = ServingArgs::default().batching(&file).unwrap_err();
        assert!(
            format!("{e:#}").contains("max_batch_size must be at least 1"),
            "{e:#}"
        );
    }

    #[test]
    fn placements_reach_the_loader_and_a_missing_gpu_is_an_error_unless_falling_back() {
        let text = "[variants.resnet50-baseline]\nbackend = \"cuda\"\ndevice = 1\nreplicas = 2\n";
        let file = ServeFile::parse(text).unwrap();
        let models = std::env::var_os("INFERSCOPE_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("../models"));
        let config = StateConfig::cpu(&models);
        let plan = file.plan(&config).unwrap();
        assert_eq!(
            plan.placement("resnet50-baseline"),
            &Placement {
                target: loader::Target::Local {
                    backend: BackendKind::Cuda,
                    devices: vec![1, 2]
                },
                replicas: 2
            }
        );
        assert_eq!(
            plan.placement("resnet50-int8"),
            &Placement::local(BackendKind::Cpu)
        );
        assert_eq!(plan.fallback, Fallback::Error);
        let err = |t: &str| format!("{:#}", ServeFile::parse(t).unwrap_err());
        assert!(
            err("[variants.resnet50-int8]\nbackend = \"cpu\"\nreplicas = 0")
                .contains("replicas must be at least 1")
        );
        assert!(err("fallback = \"gpu\"").contains("unknown fallback"));

        if !models.join("resnet50-baseline.onnx").is_file() || cfg!(feature = "cuda") {
            println!(
                "skipped the load half: no baseline in {} (or a cuda build)",
                models.display()
            );
            return;
        }
        // No GPU in this build: the variant placed on cuda fails with the reason...
        let state = load_state(config.clone(), &file);
        let (baseline, _) = state.variant("resnet50-baseline").unwrap();
        match &baseline.load {
            app::ssr::VariantLoad::Failed(e) => assert!(e.contains("cuda"), "{e}"),
            _ => panic!("the baseline placed on cuda must not load without a GPU"),
        }
        // ...and with `fallback = "cpu"` it runs on the CPU, and its card says so.
        let file = ServeFile::parse(&format!("fallback = \"cpu\"\n{text}")).unwrap();
        let state = load_state(config, &file);
        let info = state
            .variant("resnet50-baseline")
            .unwrap()
            .0
            .info()
            .unwrap();
        assert_eq!(info.backend, BackendKind::Cpu);
        assert_eq!(info.path, "ONNX Runtime CPU fp32");
        assert!(info.device.starts_with("2 replicas"), "{}", info.device);
    }
}
