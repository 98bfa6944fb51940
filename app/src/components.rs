//! The page's building blocks.

pub mod burst_panel;
pub mod cam_overlay;
pub mod chart;
pub mod cost_table;
pub mod drift_chart;
pub mod dropzone;
pub mod export_panel;
pub mod labelled_set;
pub mod run_summary;
pub mod samples;
pub mod timing;
pub mod variant_card;

/// Each variant's colour (cards and histograms), in registry order; others get the last one.
pub const VARIANT_COLORS: [(u8, u8, u8); 4] = [
    (47, 111, 228),
    (224, 123, 24),
    (31, 138, 76),
    (142, 68, 173),
];

/// The colour of variant `id`.
pub fn variant_color(id: &str) -> (u8, u8, u8) {
    let i = engine::variants::VARIANTS
        .iter()
        .position(|v| v.id == id)
        .unwrap_or(VARIANT_COLORS.len() - 1);
    VARIANT_COLORS[i.min(VARIANT_COLORS.len() - 1)]
}

/// `#rrggbb` of a colour.
pub fn css_color((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// A duration in milliseconds as the page shows it (`12.3 ms`, never broken across lines).
pub fn ms(value: f64) -> String {
    format!("{value:.1}\u{a0}ms")
}
