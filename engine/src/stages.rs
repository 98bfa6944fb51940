//! Where a serving process's host time goes: per-stage time counters for the served path (HTTP parsing
//! and answering, the batcher's wait, model call and replies, the GPU engine's staging copy and its
//! wait for the device). Off unless the environment sets `INFERSCOPE_STAGE_TIMES` (to a report
//! interval in seconds, e.g. `2`): then each stage's time is summed over all threads, and a thread
//! logs every interval, per stage, the busy time per second of wall time (1000 ms/s = one thread busy
//! all the time), the count and the mean, and starts over. Off, a stage costs one relaxed load.
//! docs/gpu.md, 2026-12-01a, is what it was written for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A timed stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The server parsing an inference request's body (KServe HTTP: JSON header, checks, input copy).
    HttpParse,
    /// The server writing an inference answer.
    HttpRespond,
    /// A batcher worker waiting for requests and gathering its batch.
    BatchWait,
    /// A batcher worker's model call (everything below happens inside it).
    BatchCall,
    /// A batcher worker splitting the logits and replying to the batch's requests.
    BatchReply,
    /// The GPU engine copying image bytes into pinned memory (and, on the executor's own upload
    /// path, queueing their DMA part by part).
    StageCopy,
    /// The GPU engine waiting for the device (the graph, the copies back) after everything is queued.
    DeviceWait,
}

const STAGES: [Stage; 7] = [
    Stage::HttpParse,
    Stage::HttpRespond,
    Stage::BatchWait,
    Stage::BatchCall,
    Stage::BatchReply,
    Stage::StageCopy,
    Stage::DeviceWait,
];

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::HttpParse => "http_parse",
            Stage::HttpRespond => "http_respond",
            Stage::BatchWait => "batch_wait",
            Stage::BatchCall => "batch_call",
            Stage::BatchReply => "batch_reply",
            Stage::StageCopy => "stage_copy",
            Stage::DeviceWait => "device_wait",
        }
    }
}

static NANOS: [AtomicU64; STAGES.len()] = [const { AtomicU64::new(0) }; STAGES.len()];
static COUNTS: [AtomicU64; STAGES.len()] = [const { AtomicU64::new(0) }; STAGES.len()];

/// The report interval, if stage times are on (read once).
fn interval() -> Option<Duration> {
    static INTERVAL: OnceLock<Option<Duration>> = OnceLock::new();
    *INTERVAL.get_or_init(|| {
        let secs = std::env::var("INFERSCOPE_STAGE_TIMES")
            .ok()?
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)?;
        let every = Duration::from_secs_f64(secs);
        let spawned = std::thread::Builder::new()
            .name("inferscope-stage-times".into())
            .spawn(move || report_every(every));
        spawned.ok().map(|_| every)
    })
}

/// Whether stage times are being recorded.
pub fn enabled() -> bool {
    interval().is_some()
}

/// Adds `took` to `stage`.
pub fn add(stage: Stage, took: Duration) {
    let i = stage as usize;
    NANOS[i].fetch_add(
        u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    COUNTS[i].fetch_add(1, Ordering::Relaxed);
}

/// Runs `f`, timing it as `stage` when stage times are on.
pub fn time<R>(stage: Stage, f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let r = f();
    add(stage, t.elapsed());
    r
}

/// A start time when stage times are on (end it with [`since`]).
pub fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Adds the time since `t` (from [`start`]) to `stage`.
pub fn since(stage: Stage, t: Option<Instant>) {
    if let Some(t) = t {
        add(stage, t.elapsed());
    }
}

fn report_every(every: Duration) {
    let mut last = Instant::now();
    loop {
        std::thread::sleep(every);
        let wall = last.elapsed().as_secs_f64();
        last = Instant::now();
        let mut line = String::new();
        for s in STAGES {
            let i = s as usize;
            let ns = NANOS[i].swap(0, Ordering::Relaxed);
            let n = COUNTS[i].swap(0, Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            line.push_str(&format!(
                " {}={:.0}ms/s,n={},mean={:.1}us",
                s.name(),
                ns as f64 / 1e6 / wall,
                n,
                ns as f64 / 1e3 / n as f64
            ));
        }
        if !line.is_empty() {
            tracing::info!("stage times over {wall:.2} s:{line}");
        }
    }
}
