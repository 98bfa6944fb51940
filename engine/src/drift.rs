//! Per-layer drift: how far a compressed variant's activations are from the baseline's, layer by layer,
//! for one photo.
//!
//! ## Why block outputs
//! Every variant of ResNet50 that inferscope builds keeps the network's skeleton: a stem, then 16
//! bottleneck blocks whose outputs have the same shape in every variant (pruning narrows only the
//! layers inside a block, 2:4 and INT8 change no shape). Those 17 tensors — the stem's output after
//! max pooling and each block's output — are where the variants can be compared position by position,
//! and where an error that a layer introduces shows up and is carried on (or damped) by the next block.
//! A layer whose shapes differ between two files is reported as such, not compared.
//!
//! ## The measure
//! The relative error `‖a_variant − a_baseline‖₂ / ‖a_baseline‖₂` over the whole tensor (all channels
//! and positions), accumulated in `f64`: 0 where the variant computes the same tensor, about 1 where its
//! activations are as far from the baseline's as the baseline's are from zero.
//!
//! A backend returns the activations on request ([`crate::backend::Model::run_traced`]; the CPU engine
//! from a second ONNX Runtime session of the same file with these tensors as extra outputs, so the
//! served session stays as it is); this module is the one place that compares them. It builds for
//! the browser too: the page receives [`LayerDrift`]s.

use serde::{Deserialize, Serialize};

/// Prefix of the extra outputs a traced model returns (`inferscope.trace.layer1.0`, …), one per
/// [`Activation::label`].
pub const TRACE_PREFIX: &str = "inferscope.trace.";

/// The label of the stem's output (after max pooling); the blocks' outputs are labelled with the
/// block's name (`layer1.0` … `layer4.2`).
pub const STEM: &str = "stem";

/// One image's activation at one point of the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    /// [`STEM`] or the block's name.
    pub label: String,
    /// Without the batch dimension (`[channels, height, width]`).
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// How far one variant's activation at one point is from the baseline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDrift {
    /// [`STEM`] or the block's name.
    pub label: String,
    /// The relative error, or why this point could not be compared (shapes differ, missing).
    pub relative_error: Result<f32, String>,
}

/// `‖other − base‖₂ / ‖base‖₂`, accumulated in `f64`; `None` when the lengths differ. A `base` of all
/// zeros gives 0 when `other` is all zeros too and infinity otherwise.
pub fn relative_error(base: &[f32], other: &[f32]) -> Option<f32> {
    if base.len() != other.len() {
        return None;
    }
    let (mut diff, mut norm) = (0f64, 0f64);
    for (&b, &o) in base.iter().zip(other) {
        let d = f64::from(o) - f64::from(b);
        diff += d * d;
        norm += f64::from(b) * f64::from(b);
    }
    Some(if norm == 0.0 {
        if diff == 0.0 {
            0.0
        } else {
            f32::INFINITY
        }
    } else {
        (diff / norm).sqrt() as f32
    })
}

/// The drift of `other` from `base`, one entry per point of `base` in its order.
pub fn compare(base: &[Activation], other: &[Activation]) -> Vec<LayerDrift> {
    base.iter()
        .map(|b| {
            let relative_error = match other.iter().find(|o| o.label == b.label) {
                None => Err("this variant's file has no such layer".to_string()),
                Some(o) if o.shape != b.shape => Err(format!(
                    "shapes differ: {:?} here, {:?} in the baseline",
                    o.shape, b.shape
                )),
                Some(o) => relative_error(&b.data, &o.data)
                    .ok_or_else(|| "the tensors' lengths differ".to_string()),
            };
            LayerDrift {
                label: b.label.clone(),
                relative_error,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(label: &str, shape: &[usize], data: &[f32]) -> Activation {
        Activation {
            label: label.into(),
            shape: shape.to_vec(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn relative_error_by_hand() {
        // ‖(3, 4) − (0, 0)‖ / ‖(3, 4)‖ = 1; ‖(0, 1)‖ / ‖(3, 4)‖ = 0.2.
        assert_eq!(relative_error(&[3.0, 4.0], &[0.0, 0.0]), Some(1.0));
        assert_eq!(relative_error(&[3.0, 4.0], &[3.0, 5.0]), Some(0.2));
        assert_eq!(relative_error(&[3.0, 4.0], &[3.0, 4.0]), Some(0.0));
        assert_eq!(relative_error(&[0.0], &[0.0]), Some(0.0));
        assert_eq!(relative_error(&[0.0], &[1.0]), Some(f32::INFINITY));
        assert_eq!(relative_error(&[1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn compare_follows_the_baseline_and_names_what_it_cannot_compare() {
        let base = [
            act(STEM, &[1, 1, 2], &[3.0, 4.0]),
            act("layer1.0", &[2, 1, 1], &[1.0, 0.0]),
            act("layer1.1", &[1, 1, 1], &[2.0]),
        ];
        let other = [
            act("layer1.0", &[1, 1, 1], &[1.0]),
            act(STEM, &[1, 1, 2], &[3.0, 5.0]),
        ];
        let d = compare(&base, &other);
        assert_eq!(
            d.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(),
            [STEM, "layer1.0", "layer1.1"]
        );
        assert_eq!(d[0].relative_error, Ok(0.2));
        assert!(d[1]
            .relative_error
            .as_ref()
            .unwrap_err()
            .contains("shapes differ: [1, 1, 1] here, [2, 1, 1] in the baseline"));
        assert!(d[2]
            .relative_error
            .as_ref()
            .unwrap_err()
            .contains("no such layer"));
    }
}
