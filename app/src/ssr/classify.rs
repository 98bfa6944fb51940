//! The body of the `classify` server function: validate, run every variant concurrently, name classes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::variants::by_id;

use super::{AppState, VariantLoad};
use crate::classify::{ClassifyResponse, NamedScore, Prediction, VariantOutcome, TOP_K};
use crate::AppError;

/// Runs `tensor` through the variants named in `variants` (every variant whose file exists when empty).
///
/// Each variant runs on the blocking pool at the same time as the others; a variant that fails yields
/// an `Err` entry of its own. Errors of the call as a whole are the caller's (bad tensor, unknown id)
/// or mean that no variant exists at all.
pub async fn classify(
    state: &AppState,
    tensor: Vec<f32>,
    variants: Vec<String>,
) -> Result<ClassifyResponse, AppError> {
    let received = Instant::now();
    check_tensor(&tensor)?;
    for id in &variants {
        if by_id(id).is_none() {
            return Err(AppError::BadRequest(format!("unknown variant `{id}`")));
        }
    }
    let selected: Vec<_> = state
        .variants()
        .iter()
        .filter(|v| {
            if variants.is_empty() {
                !matches!(v.load, VariantLoad::Missing)
            } else {
                variants.iter().any(|id| id == v.spec.id)
            }
        })
        .collect();
    if selected.is_empty() {
        return Err(AppError::NoModels(format!(
            "no variant's model file is in {} (run `./x setup`)",
            state.config().models_dir.display()
        )));
    }

    let tensor = Arc::new(tensor);
    let tasks: Vec<_> = selected
        .into_iter()
        .map(|v| {
            let id = v.spec.id;
            let task = match &v.load {
                // Through the variant's dynamic batcher: concurrent requests share model calls.
                VariantLoad::Ready(_) => match state.variant(id).and_then(|(_, b)| b.cloned()) {
                    Some(batcher) => {
                        let tensor = Arc::clone(&tensor);
                        Ok(tokio::spawn(async move {
                            match batcher.infer(tensor, 1, None).await {
                                Ok(a) => (Ok(a.logits), a.timing.queue, a.timing.inference),
                                Err(e) => (Err(e), Duration::ZERO, Duration::ZERO),
                            }
                        }))
                    }
                    None => Err("not available: the variant has no batcher".to_string()),
                },
                VariantLoad::Missing => {
                    Err(format!("not available: {} is missing", v.path.display()))
                }
                VariantLoad::Failed(e) => Err(format!("not available: {e}")),
            };
            (id, task)
        })
        .collect();

    let mut outcomes = Vec::with_capacity(tasks.len());
    for (id, task) in tasks {
        let result = match task {
            Err(e) => Err(e),
            Ok(handle) => match handle.await {
                Err(join) => {
                    tracing::error!(variant = id, error = %join, "inference task failed");
                    Err(format!("inference crashed: {join}"))
                }
                Ok((Err(e), _, _)) => {
                    tracing::warn!(variant = id, error = %e, "inference failed");
                    Err(e.to_string())
                }
                Ok((Ok(logits), queue, took)) => Ok(Prediction {
                    top: engine::classify::top_k(&logits, TOP_K)
                        .into_iter()
                        .map(|c| NamedScore {
                            index: c.index as u32,
                            name: state.class_name(c.index),
                            prob: c.prob,
                        })
                        .collect(),
                    inference_us: micros(took),
                    queue_us: micros(queue),
                }),
            },
        };
        outcomes.push(VariantOutcome {
            id: id.to_string(),
            result,
        });
    }
    Ok(ClassifyResponse {
        outcomes,
        server_us: micros(received.elapsed()),
    })
}

/// The tensor must be one preprocessed image of finite values.
pub fn check_tensor(tensor: &[f32]) -> Result<(), AppError> {
    if tensor.len() != engine::INPUT_LEN {
        return Err(AppError::BadRequest(format!(
            "the tensor must hold 1×3×224×224 = {} floats, got {}",
            engine::INPUT_LEN,
            tensor.len()
        )));
    }
    if let Some(i) = tensor.iter().position(|v| !v.is_finite()) {
        return Err(AppError::BadRequest(format!(
            "the tensor has a non-finite value at index {i}"
        )));
    }
    Ok(())
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_checks_name_the_problem() {
        let e = check_tensor(&[0.0; 3]).unwrap_err();
        assert!(e.to_string().contains("150528 floats, got 3"), "{e}");
        let mut t = vec![0.0; engine::INPUT_LEN];
        assert!(check_tensor(&t).is_ok());
        t[7] = f32::NAN;
        assert!(check_tensor(&t)
            .unwrap_err()
            .to_string()
            .contains("index 7"));
    }
}
