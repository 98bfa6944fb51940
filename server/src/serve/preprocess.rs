//! `POST /api/preprocess`: the server's native preprocessing of an uploaded photo.
//!
//! The body is the file's bytes; the answer is the 1×3×224×224 tensor as little-endian f32 bytes, with
//! the photo's size in `x-image-width` / `x-image-height`. The page preprocesses in the browser; this
//! route lets anyone (the end-to-end test, a curl user) compare with the server's build of the same
//! code.

use axum::body::Bytes;
use axum::http::header::{HeaderName, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::error::HttpError;

pub const PATH: &str = "/api/preprocess";
/// Largest photo accepted (bytes).
pub const BODY_LIMIT: usize = 32 << 20;

pub async fn handler(body: Bytes) -> Result<Response, HttpError> {
    let pre = tokio::task::spawn_blocking(move || engine::preprocess::preprocess(&body))
        .await
        .map_err(|e| HttpError {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("preprocessing crashed: {e}"),
        })??;
    let bytes: Vec<u8> = pre.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                HeaderName::from_static("x-image-width"),
                pre.width.to_string(),
            ),
            (
                HeaderName::from_static("x-image-height"),
                pre.height.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}
