//! The bodies of the `classify`, `classify_set` and `time_alone` server functions: validate, run the variants (one
//! after another, each alone, or all at once), name the classes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::batcher::{Batcher, Input, Request};
use engine::cam::Cam;
use engine::preprocess::PIXELS_LEN;
use engine::variants::by_id;

use super::{AppState, VariantLoad};
use crate::classify::{
    AloneTiming, ClassifyResponse, NamedScore, PhotoAnswer, Prediction, SetOutcome, SetResponse,
    TimingMode, VariantOutcome, MAX_ALONE_RUNS, MAX_SET_PHOTOS, TOP_K,
};
use crate::AppError;

/// What one variant's run gave: logits (and, when asked, the class activation map of its top-1 class
/// or why there is none) or the error's text, queue wait, inference.
type Ran = (
    Result<(Vec<f32>, Option<Result<Cam, String>>), String>,
    Duration,
    Duration,
);

/// Runs `pixels` through the variants named in `variants` (comma-separated ids; every variant whose
/// file exists when empty), in `mode`.
///
/// [`TimingMode::Alone`]: one variant after another, each request alone on the engine.
/// [`TimingMode::AllAtOnce`]: every variant's request at once, batched with whatever else is queued.
/// A variant that fails yields an `Err` entry of its own. Errors of the call as a whole are the
/// caller's (bad pixels, unknown id) or mean that no variant exists at all.
pub async fn classify(
    state: &AppState,
    pixels: Vec<u8>,
    variants: String,
    mode: TimingMode,
    explain: bool,
) -> Result<ClassifyResponse, AppError> {
    let received = Instant::now();
    check_pixels(&pixels)?;
    let work = select(state, &variants)?;

    let input = Input::Pixels(Arc::new(pixels));
    let ran: Vec<(&'static str, Result<Ran, String>)> = match mode {
        TimingMode::Alone => {
            let mut ran = Vec::with_capacity(work.len());
            for (id, batcher) in work {
                let result = match batcher {
                    Ok(b) => Ok(run(id, b, input.clone(), true, explain).await),
                    Err(e) => Err(e),
                };
                ran.push((id, result));
            }
            ran
        }
        TimingMode::AllAtOnce => {
            let tasks: Vec<_> = work
                .into_iter()
                .map(|(id, batcher)| {
                    let input = input.clone();
                    let task = batcher.map(|b| {
                        tokio::spawn(async move { run(id, b, input, false, explain).await })
                    });
                    (id, task)
                })
                .collect();
            let mut ran = Vec::with_capacity(tasks.len());
            for (id, task) in tasks {
                let result = match task {
                    Err(e) => Err(e),
                    Ok(handle) => handle.await.map_err(|join| {
                        tracing::error!(variant = id, error = %join, "inference task failed");
                        format!("inference crashed: {join}")
                    }),
                };
                ran.push((id, result));
            }
            ran
        }
    };

    let outcomes = ran
        .into_iter()
        .map(|(id, result)| {
            let result = result.and_then(|(logits, queue, took)| {
                let (logits, cam) = logits?;
                Ok(Prediction {
                    top: named_top(state, &logits),
                    inference_us: micros(took),
                    queue_us: micros(queue),
                    cam,
                })
            });
            VariantOutcome {
                id: id.to_string(),
                result,
            }
        })
        .collect();
    Ok(ClassifyResponse {
        outcomes,
        mode,
        server_us: micros(received.elapsed()),
        contention: contention(state),
    })
}

/// A selected variant: its id and its batcher, or why it cannot run.
type Work = (&'static str, Result<Batcher, String>);

/// Each variant named in `variants` (comma-separated ids; every variant whose file exists when
/// empty) with its batcher, or why it cannot run: the variants as they are now (one that a background
/// build finishes later joins the next request).
fn select(state: &AppState, variants: &str) -> Result<Vec<Work>, AppError> {
    let variants: Vec<&str> = variants
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .collect();
    for id in &variants {
        if by_id(id).is_none() {
            return Err(AppError::BadRequest(format!("unknown variant `{id}`")));
        }
    }
    // Each selected variant's batcher, or why it cannot run: the variants as they are now (one that a
    // background build finishes later joins the next request).
    let work: Vec<Work> = state
        .snapshot()
        .into_iter()
        .filter(|(v, _)| {
            if variants.is_empty() {
                !matches!(v.load, VariantLoad::Missing | VariantLoad::Unloaded)
            } else {
                variants.contains(&v.spec.id)
            }
        })
        .map(|(v, batcher)| {
            let id = v.spec.id;
            let batcher = match &v.load {
                VariantLoad::Ready(_) => {
                    batcher.ok_or_else(|| "not available: the variant has no batcher".to_string())
                }
                VariantLoad::Missing => Err(format!(
                    "not available: {} is not in the models folder",
                    v.spec.file
                )),
                VariantLoad::Unloaded => {
                    Err("not available: unloaded by a model-repository request".to_string())
                }
                VariantLoad::Failed(e) => {
                    Err(format!("not available: {}", super::without_paths(e)))
                }
            };
            (id, batcher)
        })
        .collect();
    if work.is_empty() {
        return Err(AppError::NoModels(
            "no variant's model file is in the server's models folder (run `./x setup`)".into(),
        ));
    }
    Ok(work)
}

/// What shared the machine while this request ran, when the server knows: a variant build writing
/// into its models folder (`./x run` builds them in the background).
fn contention(state: &AppState) -> Option<String> {
    let build = state.build_running()?;
    Some(format!(
        "Measured under contention: build-variants (process {}) was building variants on the \
         server's machine, sharing its CPU cores.",
        build.pid
    ))
}

/// One variant's request through its batcher; with `explain`, the class activation map of its top-1
/// class from the feature map the model returned ([`engine::cam::top1_map`]).
async fn run(id: &str, batcher: Batcher, input: Input, alone: bool, explain: bool) -> Ran {
    let request = Request {
        alone,
        explain,
        ..Request::new(input, 1)
    };
    match batcher.submit(request).await {
        Ok(a) => {
            let cam = a.explained.map(|explained| {
                let explained = explained?;
                let map = explained
                    .maps
                    .first()
                    .ok_or_else(|| "the model returned no feature map".to_string())?;
                engine::cam::top1_map(map, &explained.classifier, &a.logits)
                    .map_err(|e| e.to_string())
            });
            (Ok((a.logits, cam)), a.timing.queue, a.timing.inference)
        }
        Err(e) => {
            tracing::warn!(variant = id, error = %e, "inference failed");
            (Err(e.to_string()), Duration::ZERO, Duration::ZERO)
        }
    }
}

/// The body of `classify_set`: every photo through every selected variant, one batch-1 model call
/// alone on the engine each (variant after variant, photo after photo).
pub async fn classify_set(
    state: &AppState,
    pixels: Vec<u8>,
    variants: String,
) -> Result<SetResponse, AppError> {
    let received = Instant::now();
    let photos = pixels.len() / PIXELS_LEN;
    if pixels.is_empty() || !pixels.len().is_multiple_of(PIXELS_LEN) || photos > MAX_SET_PHOTOS {
        return Err(AppError::BadRequest(format!(
            "the photos must be 1 to {MAX_SET_PHOTOS} times 224×224×3 = {PIXELS_LEN} bytes, got {} bytes",
            pixels.len()
        )));
    }
    let work = select(state, &variants)?;
    let inputs: Vec<Input> = pixels
        .chunks_exact(PIXELS_LEN)
        .map(|p| Input::Pixels(Arc::new(p.to_vec())))
        .collect();
    drop(pixels);
    let mut outcomes = Vec::with_capacity(work.len());
    for (id, batcher) in work {
        let result = match batcher {
            Err(e) => Err(e),
            Ok(batcher) => {
                let mut answers = Vec::with_capacity(inputs.len());
                let mut failed = None;
                for input in &inputs {
                    let (logits, _queue, took) =
                        run(id, batcher.clone(), input.clone(), true, false).await;
                    match logits {
                        Ok((logits, _)) => answers.push(PhotoAnswer {
                            top: named_top(state, &logits),
                            inference_us: micros(took),
                        }),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                failed.map_or(Ok(answers), Err)
            }
        };
        outcomes.push(SetOutcome {
            id: id.to_string(),
            result,
        });
    }
    Ok(SetResponse {
        outcomes,
        server_us: micros(received.elapsed()),
        contention: contention(state),
    })
}

/// The [`TOP_K`] classes of `logits`, named.
fn named_top(state: &AppState, logits: &[f32]) -> Vec<NamedScore> {
    engine::classify::top_k(logits, TOP_K)
        .into_iter()
        .map(|c| NamedScore {
            index: c.index as u32,
            name: state.class_name(c.index),
            prob: c.prob,
        })
        .collect()
}

/// The body of `time_alone`: `runs` model calls of variant `id` on one image, with the engine to
/// itself, after an untimed warm-up.
pub async fn time_alone(state: &AppState, id: String, runs: u32) -> Result<AloneTiming, AppError> {
    if !(1..=MAX_ALONE_RUNS).contains(&runs) {
        return Err(AppError::BadRequest(format!(
            "runs must be from 1 to {MAX_ALONE_RUNS}, got {runs}"
        )));
    }
    let Some((variant, _)) = state.variant(&id) else {
        return Err(AppError::BadRequest(format!("unknown variant `{id}`")));
    };
    let VariantLoad::Ready(model) = &variant.load else {
        return Err(AppError::NoModels(format!("variant `{id}` is not loaded")));
    };
    let model = Arc::clone(model);
    let timed = tokio::task::spawn_blocking(move || {
        // A mid-grey photo, as the page sends it.
        let pixels = vec![128u8; PIXELS_LEN];
        engine::batcher::run_alone(|| {
            model.run_u8(&pixels, 1)?;
            (0..runs)
                .map(|_| {
                    let start = Instant::now();
                    model.run_u8(&pixels, 1).map(|_| micros(start.elapsed()))
                })
                .collect::<engine::Result<Vec<u64>>>()
        })
    })
    .await
    .map_err(|e| AppError::Internal(format!("the timing task failed: {e}")))?
    .map_err(|e| AppError::Internal(format!("{id}: {e}")))?;
    let mut sorted = timed.clone();
    sorted.sort_unstable();
    Ok(AloneTiming {
        id,
        median_us: sorted[sorted.len() / 2],
        runs_us: timed,
    })
}

/// The photo must be one image of 224×224 RGB bytes.
pub fn check_pixels(pixels: &[u8]) -> Result<(), AppError> {
    if pixels.len() != PIXELS_LEN {
        return Err(AppError::BadRequest(format!(
            "the photo must be 224×224×3 = {PIXELS_LEN} bytes, got {}",
            pixels.len()
        )));
    }
    Ok(())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_checks_name_the_problem() {
        let e = check_pixels(&[0; 3]).unwrap_err();
        assert!(e.to_string().contains("150528 bytes, got 3"), "{e}");
        assert!(check_pixels(&vec![0; PIXELS_LEN]).is_ok());
    }
}
