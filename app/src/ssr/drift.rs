//! The body of the `layer_drift` server function: one traced run of the baseline and of every other
//! loaded variant on the photo, compared block by block ([`engine::drift`]).
//!
//! A traced run holds every block's output (about 22 MB per variant for one photo), so one call runs
//! at a time ([`ADMISSION`]): a second waits up to [`ADMISSION_WAIT`] and is then refused as busy. The
//! runs take the engine to themselves ([`engine::batcher::run_alone`]), so no timed answer of another
//! request shares the cores with them: those wait in their queues, and say so.

use std::time::{Duration, Instant};

use engine::backend::Model;
use engine::drift::compare;
use engine::variants::VARIANTS;
use tokio::sync::Semaphore;

use super::classify::check_pixels;
use super::{without_paths, AppState};
use crate::drift::{DriftResponse, VariantDrift};
use crate::AppError;

/// One drift computation at a time.
static ADMISSION: Semaphore = Semaphore::const_new(1);
/// How long a call waits for the one before it.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(30);

pub async fn layer_drift(state: &AppState, pixels: Vec<u8>) -> Result<DriftResponse, AppError> {
    let received = Instant::now();
    check_pixels(&pixels)?;
    let _permit = match tokio::time::timeout(ADMISSION_WAIT, ADMISSION.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            return Err(AppError::Busy(format!(
                "another per-layer drift was being computed for {} s; try again",
                ADMISSION_WAIT.as_secs()
            )))
        }
    };
    let ready = state.ready();
    let base_id = VARIANTS[0].id;
    let Some(baseline) = ready
        .iter()
        .find(|(spec, _)| spec.id == base_id)
        .map(|(_, m)| m.clone())
    else {
        return Err(AppError::NoModels(format!(
            "drift is measured against the baseline ({base_id}), which is not loaded"
        )));
    };
    let others: Vec<(String, std::sync::Arc<dyn Model>)> = ready
        .into_iter()
        .filter(|(spec, _)| spec.id != base_id)
        .map(|(spec, m)| (spec.id.to_string(), m))
        .collect();
    let path = baseline.info().path;
    let computed = tokio::task::spawn_blocking(move || {
        engine::batcher::run_alone(|| {
            let (_, base) = baseline.run_u8_traced(&pixels).map_err(|e| {
                AppError::NoModels(format!(
                    "drift needs the baseline's layer outputs: {}",
                    without_paths(&e.to_string())
                ))
            })?;
            let variants = others
                .into_iter()
                .map(|(id, model)| {
                    let result = model
                        .run_u8_traced(&pixels)
                        .map(|(_, acts)| compare(&base, &acts))
                        .map_err(|e| without_paths(&e.to_string()));
                    VariantDrift { id, result }
                })
                .collect();
            let layers = base.into_iter().map(|a| a.label).collect();
            Ok::<_, AppError>((layers, variants))
        })
    })
    .await
    .map_err(|e| AppError::Internal(format!("the drift task failed: {e}")))?;
    let (layers, variants) = computed?;
    Ok(DriftResponse {
        baseline: base_id.to_string(),
        layers,
        variants,
        path: format!("{path}, a traced session of each file (block outputs as extra outputs)"),
        server_us: u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX),
    })
}
