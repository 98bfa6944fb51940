//! The page's building blocks.

pub mod dropzone;
pub mod run_summary;
pub mod variant_card;

/// A duration in milliseconds as the page shows it (`12.3 ms`, never broken across lines).
pub fn ms(value: f64) -> String {
    format!("{value:.1}\u{a0}ms")
}
