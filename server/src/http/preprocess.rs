//! `POST /api/preprocess`: the server's native preprocessing of an uploaded photo.
//!
//! The body is the file's bytes; the answer is the 1×3×224×224 tensor as little-endian f32 bytes, with
//! the photo's size in `x-image-width` / `x-image-height`. The page preprocesses in the browser; this
//! route lets anyone (the end-to-end test, a curl user) compare with the server's build of the same
//! code. Photos decode within the server's decoding slots (`--max-decoding`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{HeaderName, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::HttpState;

pub const PATH: &str = "/api/preprocess";
/// Largest photo accepted (bytes).
pub const BODY_LIMIT: usize = 32 << 20;

pub async fn handler(State(s): State<HttpState>, body: Bytes) -> Result<Response, ApiError> {
    let pre = s.limits.decode(body).await.map_err(|mut e| {
        // The body is the photo: one that does not decode is of a media type this route does not take.
        if e.cause == "bad_image" {
            e.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        }
        s.reject("-", e)
    })?;
    let bytes = engine::kserve_wire::f32_to_le(&pre.data);
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
