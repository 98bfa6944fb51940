//! Dynamic batching: one queue per variant that groups concurrent requests into one model call.
//!
//! ## Design
//! Like Triton's dynamic batcher: requests enter a bounded queue ([`BatchConfig::queue_capacity`]);
//! a full queue is refused at once with [`Error::Overloaded`] (the server answers 503) instead of
//! growing without limit. So is a request that would wait past its deadline: the batcher keeps a
//! moving average of its model calls' time, and when the work queued ahead of a new request would
//! take longer than the request's deadline, it sheds it at once rather than computing an answer
//! nobody will receive (under 4× overload a plain FIFO queue ends up answering almost nothing in
//! time; with shedding it answers at capacity and refuses the rest quickly). Each of the variant's worker threads ([`BatchConfig::instances`], Triton's
//! instance count) takes the oldest request, then waits at most [`BatchConfig::max_queue_delay`] for
//! more until the batch holds [`BatchConfig::max_batch_size`] images, and runs the whole batch as one
//! blocking [`Model::run`] on its own thread, never on the async runtime's. Every request has a
//! deadline: one that expires while queued is dropped before it costs a model call, and its caller gets
//! [`Error::DeadlineExceeded`] when the deadline passes, even while a batch is still running.
//!
//! ## Alone or shared
//! A request may ask to run **alone** ([`Request::alone`]): its model call then has the whole engine
//! to itself. Every batcher of the process takes a shared permit of one engine gate for each model
//! call; an alone request runs in a batch of its own and takes the gate exclusively, so it waits for
//! the calls in flight (of every variant: CPU, GPU and remote alike) to end, and none starts until it
//! is done. Its queue wait includes that wait; its inference time is then the model's own, with every
//! thread of the backend and no neighbour — what the page's *each alone* timing mode shows. The gate
//! prefers the exclusive side (new shared calls wait behind a waiting alone request), so alone
//! requests are not starved under load. Requests that do not ask (KServe, Vertex AI) are batched and
//! run side by side as before.
//!
//! ## Inputs
//! A request carries normalized floats ([`Input::Tensor`], the KServe/Vertex wire format) or the
//! page's 224×224 RGB bytes ([`Input::Pixels`], 4× smaller), which [`Model::run_u8`] normalizes
//! (on the host, bit for bit as the browser would, unless the backend does it on its device). A batch
//! of byte requests is one `run_u8` call; a batch that mixes both is normalized on the host first.
//!
//! The engine knows nothing of HTTP or Prometheus: a [`BatchObserver`] hears of every batch and every
//! request's outcome (the server's `/metrics` implements it).
//!
//! ```no_run
//! # async fn demo(model: std::sync::Arc<dyn engine::backend::Model>) -> engine::Result<()> {
//! use engine::batcher::{BatchConfig, Batcher};
//! let batcher = Batcher::new(model, BatchConfig::default(), None);
//! let image = std::sync::Arc::new(vec![0.0f32; engine::INPUT_LEN]);
//! let answer = batcher.infer(image, 1, None).await?;
//! assert_eq!(answer.logits.len(), engine::NUM_CLASSES);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::backend::Model;
use crate::cam::Explained;
use crate::error::{Error, Result};
use crate::stages::{self, Stage};
use crate::{INPUT_LEN, NUM_CLASSES};

/// How one variant batches (the `[variants.<id>.batching]` table of the server's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Most images in one model call.
    pub max_batch_size: usize,
    /// Longest the oldest queued request waits for others to join its batch, in microseconds.
    #[serde(rename = "max_queue_delay_us", with = "micros")]
    pub max_queue_delay: Duration,
    /// Requests that may wait in the queue; one more is refused with [`Error::Overloaded`].
    pub queue_capacity: usize,
    /// Deadline of a request that does not bring its own, in milliseconds.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Worker threads taking batches from the queue (model calls in flight at once).
    pub instances: usize,
}

impl Default for BatchConfig {
    /// Batches of up to 8 images gathered for at most 2 ms, 64 queued requests, 30 s deadline, one
    /// worker: on the CPU engine one model call already uses every core.
    fn default() -> Self {
        BatchConfig {
            max_batch_size: 8,
            max_queue_delay: Duration::from_millis(2),
            queue_capacity: 64,
            timeout: Duration::from_secs(30),
            instances: 1,
        }
    }
}

impl BatchConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Shape(format!("batching: {what}")));
        if self.max_batch_size == 0 {
            return bad("max_batch_size must be at least 1");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1");
        }
        if self.instances == 0 {
            return bad("instances must be at least 1");
        }
        if self.timeout.is_zero() {
            return bad("timeout_ms must be at least 1");
        }
        Ok(())
    }
}

/// Batching for every variant of a server: a default, overrides by variant id, and who hears about it.
#[derive(Clone, Default)]
pub struct BatchPlan {
    pub default: BatchConfig,
    pub per_variant: HashMap<String, BatchConfig>,
    pub observer: Option<Arc<dyn BatchObserver>>,
}

impl BatchPlan {
    /// The settings of variant `id`.
    pub fn config_for(&self, id: &str) -> &BatchConfig {
        self.per_variant.get(id).unwrap_or(&self.default)
    }

    /// Starts the batcher of a loaded variant.
    pub fn start(&self, model: Arc<dyn Model>) -> Batcher {
        let config = self.config_for(model.spec().id).clone();
        Batcher::new(model, config, self.observer.clone())
    }
}

impl std::fmt::Debug for BatchPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchPlan")
            .field("default", &self.default)
            .field("per_variant", &self.per_variant)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// The images of a request.
#[derive(Debug, Clone)]
pub enum Input {
    /// `images × 3×224×224` floats, NCHW, torchvision-normalized.
    Tensor(Arc<Vec<f32>>),
    /// `images × 224×224×3` bytes, HWC RGB, resized and cropped
    /// ([`crate::preprocess::preprocess_pixels`]); the model normalizes them ([`Model::run_u8`]).
    Pixels(Arc<Vec<u8>>),
}

impl Input {
    /// Checks the length against the image count.
    pub fn check(&self, images: usize) -> Result<()> {
        match self {
            Input::Tensor(t) => crate::backend::check_input(t, images),
            Input::Pixels(p) => crate::backend::check_pixels(p, images),
        }
    }
}

/// One request to a [`Batcher`].
#[derive(Debug, Clone)]
pub struct Request {
    pub input: Input,
    /// Images in `input`.
    pub images: usize,
    /// Overrides the configured deadline.
    pub timeout: Option<Duration>,
    /// Run in a batch of its own with the engine to itself (see the module docs).
    pub alone: bool,
    /// Also return each image's last feature map and the FC weights ([`Answer::explained`], for class
    /// activation maps): the batch's model call is then [`Model::run_explained`].
    pub explain: bool,
}

impl Request {
    /// A shared request of `images` images with the configured deadline.
    pub fn new(input: Input, images: usize) -> Self {
        Request {
            input,
            images,
            timeout: None,
            alone: false,
            explain: false,
        }
    }
}

/// The engine gate of the process (see the module docs): model calls share it, alone requests hold
/// it exclusively. One per process, because the batchers of one process share its cores and devices.
static ENGINE_GATE: RwLock<()> = RwLock::new(());

/// A model call's permit of [`ENGINE_GATE`], released when dropped.
struct Permit {
    _shared: Option<std::sync::RwLockReadGuard<'static, ()>>,
    _alone: Option<std::sync::RwLockWriteGuard<'static, ()>>,
}

impl Permit {
    /// Blocks until the call may start. (A model call that panicked poisons the gate; the gate
    /// guards no data, so the next call goes on.)
    fn acquire(alone: bool) -> Self {
        if alone {
            Permit {
                _shared: None,
                _alone: Some(ENGINE_GATE.write().unwrap_or_else(PoisonError::into_inner)),
            }
        } else {
            Permit {
                _shared: Some(ENGINE_GATE.read().unwrap_or_else(PoisonError::into_inner)),
                _alone: None,
            }
        }
    }
}

/// Runs `f` with the engine to itself: waits for the model calls in flight, and no batcher of the
/// process starts one until `f` returns. Blocking: call it off the async runtime (a benchmark of one
/// model, say).
pub fn run_alone<R>(f: impl FnOnce() -> R) -> R {
    let _permit = Permit::acquire(true);
    f()
}

/// What a request's answer cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// From entering the queue to the start of its batch's model call.
    pub queue: Duration,
    /// The batch's model call.
    pub inference: Duration,
    /// Images in the batch this request rode in (its own included).
    pub batch_size: usize,
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `images × 1000` logits, in the request's image order.
    pub logits: Vec<f32>,
    pub timing: Timing,
    /// When the request asked to explain: its images' feature maps and the classifier, or why this
    /// variant cannot give them (its answer is then the plain one).
    pub explained: Option<std::result::Result<Explained, String>>,
}

/// Hears what the batcher does (metrics). Called from the worker threads and from `infer`.
pub trait BatchObserver: Send + Sync {
    /// A model call on `images` images finished (successfully or not) after `inference`.
    fn batch(&self, variant: &str, images: usize, inference: Duration, ok: bool);
    /// A request ended: its answer's timing, or why it failed (queue full, deadline, model error).
    /// `total` runs from `infer` being called to its return.
    fn request(
        &self,
        variant: &str,
        total: Duration,
        outcome: std::result::Result<&Timing, &Error>,
    );
}

/// One queued request.
struct Job {
    input: Input,
    images: usize,
    alone: bool,
    explain: bool,
    enqueued: Instant,
    deadline: Instant,
    timeout: Duration,
    reply: oneshot::Sender<Result<Answer>>,
}

/// A variant's queue and workers. Cheap to clone; the workers stop when the last clone is dropped,
/// after answering what is still queued.
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

struct Shared {
    variant: String,
    config: BatchConfig,
    tx: Sender<Job>,
    load: Arc<Load>,
    observer: Option<Arc<dyn BatchObserver>>,
}

/// What the queue holds and how fast it drains, shared by the callers and the workers.
#[derive(Default)]
struct Load {
    /// Requests and images waiting.
    queued: AtomicUsize,
    queued_images: AtomicUsize,
    /// Workers inside a model call.
    busy: AtomicUsize,
    /// Moving average of one model call, in µs (0 until the first call).
    call_micros: AtomicU64,
}

impl Load {
    /// How long a request of `images` arriving now would wait for its answer, if known.
    fn estimate(&self, images: usize, config: &BatchConfig) -> Option<Duration> {
        let call = self.call_micros.load(Ordering::Relaxed);
        if call == 0 {
            return None;
        }
        let ahead = self.queued_images.load(Ordering::Relaxed) + images;
        let batches = ahead.div_ceil(config.max_batch_size)
            + usize::from(self.busy.load(Ordering::Relaxed) > 0);
        Some(Duration::from_micros(
            call * batches as u64 / config.instances as u64,
        ))
    }

    /// The moving average of one model call (zero before the first).
    fn one_call(&self) -> Duration {
        Duration::from_micros(self.call_micros.load(Ordering::Relaxed))
    }

    fn record_call(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.call_micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 4 + sample) / 5
        };
        self.call_micros.store(new, Ordering::Relaxed);
    }
}

impl Batcher {
    /// Starts `config.instances` worker threads for `model`. Panics only if `config` is invalid (see
    /// [`BatchConfig::validate`]) or the OS refuses a thread.
    pub fn new(
        model: Arc<dyn Model>,
        config: BatchConfig,
        observer: Option<Arc<dyn BatchObserver>>,
    ) -> Self {
        config.validate().expect("valid batching config");
        let variant = model.spec().id.to_string();
        let (tx, rx) = crossbeam_channel::bounded::<Job>(config.queue_capacity);
        let load = Arc::new(Load::default());
        // The workers are detached, not joined: dropping the last `Batcher` closes the channel, and each
        // worker ends once the queue is empty, without blocking the async task that dropped it.
        for i in 0..config.instances {
            {
                let worker = Worker {
                    model: Arc::clone(&model),
                    rx: rx.clone(),
                    config: config.clone(),
                    load: Arc::clone(&load),
                    observer: observer.clone(),
                    variant: variant.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("batch-{variant}-{i}"))
                    .spawn(move || worker.run())
                    .expect("spawning a batcher thread");
            }
        }
        Batcher {
            shared: Arc::new(Shared {
                variant,
                config,
                tx,
                load,
                observer,
            }),
        }
    }

    /// The variant this batcher serves.
    pub fn variant(&self) -> &str {
        &self.shared.variant
    }

    pub fn config(&self) -> &BatchConfig {
        &self.shared.config
    }

    /// Requests waiting in the queue now.
    pub fn queue_depth(&self) -> usize {
        self.shared.load.queued.load(Ordering::Relaxed)
    }

    /// Runs `images` preprocessed images (`input.len() == images × 3×224×224`) in the next batch and
    /// returns their logits. `timeout` overrides the configured deadline. Errors: a wrong input size or
    /// more images than `max_batch_size` ([`Error::Shape`]), a full queue ([`Error::Overloaded`]), the
    /// deadline ([`Error::DeadlineExceeded`]), or the model's own error.
    pub async fn infer(
        &self,
        input: Arc<Vec<f32>>,
        images: usize,
        timeout: Option<Duration>,
    ) -> Result<Answer> {
        let mut request = Request::new(Input::Tensor(input), images);
        request.timeout = timeout;
        self.submit(request).await
    }

    /// Runs a request (floats or bytes, shared or alone) in the next batch; errors as
    /// [`infer`](Self::infer).
    pub async fn submit(&self, request: Request) -> Result<Answer> {
        let start = Instant::now();
        let result = self.infer_inner(request, start).await;
        if let Some(observer) = &self.shared.observer {
            observer.request(
                &self.shared.variant,
                start.elapsed(),
                result.as_ref().map(|a| &a.timing),
            );
        }
        result
    }

    async fn infer_inner(&self, request: Request, start: Instant) -> Result<Answer> {
        let Request {
            input,
            images,
            timeout,
            alone,
            explain,
        } = request;
        let s = &self.shared;
        input.check(images)?;
        if images > s.config.max_batch_size {
            return Err(Error::Shape(format!(
                "{images} images in one request; variant `{}` takes at most {} (max_batch_size)",
                s.variant, s.config.max_batch_size
            )));
        }
        let timeout = timeout.unwrap_or(s.config.timeout);
        let deadline = start + timeout;
        if let Some(wait) = s.load.estimate(images, &s.config) {
            // A deadline shorter than one model call cannot be met even by an idle variant: that is
            // the deadline's fault (504), not the load's (503, "retry later", which would never help).
            if s.load.one_call() > timeout {
                return Err(deadline_error(&s.variant, timeout));
            }
            if wait > timeout {
                return Err(Error::Overloaded {
                    variant: s.variant.clone(),
                    reason: format!(
                        "an answer would take ~{} ms behind the {} queued images, past the {} ms deadline",
                        wait.as_millis(),
                        s.load.queued_images.load(Ordering::Relaxed),
                        timeout.as_millis()
                    ),
                });
            }
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            input,
            images,
            alone,
            explain,
            enqueued: start,
            deadline,
            timeout,
            reply,
        };
        // Count before sending so that a worker never decrements below zero.
        s.load.queued.fetch_add(1, Ordering::Relaxed);
        s.load.queued_images.fetch_add(images, Ordering::Relaxed);
        match s.tx.try_send(job) {
            Ok(()) => {}
            Err(e) => {
                s.load.queued.fetch_sub(1, Ordering::Relaxed);
                s.load.queued_images.fetch_sub(images, Ordering::Relaxed);
                return Err(match e {
                    TrySendError::Full(_) => Error::Overloaded {
                        variant: s.variant.clone(),
                        reason: format!(
                            "its queue of {} requests is full",
                            s.config.queue_capacity
                        ),
                    },
                    TrySendError::Disconnected(_) => Error::ShuttingDown(s.variant.clone()),
                });
            }
        }
        let expired = || deadline_error(&s.variant, timeout);
        // Dropping `answer` on timeout tells the worker (through the closed channel) not to run this
        // request if it has not started yet.
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ShuttingDown(s.variant.clone())),
            Err(_) => Err(expired()),
        }
    }
}

/// One worker thread's state.
struct Worker {
    model: Arc<dyn Model>,
    rx: Receiver<Job>,
    config: BatchConfig,
    load: Arc<Load>,
    observer: Option<Arc<dyn BatchObserver>>,
    variant: String,
}

fn deadline_error(variant: &str, timeout: Duration) -> Error {
    Error::DeadlineExceeded {
        variant: variant.to_string(),
        timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
    }
}

impl Worker {
    fn run(self) {
        let mut carry = None;
        loop {
            let waited = stages::start();
            let Some(jobs) = self.next_batch(&mut carry) else {
                break;
            };
            stages::since(Stage::BatchWait, waited);
            self.run_batch(jobs);
        }
        tracing::debug!(variant = %self.variant, "batcher worker stopped");
    }

    fn take(&self, job: Job) -> Job {
        self.load.queued.fetch_sub(1, Ordering::Relaxed);
        self.load
            .queued_images
            .fetch_sub(job.images, Ordering::Relaxed);
        job
    }

    /// Starts with the request carried over from the last batch or blocks for the oldest queued one,
    /// then gathers more until the batch is full or the first has waited `max_queue_delay`. A request
    /// that does not fit is carried into the next batch, so order is kept. `None` once the queue is
    /// closed and empty.
    fn next_batch(&self, carry: &mut Option<Job>) -> Option<Vec<Job>> {
        let first = match carry.take() {
            Some(job) => job,
            None => self.take(self.rx.recv().ok()?),
        };
        // An alone request rides in a batch of its own.
        if first.alone {
            return Some(vec![first]);
        }
        let flush_at = first.enqueued + self.config.max_queue_delay;
        let mut images = first.images;
        let mut jobs = vec![first];
        while images < self.config.max_batch_size {
            // Whatever is queued already joins without waiting; then wait until the flush time.
            let next = match self.rx.try_recv() {
                Ok(job) => job,
                Err(_) => match self.rx.recv_deadline(flush_at) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            };
            let next = self.take(next);
            if next.alone || images + next.images > self.config.max_batch_size {
                *carry = Some(next);
                break;
            }
            images += next.images;
            jobs.push(next);
        }
        Some(jobs)
    }

    fn run_batch(&self, jobs: Vec<Job>) {
        // Wait for the engine: every model call shares the gate, an alone one holds it by itself.
        let alone = jobs.iter().any(|j| j.alone);
        let permit = Permit::acquire(alone);
        // Requests whose caller gave up (deadline, disconnect) cost nothing.
        let now = Instant::now();
        let (jobs, expired): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| !j.reply.is_closed() && j.deadline > now);
        for job in expired {
            let _ = job
                .reply
                .send(Err(deadline_error(&self.variant, job.timeout)));
        }
        if jobs.is_empty() {
            return;
        }
        let images: usize = jobs.iter().map(|j| j.images).sum();
        let start = Instant::now();
        self.load.busy.fetch_add(1, Ordering::Relaxed);
        // Feature maps when a request of the batch wants them and the model can give them.
        let cannot_explain = if jobs.iter().any(|j| j.explain) {
            self.model.explains().err()
        } else {
            None
        };
        let explain = jobs.iter().any(|j| j.explain) && cannot_explain.is_none();
        let result = self.call_model(&jobs, images, explain);
        let inference = start.elapsed();
        if stages::enabled() {
            stages::add(Stage::BatchCall, inference);
        }
        let replying = stages::start();
        drop(permit);
        self.load.busy.fetch_sub(1, Ordering::Relaxed);
        self.load.record_call(inference);
        let result = result.and_then(|(logits, explained)| {
            if logits.len() == images * NUM_CLASSES {
                Ok((logits, explained))
            } else {
                Err(Error::Runtime(format!(
                    "model returned {} logits for {images} images",
                    logits.len()
                )))
            }
        });
        if let Some(observer) = &self.observer {
            observer.batch(&self.variant, images, inference, result.is_ok());
        }
        match result {
            Ok((logits, mut explained)) => {
                let mut rows = logits.chunks_exact(NUM_CLASSES);
                let mut maps = explained
                    .as_mut()
                    .map(|e| std::mem::take(&mut e.maps).into_iter());
                for job in jobs {
                    // This job's images' maps, taken whether it asked or not, so that the
                    // next job's start where its images do.
                    let own: Option<Vec<_>> =
                        maps.as_mut().map(|m| m.by_ref().take(job.images).collect());
                    let explained = job.explain.then(|| match (&explained, own) {
                        (Some(e), Some(maps)) => Ok(Explained {
                            maps,
                            classifier: Arc::clone(&e.classifier),
                        }),
                        _ => Err(cannot_explain
                            .clone()
                            .unwrap_or_else(|| "no feature maps".into())),
                    });
                    let mine: Vec<f32> =
                        rows.by_ref().take(job.images).flatten().copied().collect();
                    let timing = Timing {
                        queue: start.saturating_duration_since(job.enqueued),
                        inference,
                        batch_size: images,
                    };
                    let _ = job.reply.send(Ok(Answer {
                        logits: mine,
                        timing,
                        explained,
                    }));
                }
            }
            Err(e) => {
                // The error is shared by the batch; each caller gets its text.
                let message = e.to_string();
                let mut e = Some(e);
                let n = jobs.len();
                for (i, job) in jobs.into_iter().enumerate() {
                    let err = if i + 1 == n {
                        e.take().expect("the last job takes the original error")
                    } else {
                        clone_error(&e, &message)
                    };
                    let _ = job.reply.send(Err(err));
                }
            }
        }
        stages::since(Stage::BatchReply, replying);
    }
}

impl Worker {
    /// One model call on the batch's inputs: bytes through [`Model::run_u8`], floats through
    /// [`Model::run`], a mix normalized on the host first.
    fn call_model(
        &self,
        jobs: &[Job],
        images: usize,
        explain: bool,
    ) -> Result<(Vec<f32>, Option<Explained>)> {
        let floats = |t: &[f32], n: usize| {
            if explain {
                self.model.run_explained(t, n).map(|(l, e)| (l, Some(e)))
            } else {
                self.model.run(t, n).map(|l| (l, None))
            }
        };
        let bytes = |p: &[u8], n: usize| {
            if explain {
                self.model.run_u8_explained(p, n).map(|(l, e)| (l, Some(e)))
            } else {
                self.model.run_u8(p, n).map(|l| (l, None))
            }
        };
        if let [job] = jobs {
            return match &job.input {
                Input::Tensor(t) => floats(t, job.images),
                Input::Pixels(p) => bytes(p, job.images),
            };
        }
        if jobs.iter().all(|j| matches!(j.input, Input::Pixels(_))) {
            let parts: Vec<&[u8]> = jobs
                .iter()
                .filter_map(|j| match &j.input {
                    Input::Pixels(p) => Some(p.as_slice()),
                    Input::Tensor(_) => None,
                })
                .collect();
            if !explain {
                // The requests' bytes as they are: a backend with a staging buffer of its own (the
                // GPU's pinned memory) copies each one straight there, with no joined batch between.
                return self.model.run_u8_parts(&parts, images).map(|l| (l, None));
            }
            return bytes(&parts.concat(), images);
        }
        let mut batch = vec![0f32; images * INPUT_LEN];
        let mut at = 0;
        for job in jobs {
            let out = &mut batch[at..at + job.images * INPUT_LEN];
            match &job.input {
                Input::Tensor(t) => out.copy_from_slice(t),
                Input::Pixels(p) => crate::preprocess::normalize_into(p, out),
            }
            at += job.images * INPUT_LEN;
        }
        floats(&batch, images)
    }
}

/// A copy of a batch's error for one of its requests (engine errors are not `Clone`: they may hold an
/// `io::Error`). The kinds callers act on keep their variant.
fn clone_error(e: &Option<Error>, message: &str) -> Error {
    match e {
        Some(Error::Remote {
            url,
            status,
            message,
        }) => Error::Remote {
            url: url.clone(),
            status: *status,
            message: message.clone(),
        },
        Some(Error::Shape(m)) => Error::Shape(m.clone()),
        Some(Error::BackendUnavailable { backend, reason }) => Error::BackendUnavailable {
            backend: backend.clone(),
            reason: reason.clone(),
        },
        Some(Error::DeadlineExceeded {
            variant,
            timeout_ms,
        }) => Error::DeadlineExceeded {
            variant: variant.clone(),
            timeout_ms: *timeout_ms,
        },
        _ => Error::Runtime(message.to_string()),
    }
}

/// `Duration` as integer microseconds in config files.
mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros().try_into().unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

/// `Duration` as integer milliseconds in config files.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    //! The batcher around a small real model: logits are a function of the input that the tests can
    //! recompute, so a request that got another request's rows would fail.
    use super::*;
    use crate::variants::{VariantSpec, VARIANTS};
    use std::sync::Mutex;

    /// Logit `c` of an image is `c × first pixel`; every call sleeps `delay` and is recorded.
    struct Probe {
        delay: Duration,
        calls: Mutex<Vec<usize>>,
        fail: bool,
    }

    impl Model for Probe {
        fn spec(&self) -> &VariantSpec {
            &VARIANTS[0]
        }
        fn info(&self) -> crate::backend::ModelInfo {
            crate::backend::ModelInfo {
                backend: crate::backend::BackendKind::Cpu,
                device: "test probe".into(),
                path: "logit c = c × first pixel".into(),
                location: crate::backend::LOCAL.into(),
            }
        }
        fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
            crate::backend::check_input(input, batch)?;
            self.calls.lock().unwrap().push(batch);
            std::thread::sleep(self.delay);
            if self.fail {
                return Err(Error::Runtime("probe failure".into()));
            }
            Ok(input
                .chunks_exact(INPUT_LEN)
                .flat_map(|img| (0..NUM_CLASSES).map(move |c| c as f32 * img[0]))
                .collect())
        }
    }

    fn probe(delay_ms: u64, fail: bool) -> Arc<Probe> {
        Arc::new(Probe {
            delay: Duration::from_millis(delay_ms),
            calls: Mutex::new(Vec::new()),
            fail,
        })
    }

    fn image(value: f32, n: usize) -> Arc<Vec<f32>> {
        Arc::new(vec![value; n * INPUT_LEN])
    }

    fn config(max_batch: usize, delay_ms: u64, capacity: usize) -> BatchConfig {
        BatchConfig {
            max_batch_size: max_batch,
            max_queue_delay: Duration::from_millis(delay_ms),
            queue_capacity: capacity,
            timeout: Duration::from_secs(10),
            instances: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_a_batch_and_get_their_own_rows() {
        let model = probe(50, false);
        let b = Batcher::new(model.clone(), config(8, 20, 64), None);
        let tasks: Vec<_> = (1..=6)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.infer(image(i as f32, 1), 1, None).await) })
            })
            .collect();
        for t in tasks {
            let (i, answer) = t.await.unwrap();
            let answer = answer.unwrap();
            assert_eq!(answer.logits.len(), NUM_CLASSES);
            assert_eq!(
                answer.logits[3],
                3.0 * i as f32,
                "request {i} got another's row"
            );
            assert!(answer.timing.batch_size >= 1);
        }
        let calls = model.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 6);
        assert!(
            calls.len() < 6,
            "6 concurrent requests with a 20 ms window ran as {calls:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_respect_max_batch_size_and_multi_image_requests() {
        let model = probe(30, false);
        let b = Batcher::new(model.clone(), config(4, 20, 64), None);
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.infer(image(i as f32, 3), 3, None).await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let a = t.await.unwrap().unwrap();
            assert_eq!(a.logits.len(), 3 * NUM_CLASSES);
            for row in a.logits.chunks_exact(NUM_CLASSES) {
                assert_eq!(row[2], 2.0 * i as f32);
            }
        }
        let calls = model.calls.lock().unwrap().clone();
        assert!(calls.iter().all(|&n| n <= 4), "{calls:?}");
        assert_eq!(calls.iter().sum::<usize>(), 15);
        let e = b.infer(image(1.0, 5), 5, None).await.unwrap_err();
        assert!(e.to_string().contains("at most 4"), "{e}");
        let e = b.infer(Arc::new(vec![0.0; 10]), 1, None).await.unwrap_err();
        assert!(matches!(e, Error::Shape(_)), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_at_once() {
        // One slow call in flight, a queue of 2: of 8 more requests, some must be refused.
        let model = probe(300, false);
        let b = Batcher::new(model.clone(), config(1, 0, 2), None);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.infer(image(1.0, 1), 1, None).await })
            })
            .collect();
        let mut refused = 0;
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(Error::Overloaded { reason, .. }) => {
                    assert!(
                        reason.contains("queue of 2 requests is full")
                            || reason.contains("past the 10000 ms deadline"),
                        "{reason}"
                    );
                    refused += 1
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(refused >= 5, "ok {ok}, refused {refused}");
        assert!(ok >= 1);
        assert_eq!(b.queue_depth(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_that_cannot_make_their_deadline_are_shed_at_once() {
        // 100 ms per call, one image per call, 250 ms deadlines: of 10 requests at once, the ones
        // queued behind two or more calls cannot be answered in time.
        let model = probe(100, false);
        let mut c = config(1, 0, 64);
        c.timeout = Duration::from_millis(250);
        let b = Batcher::new(model.clone(), c, None);
        b.infer(image(1.0, 1), 1, None).await.unwrap(); // learns the call time
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.infer(image(1.0, 1), 1, None).await })
            })
            .collect();
        let (mut ok, mut shed) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(Error::Overloaded { reason, .. }) => {
                    assert!(reason.contains("past the 250 ms deadline"), "{reason}");
                    shed += 1;
                }
                Err(Error::DeadlineExceeded { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(ok >= 1 && shed >= 5, "ok {ok}, shed {shed}");
        assert!(
            model.calls.lock().unwrap().len() <= 5,
            "shed requests cost no model call"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deadlines_expire_and_expired_requests_are_not_run() {
        let model = probe(200, false);
        let b = Batcher::new(model.clone(), config(1, 0, 16), None);
        let first = {
            let b = b.clone();
            tokio::spawn(async move { b.infer(image(1.0, 1), 1, None).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        let e = b
            .infer(image(2.0, 1), 1, Some(Duration::from_millis(50)))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::DeadlineExceeded { timeout_ms: 50, .. }),
            "{e}"
        );
        assert!(
            t0.elapsed() < Duration::from_millis(180),
            "the deadline did not cut the wait"
        );
        first.await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            model.calls.lock().unwrap().len(),
            1,
            "the expired request still ran"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_model_error_reaches_every_request_of_the_batch_and_the_observer() {
        #[derive(Default)]
        struct Seen(Mutex<Vec<String>>);
        impl BatchObserver for Seen {
            fn batch(&self, _: &str, images: usize, _: Duration, ok: bool) {
                self.0.lock().unwrap().push(format!("batch {images} {ok}"));
            }
            fn request(&self, v: &str, _: Duration, o: std::result::Result<&Timing, &Error>) {
                self.0.lock().unwrap().push(format!("{v} {}", o.is_ok()));
            }
        }
        let seen = Arc::new(Seen::default());
        let b = Batcher::new(probe(30, true), config(4, 30, 8), Some(seen.clone()));
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.infer(image(1.0, 1), 1, None).await })
            })
            .collect();
        for t in tasks {
            let e = t.await.unwrap().unwrap_err();
            assert!(e.to_string().contains("probe failure"), "{e}");
        }
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(
            seen.iter()
                .filter(|s| *s == "resnet50-baseline false")
                .count(),
            3,
            "{seen:?}"
        );
        assert!(seen
            .iter()
            .any(|s| s.starts_with("batch") && s.ends_with("false")));
    }

    /// One model call: first input value, batch size, start, end.
    type Span = (f32, usize, Instant, Instant);

    /// Records every model call's time span and first input value, across several models.
    struct Timeline {
        delay: Duration,
        spans: Arc<Mutex<Vec<Span>>>,
    }

    impl Model for Timeline {
        fn spec(&self) -> &VariantSpec {
            &VARIANTS[0]
        }
        fn info(&self) -> crate::backend::ModelInfo {
            crate::backend::ModelInfo {
                backend: crate::backend::BackendKind::Cpu,
                device: "test timeline".into(),
                path: "zeros after a sleep".into(),
                location: crate::backend::LOCAL.into(),
            }
        }
        fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
            let start = Instant::now();
            std::thread::sleep(self.delay);
            self.spans
                .lock()
                .unwrap()
                .push((input[0], batch, start, Instant::now()));
            Ok(vec![0.0; batch * NUM_CLASSES])
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn alone_requests_have_the_engine_to_themselves() {
        // Two variants under steady shared load; alone requests (first value 7) on both. No other
        // model call may overlap an alone one, and an alone request rides in a batch of one.
        let spans = Arc::new(Mutex::new(Vec::new()));
        let model = |ms| {
            Arc::new(Timeline {
                delay: Duration::from_millis(ms),
                spans: spans.clone(),
            })
        };
        let a = Batcher::new(model(15), config(4, 5, 256), None);
        let b = Batcher::new(model(25), config(4, 5, 256), None);
        let mut tasks = Vec::new();
        for i in 0..60 {
            for batcher in [&a, &b] {
                let batcher = batcher.clone();
                let alone = i % 10 == 5;
                tasks.push(tokio::spawn(async move {
                    let value = if alone { 7.0 } else { 1.0 };
                    let request = Request {
                        alone,
                        ..Request::new(Input::Tensor(image(value, 1)), 1)
                    };
                    batcher.submit(request).await.map(|a| (alone, a.timing))
                }));
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        for t in tasks {
            let (alone, timing) = t.await.unwrap().unwrap();
            if alone {
                assert_eq!(timing.batch_size, 1, "an alone request was batched");
            }
        }
        let spans = spans.lock().unwrap().clone();
        let alone: Vec<_> = spans.iter().filter(|s| s.0 == 7.0).collect();
        assert_eq!(alone.len(), 12);
        for x in &alone {
            assert_eq!(x.1, 1);
            for y in spans.iter().filter(|y| !std::ptr::eq(*x, *y)) {
                let overlap = y.2 < x.3 && x.2 < y.3;
                assert!(!overlap, "a call overlapped an alone call: {y:?} and {x:?}");
            }
        }
        let shared_overlaps = spans
            .iter()
            .filter(|x| x.0 != 7.0)
            .any(|x| spans.iter().any(|y| y.0 != 7.0 && y.2 < x.2 && x.2 < y.3));
        assert!(
            shared_overlaps,
            "shared calls of the two variants never ran side by side"
        );
    }

    /// A probe that explains: each image's "feature map" is 1 channel of 1×1 holding its first value.
    struct Explainer(Probe);

    impl Model for Explainer {
        fn spec(&self) -> &VariantSpec {
            self.0.spec()
        }
        fn info(&self) -> crate::backend::ModelInfo {
            self.0.info()
        }
        fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
            self.0.run(input, batch)
        }
        fn explains(&self) -> std::result::Result<(), String> {
            Ok(())
        }
        fn run_explained(&self, input: &[f32], batch: usize) -> Result<(Vec<f32>, Explained)> {
            let logits = self.0.run(input, batch)?;
            let maps = input
                .chunks_exact(INPUT_LEN)
                .map(|img| crate::cam::FeatureMap::new(1, 1, 1, vec![img[0]]).unwrap())
                .collect();
            let classifier = crate::cam::Classifier::new(
                NUM_CLASSES,
                1,
                vec![1.0; NUM_CLASSES],
                vec![0.0; NUM_CLASSES],
            )
            .unwrap();
            Ok((
                logits,
                Explained {
                    maps,
                    classifier: Arc::new(classifier),
                },
            ))
        }
    }

    #[tokio::test]
    async fn explain_requests_get_their_own_feature_maps_in_a_shared_batch() {
        let model = Arc::new(Explainer(Probe {
            delay: Duration::from_millis(20),
            calls: Mutex::new(Vec::new()),
            fail: false,
        }));
        let b = Batcher::new(model.clone(), config(8, 15, 64), None);
        let tasks: Vec<_> = (1..=4u8)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    let mut r = Request::new(Input::Tensor(image(f32::from(i), 1)), 1);
                    r.explain = i % 2 == 0;
                    (i, b.submit(r).await.unwrap())
                })
            })
            .collect();
        for t in tasks {
            let (i, answer) = t.await.unwrap();
            match answer.explained {
                Some(Ok(e)) => {
                    assert_eq!(i % 2, 0, "request {i} did not ask");
                    assert_eq!(e.maps.len(), 1);
                    assert_eq!(e.maps[0].data, vec![f32::from(i)], "request {i}'s own map");
                }
                None => assert_eq!(i % 2, 1, "request {i} asked"),
                Some(Err(e)) => panic!("request {i}: {e}"),
            }
            assert_eq!(answer.logits[2], 2.0 * f32::from(i));
        }
        assert_eq!(model.0.calls.lock().unwrap().len(), 1, "one shared batch");

        // A model that cannot explain answers plainly and says why.
        let plain = Batcher::new(probe(1, false), config(8, 1, 64), None);
        let mut r = Request::new(Input::Tensor(image(1.0, 1)), 1);
        r.explain = true;
        let answer = plain.submit(r).await.unwrap();
        let why = answer.explained.unwrap().unwrap_err();
        assert!(why.contains("does not return its feature map"), "{why}");
        assert_eq!(answer.logits.len(), NUM_CLASSES);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn byte_requests_get_the_logits_of_their_normalized_floats() {
        // Logit c = c × first value: a byte request's first value is its normalized first byte.
        let model = probe(20, false);
        let b = Batcher::new(model.clone(), config(8, 15, 64), None);
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    let input = if i % 2 == 0 {
                        Input::Pixels(Arc::new(vec![i * 30; crate::preprocess::PIXELS_LEN]))
                    } else {
                        Input::Tensor(image(f32::from(i), 1))
                    };
                    (i, b.submit(Request::new(input, 1)).await)
                })
            })
            .collect();
        for t in tasks {
            let (i, answer) = t.await.unwrap();
            let first = if i % 2 == 0 {
                crate::preprocess::normalize(&[i * 30; crate::preprocess::PIXELS_LEN]).unwrap()[0]
            } else {
                f32::from(i)
            };
            assert_eq!(answer.unwrap().logits[3], 3.0 * first, "request {i}");
        }
        let e = b
            .submit(Request::new(Input::Pixels(Arc::new(vec![0; 100])), 1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("150528 bytes, got 100"), "{e}");
    }

    #[test]
    fn config_reads_from_toml_like_json_with_units() {
        let c: BatchConfig =
            serde_json::from_str(r#"{"max_batch_size": 16, "max_queue_delay_us": 500}"#).unwrap();
        assert_eq!(c.max_batch_size, 16);
        assert_eq!(c.max_queue_delay, Duration::from_micros(500));
        assert_eq!(c.queue_capacity, BatchConfig::default().queue_capacity);
        assert!(serde_json::from_str::<BatchConfig>(r#"{"max_batch": 1}"#).is_err());
        let zero = BatchConfig {
            instances: 0,
            ..BatchConfig::default()
        };
        assert!(zero.validate().is_err());
    }
}
