//! Burst mode: the current photo sent N times with C requests in flight, every answer feeding the
//! latency histograms of the burst's timing mode as it arrives (all at once by default: a burst is
//! load).

use std::sync::Arc;

use leptos::prelude::*;

use crate::classify::{classify, TimingMode};
use crate::run::RunState;
use crate::stats::LatencySamples;

/// Most requests one burst may send.
pub const MAX_REQUESTS: u32 = 1000;
/// Most requests a burst keeps in flight (browsers open at most 6 HTTP/1.1 connections per host; more
/// queue in the browser, which the round-trip times then show).
pub const MAX_CONCURRENCY: u32 = 16;

/// A burst's settings and progress. Cheap to copy into event handlers.
#[derive(Clone, Copy)]
pub struct Burst {
    /// Settings as typed (validated by [`Burst::settings`]).
    pub requests_input: RwSignal<String>,
    pub concurrency_input: RwSignal<String>,
    /// How the server runs each request's variants.
    pub mode: RwSignal<TimingMode>,
    /// Requests in the running (or last) burst.
    pub total: RwSignal<u32>,
    /// Answers received so far (failed ones included).
    pub done: RwSignal<u32>,
    pub failed: RwSignal<u32>,
    pub last_error: RwSignal<Option<String>>,
    pub running: RwSignal<bool>,
    pub cancelling: RwSignal<bool>,
    /// Wall time of the burst so far, ms.
    pub elapsed_ms: RwSignal<f64>,
    /// Browser round trip of each request of the burst, ms.
    pub round_trips: RwSignal<LatencySamples>,
    sent: StoredValue<u32>,
    active: StoredValue<u32>,
    started_ms: StoredValue<f64>,
}

impl Burst {
    pub fn new() -> Self {
        Burst {
            requests_input: RwSignal::new("20".into()),
            concurrency_input: RwSignal::new("4".into()),
            mode: RwSignal::new(TimingMode::AllAtOnce),
            total: RwSignal::new(0),
            done: RwSignal::new(0),
            failed: RwSignal::new(0),
            last_error: RwSignal::new(None),
            running: RwSignal::new(false),
            cancelling: RwSignal::new(false),
            elapsed_ms: RwSignal::new(0.0),
            round_trips: RwSignal::new(LatencySamples::default()),
            sent: StoredValue::new(0),
            active: StoredValue::new(0),
            started_ms: StoredValue::new(0.0),
        }
    }

    /// The typed settings as (requests, concurrency), or what is wrong with them.
    pub fn settings(&self) -> Result<(u32, u32), String> {
        let requests = parse_in_range(&self.requests_input.get(), "Requests", 1, MAX_REQUESTS)?;
        let concurrency = parse_in_range(
            &self.concurrency_input.get(),
            "Concurrency",
            1,
            MAX_CONCURRENCY,
        )?;
        Ok((requests, concurrency))
    }

    /// Requests per second over the burst so far.
    pub fn throughput(&self) -> Option<f64> {
        let (done, ms) = (self.done.get(), self.elapsed_ms.get());
        (done > 0 && ms > 0.0).then(|| f64::from(done) / (ms / 1000.0))
    }

    /// Starts a burst of the photo's bytes; does nothing while one runs or without a photo.
    pub fn start(self, run: RunState, pixels: Arc<Vec<u8>>) {
        let Ok((requests, concurrency)) = self.settings() else {
            return;
        };
        if self.running.get_untracked() {
            return;
        }
        self.total.set(requests);
        self.done.set(0);
        self.failed.set(0);
        self.last_error.set(None);
        self.elapsed_ms.set(0.0);
        self.round_trips.set(LatencySamples::default());
        self.cancelling.set(false);
        self.running.set(true);
        self.sent.set_value(0);
        self.started_ms.set_value(crate::browser::now_ms());
        run.histogram_mode.set(self.mode.get_untracked());
        let workers = concurrency.min(requests);
        self.active.set_value(workers);
        for _ in 0..workers {
            let pixels = Arc::clone(&pixels);
            leptos::task::spawn_local(async move { self.worker(run, pixels).await });
        }
    }

    /// Stops sending; the requests in flight still land in the histograms.
    pub fn cancel(&self) {
        if self.running.get_untracked() {
            self.cancelling.set(true);
        }
    }

    /// Forgets the last burst's progress (the caller clears the histograms).
    pub fn reset(&self) {
        if self.running.get_untracked() {
            return;
        }
        self.total.set(0);
        self.done.set(0);
        self.failed.set(0);
        self.last_error.set(None);
        self.elapsed_ms.set(0.0);
        self.round_trips.set(LatencySamples::default());
    }

    async fn worker(self, run: RunState, pixels: Arc<Vec<u8>>) {
        use crate::browser::now_ms;
        loop {
            let sent = self.sent.get_value();
            if self.cancelling.get_untracked() || sent >= self.total.get_untracked() {
                break;
            }
            self.sent.set_value(sent + 1);
            let start = now_ms();
            let mode = self.mode.get_untracked();
            let answer = classify(pixels.as_ref().clone(), String::new(), mode, false).await;
            let round_trip = now_ms() - start;
            match answer {
                Ok(answer) => {
                    run.record(&answer);
                    self.round_trips.update(|s| s.push(round_trip));
                    let failures = answer
                        .outcomes
                        .iter()
                        .filter_map(|o| o.result.as_ref().err())
                        .next();
                    if let Some(e) = failures {
                        self.last_error.set(Some(e.clone()));
                    }
                }
                Err(e) => {
                    self.failed.update(|f| *f += 1);
                    self.last_error.set(Some(e.to_string()));
                }
            }
            self.done.update(|d| *d += 1);
            self.elapsed_ms.set(now_ms() - self.started_ms.get_value());
        }
        let left = self.active.get_value().saturating_sub(1);
        self.active.set_value(left);
        if left == 0 {
            self.running.set(false);
            self.cancelling.set(false);
        }
    }
}

fn parse_in_range(text: &str, what: &str, min: u32, max: u32) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "{what} must be a whole number from {min} to {max}."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_in_range;

    #[test]
    fn settings_outside_their_range_are_explained() {
        assert_eq!(parse_in_range(" 20 ", "Requests", 1, 1000), Ok(20));
        for bad in ["0", "1001", "-3", "2.5", "", "many"] {
            assert_eq!(
                parse_in_range(bad, "Requests", 1, 1000).unwrap_err(),
                "Requests must be a whole number from 1 to 1000."
            );
        }
    }
}
