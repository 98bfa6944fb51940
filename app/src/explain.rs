//! What the page shows of the variants' class activation maps (where each one looked for its answer,
//! `engine::cam`): the reader's settings, shared by the controls, the cards and the run that asks the
//! server for the maps.

use leptos::prelude::*;

/// The class-activation-map settings of the page.
#[derive(Clone, Copy)]
pub struct CamSettings {
    /// Ask the server for the maps and overlay them on the photo in every card (on by default).
    pub show: RwSignal<bool>,
    /// The overlay's opacity, 0–1.
    pub opacity: RwSignal<f64>,
    /// The other variants' cards show where their map differs from the baseline's instead of the
    /// map itself.
    pub versus_baseline: RwSignal<bool>,
}

impl CamSettings {
    pub fn new() -> Self {
        CamSettings {
            show: RwSignal::new(true),
            opacity: RwSignal::new(0.55),
            versus_baseline: RwSignal::new(false),
        }
    }
}

impl Default for CamSettings {
    fn default() -> Self {
        Self::new()
    }
}

/// A heat colour for a map value in 0..1 (dark blue → cyan → yellow → red), as `rgb(...)`.
pub fn heat(v: f32) -> String {
    const STOPS: [(f32, [f32; 3]); 5] = [
        (0.0, [20.0, 30.0, 120.0]),
        (0.3, [30.0, 160.0, 220.0]),
        (0.55, [90.0, 200.0, 90.0]),
        (0.8, [250.0, 210.0, 40.0]),
        (1.0, [220.0, 30.0, 20.0]),
    ];
    blend(&STOPS, v.clamp(0.0, 1.0))
}

/// A diverging colour for a difference in −1..1 (blue: the baseline looks there more; white: the
/// same; red: this variant looks there more), as `rgb(...)`.
pub fn diverging(d: f32) -> String {
    const STOPS: [(f32, [f32; 3]); 3] = [
        (-1.0, [33.0, 102.0, 172.0]),
        (0.0, [247.0, 247.0, 247.0]),
        (1.0, [178.0, 24.0, 43.0]),
    ];
    blend(&STOPS, d.clamp(-1.0, 1.0))
}

fn blend(stops: &[(f32, [f32; 3])], v: f32) -> String {
    let i = stops
        .windows(2)
        .position(|w| v <= w[1].0)
        .unwrap_or(stops.len() - 2);
    let ((a, ca), (b, cb)) = (stops[i], stops[i + 1]);
    let t = if b > a { (v - a) / (b - a) } else { 0.0 };
    let c: Vec<u8> = (0..3)
        .map(|k| (ca[k] + (cb[k] - ca[k]) * t).round() as u8)
        .collect();
    format!("rgb({},{},{})", c[0], c[1], c[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_scales_hit_their_stops() {
        assert_eq!(heat(0.0), "rgb(20,30,120)");
        assert_eq!(heat(1.0), "rgb(220,30,20)");
        assert_eq!(heat(2.0), "rgb(220,30,20)", "clamped");
        assert_eq!(diverging(0.0), "rgb(247,247,247)");
        assert_eq!(diverging(-1.0), "rgb(33,102,172)");
        assert_eq!(diverging(0.5), "rgb(213,136,145)");
    }
}
