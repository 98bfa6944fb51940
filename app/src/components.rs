//! The page's building blocks.

pub mod dropzone;
pub mod run_summary;
pub mod variant_card;
