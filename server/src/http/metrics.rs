//! Prometheus metrics: `GET /metrics` in the text exposition format.
//!
//! Per variant: histograms of queue wait, model time (per batch), request total (queue + model, as the
//! batcher sees it) and batch size; counters of requests and of errors by cause. Errors raised before a
//! request reaches a variant's queue (bad JSON, wrong shape, unknown model, body too large) are counted
//! with the variant named in the request (or `-` when there is none) and their cause; so are refusals
//! of the access checks and of the limits (variant `-`: `unauthorized`, `host_not_allowed`,
//! `cross_site`, `body_too_large`, `body_timeout`, `body_memory`, `connection_limit`, `not_found`).
//! Process metrics (resident memory, CPU, open files) come from the `prometheus` crate's process
//! collector, under their standard unprefixed names (`process_resident_memory_bytes`, ...), from a
//! registry of their own.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use engine::batcher::{BatchObserver, Timing};
use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds: 100 µs to ~26 s, ×2 apart (ResNet50 on a CPU takes ~50 ms; a slow
/// remote, seconds).
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(1e-4, 2.0, 19).expect("valid buckets")
}

/// Every metric inferscope exports, in its own registry (tests create several servers per process).
pub struct Metrics {
    registry: Registry,
    /// The process collector, without the `inferscope_` prefix.
    process: Registry,
    queue_wait: HistogramVec,
    inference: HistogramVec,
    request: HistogramVec,
    batch_size: HistogramVec,
    requests: IntCounterVec,
    errors: IntCounterVec,
    queue_depth: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("inferscope".into()), None).expect("a valid registry prefix");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets),
                &["variant"],
            )
            .expect("valid histogram");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let queue_wait = histogram(
            "queue_wait_seconds",
            "Time a request waited in its variant's queue before its batch started",
            latency_buckets(),
        );
        let inference = histogram(
            "inference_seconds",
            "Time of one model call (one batch)",
            latency_buckets(),
        );
        let request = histogram(
            "request_seconds",
            "Time from a request entering its variant's queue to its answer",
            latency_buckets(),
        );
        let batch_size = histogram(
            "batch_size",
            "Images per model call",
            vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0],
        );
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests that reached a variant's queue"),
            &["variant"],
        )
        .expect("valid counter");
        let errors = IntCounterVec::new(
            Opts::new("errors_total", "Failed requests by cause"),
            &["variant", "cause"],
        )
        .expect("valid counter");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "queue_depth",
                "Requests waiting in the queue when last scraped",
            ),
            &["variant"],
        )
        .expect("valid gauge");
        for c in [&requests, &errors] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(queue_depth.clone()))
            .expect("unique metric");
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        process
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Metrics {
            registry,
            process,
            queue_wait,
            inference,
            request,
            batch_size,
            requests,
            errors,
            queue_depth,
        }
    }

    /// Counts an error that happened before the request reached a variant's queue.
    pub fn rejected(&self, variant: &str, cause: &str) {
        self.errors.with_label_values(&[variant, cause]).inc();
    }

    /// Records the queue depth of each variant (called when scraped).
    pub fn set_queue_depth(&self, variant: &str, depth: usize) {
        self.queue_depth
            .with_label_values(&[variant])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("encoding metrics into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The short name of an engine error for the `cause` label.
pub fn cause(e: &engine::Error) -> &'static str {
    use engine::Error as E;
    match e {
        E::Decode(_) => "bad_image",
        E::TooLarge { .. } => "image_too_large",
        E::Shape(_) => "bad_input",
        E::Overloaded { .. } => "overloaded",
        E::DeadlineExceeded { .. } => "deadline",
        E::ShuttingDown(_) => "shutting_down",
        E::Remote { .. } => "remote",
        E::Runtime(_) => "inference",
        _ => "internal",
    }
}

impl BatchObserver for Metrics {
    fn batch(&self, variant: &str, images: usize, inference: Duration, _ok: bool) {
        self.inference
            .with_label_values(&[variant])
            .observe(inference.as_secs_f64());
        self.batch_size
            .with_label_values(&[variant])
            .observe(images as f64);
    }

    fn request(
        &self,
        variant: &str,
        total: Duration,
        outcome: std::result::Result<&Timing, &engine::Error>,
    ) {
        self.requests.with_label_values(&[variant]).inc();
        match outcome {
            Ok(t) => {
                self.queue_wait
                    .with_label_values(&[variant])
                    .observe(t.queue.as_secs_f64());
                self.request
                    .with_label_values(&[variant])
                    .observe(total.as_secs_f64());
            }
            Err(e) => self.errors.with_label_values(&[variant, cause(e)]).inc(),
        }
    }
}

/// `GET /metrics`.
pub async fn handler(State(state): State<super::HttpState>) -> impl IntoResponse {
    for v in state.app.variants() {
        if let Some((_, Some(b))) = state.app.variant(v.spec.id) {
            state.metrics.set_queue_depth(v.spec.id, b.queue_depth());
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_show_up_as_histograms_and_counters() {
        let m = Metrics::new();
        let t = Timing {
            queue: Duration::from_millis(3),
            inference: Duration::from_millis(50),
            batch_size: 4,
        };
        m.batch("v1", 4, Duration::from_millis(50), true);
        m.request("v1", Duration::from_millis(53), Ok(&t));
        m.request(
            "v1",
            Duration::from_millis(1),
            Err(&engine::Error::Overloaded {
                variant: "v1".into(),
                reason: "its queue of 2 requests is full".into(),
            }),
        );
        m.rejected("-", "bad_json");
        let text = m.render();
        for line in [
            r#"inferscope_requests_total{variant="v1"} 2"#,
            r#"inferscope_errors_total{cause="overloaded",variant="v1"} 1"#,
            r#"inferscope_errors_total{cause="bad_json",variant="-"} 1"#,
            r#"inferscope_batch_size_bucket{variant="v1",le="4"} 1"#,
            r#"inferscope_batch_size_bucket{variant="v1",le="3"} 0"#,
            r#"inferscope_inference_seconds_bucket{variant="v1",le="0.0512"} 1"#,
            r#"inferscope_inference_seconds_bucket{variant="v1",le="0.0256"} 0"#,
            r#"inferscope_queue_wait_seconds_count{variant="v1"} 1"#,
            r#"inferscope_request_seconds_count{variant="v1"} 1"#,
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        // Documented under their standard names.
        #[cfg(target_os = "linux")]
        for line in ["\nprocess_resident_memory_bytes ", "\nprocess_open_fds "] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }
}
