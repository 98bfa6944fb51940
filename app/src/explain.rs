//! What the page shows of the variants' class activation maps (where each one looked for its answer,
//! `engine::cam`): the reader's settings, shared by the controls, the cards and the run that asks the
//! server for the maps.

use std::fmt::Write as _;

use engine::cam::{difference, Cam};
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

/// A heat colour for a map value in 0..1 (dark blue → cyan → yellow → red).
pub fn heat(v: f32) -> [u8; 3] {
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
/// same; red: this variant looks there more).
pub fn diverging(d: f32) -> [u8; 3] {
    const STOPS: [(f32, [f32; 3]); 3] = [
        (-1.0, [33.0, 102.0, 172.0]),
        (0.0, [247.0, 247.0, 247.0]),
        (1.0, [178.0, 24.0, 43.0]),
    ];
    blend(&STOPS, d.clamp(-1.0, 1.0))
}

fn blend(stops: &[(f32, [f32; 3])], v: f32) -> [u8; 3] {
    let i = stops
        .windows(2)
        .position(|w| v <= w[1].0)
        .unwrap_or(stops.len() - 2);
    let ((a, ca), (b, cb)) = (stops[i], stops[i + 1]);
    let t = if b > a { (v - a) / (b - a) } else { 0.0 };
    std::array::from_fn(|k| (ca[k] + (cb[k] - ca[k]) * t).round() as u8)
}

/// `rgb(r,g,b)` for CSS and SVG.
pub fn css_rgb([r, g, b]: [u8; 3]) -> String {
    format!("rgb({r},{g},{b})")
}

/// What a card draws of a variant's map: per cell (row-major), the value shown and its colour. With
/// the baseline's map (`versus`), where this map differs from it ([`difference`], diverging colours);
/// else the map scaled to 0..1 (heat colours). `versus` maps of another grid fall back to the map.
pub fn map_cells(cam: &Cam, versus: Option<&Cam>) -> (Vec<f32>, Vec<[u8; 3]>) {
    match versus.and_then(|b| difference(cam, b)) {
        Some(d) => {
            let colors = d.iter().map(|&v| diverging(v)).collect();
            (d, colors)
        }
        None => {
            let v = cam.normalized();
            let colors = v.iter().map(|&v| heat(v)).collect();
            (v, colors)
        }
    }
}

/// The cells of [`map_cells`] as one SVG (a `width`×`height` grid of coloured squares, each with its
/// row, column and value): the map in the offline report, where a canvas would need a script.
pub fn map_svg(cam: &Cam, versus: Option<&Cam>) -> String {
    let (values, colors) = map_cells(cam, versus);
    let (rows, cols) = (cam.height, cam.width);
    let mut svg = format!(
        r#"<svg class="cam-map" viewBox="0 0 {cols} {rows}" preserveAspectRatio="none" shape-rendering="crispEdges" role="img" aria-label="class activation map, {rows}×{cols} cells">"#
    );
    for (i, (v, c)) in values.iter().zip(&colors).enumerate() {
        let (r, col) = (i as u32 / cols, i as u32 % cols);
        let _ = write!(
            svg,
            r#"<rect x="{col}" y="{r}" width="1" height="1" fill="{}" data-row="{r}" data-col="{col}" data-value="{v:.3}"></rect>"#,
            css_rgb(*c)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_scales_hit_their_stops() {
        assert_eq!(heat(0.0), [20, 30, 120]);
        assert_eq!(heat(1.0), [220, 30, 20]);
        assert_eq!(heat(2.0), [220, 30, 20], "clamped");
        assert_eq!(diverging(0.0), [247, 247, 247]);
        assert_eq!(diverging(-1.0), [33, 102, 172]);
        assert_eq!(css_rgb(diverging(0.5)), "rgb(213,136,145)");
    }

    fn cam(values: Vec<f32>) -> Cam {
        Cam {
            class: 1,
            height: 2,
            width: 3,
            values,
            bias: 0.0,
        }
    }

    #[test]
    fn map_cells_show_the_map_or_its_difference_from_the_baseline() {
        let a = cam(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let (v, c) = map_cells(&a, None);
        assert_eq!(v, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!((c[0], c[5]), (heat(0.0), heat(1.0)));
        // Against a reversed map: the cells differ by up to ±1, coloured on the diverging scale.
        let b = cam(vec![5.0, 4.0, 3.0, 2.0, 1.0, 0.0]);
        let (d, c) = map_cells(&a, Some(&b));
        assert_eq!((d[0], d[5]), (-1.0, 1.0));
        assert_eq!((c[0], c[5]), (diverging(-1.0), diverging(1.0)));
        // A baseline map of another grid cannot be compared: the map itself is shown.
        let other = Cam {
            height: 3,
            width: 2,
            ..b
        };
        assert_eq!(map_cells(&a, Some(&other)).0, v);
    }

    #[test]
    fn the_exported_svg_has_one_cell_per_value_at_its_place() {
        let svg = map_svg(&cam(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]), None);
        assert!(svg.starts_with("<svg class=\"cam-map\" viewBox=\"0 0 3 2\""));
        assert_eq!(svg.matches("<rect ").count(), 6);
        assert!(svg.contains(r#"x="2" y="1" width="1" height="1" fill="rgb(220,30,20)" data-row="1" data-col="2" data-value="1.000""#));
        assert!(svg.ends_with("</svg>"));
    }
}
