//! The engine's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- input ----
    /// The uploaded bytes are not an image we can decode.
    #[error("not a supported image (JPEG, PNG or WebP): {0}")]
    Decode(String),
    /// The image is larger than we agree to decode.
    #[error("image too large: {width}×{height} pixels (limit {limit} megapixels)")]
    TooLarge { width: u32, height: u32, limit: u32 },
    /// A tensor of the wrong size or shape.
    #[error("bad input tensor: {0}")]
    Shape(String),

    // ---- models ----
    /// A model file is missing.
    #[error("model file {0} not found (run `./x setup` or `inferscope import` first)")]
    MissingModel(PathBuf),
    /// A model file could not be parsed or has an unexpected structure.
    #[error("invalid model {path}: {reason}")]
    InvalidModel { path: PathBuf, reason: String },
    /// The Keras package could not be imported.
    #[error("import failed: {0}")]
    Import(String),

    // ---- backends ----
    /// A backend that this build or machine does not have.
    #[error("backend `{backend}` unavailable: {reason}")]
    BackendUnavailable { backend: String, reason: String },
    /// The backend cannot do what was asked (e.g. return its feature map); the text says why.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The inference runtime failed.
    #[error("inference failed: {0}")]
    Runtime(String),

    // ---- serving (batcher, remote variants) ----
    /// The variant's request queue is full, or too long to answer in time: the caller should back off
    /// and retry.
    #[error("variant `{variant}` is overloaded: {reason}")]
    Overloaded { variant: String, reason: String },
    /// The request's deadline passed before its answer was ready.
    #[error("variant `{variant}` did not answer within {timeout_ms} ms")]
    DeadlineExceeded { variant: String, timeout_ms: u64 },
    /// The variant no longer takes requests (the server is shutting down).
    #[error("variant `{0}` is shutting down")]
    ShuttingDown(String),
    /// A remote endpoint (KServe v2, Vertex AI) failed; `message` is the remote's own error text.
    #[error("remote {url}: {message}")]
    Remote {
        url: String,
        status: Option<u16>,
        message: String,
    },

    // ---- plumbing ----
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            context: "i/o".into(),
            source,
        }
    }
}

/// Adds a context string to I/O errors.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
