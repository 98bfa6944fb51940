//! Class activation maps: where in the photo a variant found the evidence for its answer.
//!
//! ## Why this is exact for ResNet50
//! ResNet50 ends in global average pooling and one fully connected layer: `logit_c = b_c + Σ_k w_{c,k} ·
//! mean(A_k)` over the last feature map `A` (2048 channels of 7×7 for a 224×224 photo). Moving the sum
//! inside the mean gives the class activation map (Zhou et al., 2016) `CAM_c = Σ_k w_{c,k} · A_k`, one
//! value per cell of the 7×7 grid, whose mean plus `b_c` *is* the logit: no gradient, no approximation
//! (for the INT8 variant, up to the quantization of the pooled vector before its FC).
//!
//! A backend hands back the feature map ([`FeatureMap`], on request: [`crate::backend::Model`]'s
//! `run_explained`) together with the variant's own FC weights ([`Classifier`]); this module is the one
//! place that turns them into a map ([`class_activation_map`]). It builds for the browser too: the page
//! normalizes and compares the maps it receives ([`Cam::normalized`], [`difference`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One image's last feature map, `[channels, height, width]` row-major (ResNet50: 2048 × 7 × 7).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl FeatureMap {
    /// Checks that `data` holds `channels × height × width` values.
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        let want = channels
            .checked_mul(height)
            .and_then(|n| n.checked_mul(width));
        if want != Some(data.len()) || data.is_empty() {
            return Err(Error::Shape(format!(
                "a feature map of {channels}×{height}×{width} cannot hold {} values",
                data.len()
            )));
        }
        Ok(FeatureMap {
            channels,
            height,
            width,
            data,
        })
    }

    /// Splits a batch `[batch, channels, height, width]` into one map per image.
    pub fn split_batch(shape: &[i64], data: &[f32]) -> Result<Vec<FeatureMap>> {
        let dims: Vec<usize> = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| Error::Shape(format!("shape {shape:?}"))))
            .collect::<Result<_>>()?;
        let [batch, c, h, w] = dims[..] else {
            return Err(Error::Shape(format!(
                "a feature map has 4 dimensions (N, C, H, W), got {shape:?}"
            )));
        };
        let one = c * h * w;
        if batch == 0 || one == 0 || data.len() != batch * one {
            return Err(Error::Shape(format!(
                "feature map of shape {shape:?} with {} values",
                data.len()
            )));
        }
        data.chunks_exact(one)
            .map(|d| FeatureMap::new(c, h, w, d.to_vec()))
            .collect()
    }
}

/// A variant's final fully connected layer, `logits = weight · pooled + bias` (weights dequantized for
/// the INT8 variant): what turns a feature map into a class map.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier {
    pub classes: usize,
    pub features: usize,
    /// `[classes, features]` row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Classifier {
    /// Checks the sizes.
    pub fn new(classes: usize, features: usize, weight: Vec<f32>, bias: Vec<f32>) -> Result<Self> {
        if classes == 0
            || features == 0
            || Some(weight.len()) != classes.checked_mul(features)
            || bias.len() != classes
        {
            return Err(Error::Shape(format!(
                "a classifier of {classes} classes × {features} features cannot have {} weights and {} biases",
                weight.len(),
                bias.len()
            )));
        }
        Ok(Classifier {
            classes,
            features,
            weight,
            bias,
        })
    }
}

/// What a model returns besides its logits when asked to explain them: one feature map per image and
/// the classifier that reads them.
#[derive(Debug, Clone)]
pub struct Explained {
    pub maps: Vec<FeatureMap>,
    pub classifier: Arc<Classifier>,
}

/// A class activation map: `values[y * width + x] = Σ_k w_{class,k} · A_k[y, x]` (in logit units; its
/// mean plus the class's bias is the logit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cam {
    /// ImageNet class index the map is for (the variant's top-1).
    pub class: u32,
    pub height: u32,
    pub width: u32,
    /// Row-major, `height × width`.
    pub values: Vec<f32>,
    /// The class's FC bias: `mean(values) + bias` is the class's logit.
    pub bias: f32,
}

impl Cam {
    /// The map scaled to 0..1 (lowest cell 0, highest 1; all 0 when flat), for display and comparison:
    /// maps of different variants differ in scale, not only in shape.
    pub fn normalized(&self) -> Vec<f32> {
        let (lo, hi) = self
            .values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let span = hi - lo;
        if !(span > 0.0 && span.is_finite()) {
            return vec![0.0; self.values.len()];
        }
        self.values.iter().map(|&v| (v - lo) / span).collect()
    }

    /// The (row, column) of the highest cell (the first one on ties).
    pub fn hottest(&self) -> (u32, u32) {
        let i = self
            .values
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv {
                    (i, v)
                } else {
                    (bi, bv)
                }
            })
            .0 as u32;
        (i / self.width.max(1), i % self.width.max(1))
    }

    /// The logit the map accounts for: its mean plus the class's bias.
    pub fn logit(&self) -> f32 {
        let n = self.values.len().max(1) as f64;
        (self.values.iter().map(|&v| f64::from(v)).sum::<f64>() / n) as f32 + self.bias
    }
}

/// `CAM_class = Σ_k w_{class,k} · A_k` over the feature map's channels.
pub fn class_activation_map(map: &FeatureMap, fc: &Classifier, class: usize) -> Result<Cam> {
    if map.channels != fc.features {
        return Err(Error::Shape(format!(
            "the feature map has {} channels, the classifier reads {}",
            map.channels, fc.features
        )));
    }
    if class >= fc.classes {
        return Err(Error::Shape(format!(
            "class {class} of a {}-class classifier",
            fc.classes
        )));
    }
    let cells = map.height * map.width;
    let row = &fc.weight[class * fc.features..(class + 1) * fc.features];
    // Channel-major accumulation: each channel's plane is contiguous, so this streams the map once.
    let mut acc = vec![0.0f64; cells];
    for (plane, &w) in map.data.chunks_exact(cells).zip(row) {
        if w == 0.0 {
            continue; // pruned FC inputs and 2:4 zeros cost nothing
        }
        let w = f64::from(w);
        for (a, &v) in acc.iter_mut().zip(plane) {
            *a += w * f64::from(v);
        }
    }
    Ok(Cam {
        class: class as u32,
        height: map.height as u32,
        width: map.width as u32,
        values: acc.into_iter().map(|v| v as f32).collect(),
        bias: fc.bias[class],
    })
}

/// The map for the top-1 class of `logits` (one image's).
pub fn top1_map(map: &FeatureMap, fc: &Classifier, logits: &[f32]) -> Result<Cam> {
    let class = crate::classify::top_k(logits, 1)
        .first()
        .map(|c| c.index)
        .ok_or_else(|| Error::Shape("no logits".into()))?;
    class_activation_map(map, fc, class)
}

/// Where `cam` looks differently from `reference`: `normalized(cam) − normalized(reference)` per cell
/// (−1..1; positive where `cam` puts relatively more weight). `None` when the grids differ in size.
pub fn difference(cam: &Cam, reference: &Cam) -> Option<Vec<f32>> {
    if (cam.height, cam.width) != (reference.height, reference.width) {
        return None;
    }
    Some(
        cam.normalized()
            .into_iter()
            .zip(reference.normalized())
            .map(|(a, b)| a - b)
            .collect(),
    )
}

/// Pearson correlation of two maps over their cells (1: the same places, relatively; `None` when
/// the grids differ or one is flat).
pub fn correlation(a: &Cam, b: &Cam) -> Option<f32> {
    if (a.height, a.width) != (b.height, b.width) || a.values.is_empty() {
        return None;
    }
    let n = a.values.len() as f64;
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let (ma, mb) = (mean(&a.values), mean(&b.values));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.values.iter().zip(&b.values) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    (saa > 0.0 && sbb > 0.0).then(|| (sab / (saa * sbb).sqrt()) as f32)
}

/// Whether `other` looks where `reference` looks: `other`'s hottest cell is `reference`'s, or a near
/// tie there — a cell whose value in `reference` lies within `tol` × (its max − min) of the max (two
/// computations of one map at different precisions, fp16 or int8 against f32, may order two nearly
/// equal cells differently). `false` when the grids differ.
pub fn same_hottest(reference: &Cam, other: &Cam, tol: f32) -> bool {
    if (reference.height, reference.width) != (other.height, other.width) {
        return false;
    }
    let (r, c) = other.hottest();
    let at = reference.values[(r * reference.width + c) as usize];
    let (lo, hi) = reference
        .values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    other.hottest() == reference.hottest() || hi - at <= tol * (hi - lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_hottest_allows_only_near_ties() {
        let cam = |values: Vec<f32>| Cam {
            class: 0,
            height: 2,
            width: 2,
            values,
            bias: 0.0,
        };
        let reference = cam(vec![0.0, 1.0, 0.99, 0.5]);
        assert!(same_hottest(
            &reference,
            &cam(vec![0.0, 2.0, 1.0, 0.0]),
            0.0
        ));
        // (1, 0) is hottest in the other map: 0.01 below the max of a range of 1.
        let swapped = cam(vec![0.0, 0.98, 0.99, 0.5]);
        assert!(same_hottest(&reference, &swapped, 0.02));
        assert!(!same_hottest(&reference, &swapped, 0.005));
        assert!(!same_hottest(
            &reference,
            &cam(vec![0.0, 0.0, 0.0, 1.0]),
            0.02
        ));
        let wide = Cam {
            width: 4,
            height: 1,
            ..reference.clone()
        };
        assert!(!same_hottest(&reference, &wide, 1.0));
    }

    /// Two channels of 2×2, three classes: every value checkable by hand.
    fn tiny() -> (FeatureMap, Classifier) {
        let map = FeatureMap::new(
            2,
            2,
            2,
            vec![
                1.0, 2.0, 3.0, 4.0, // channel 0
                0.0, 1.0, 0.0, 2.0, // channel 1
            ],
        )
        .unwrap();
        let fc = Classifier::new(
            3,
            2,
            vec![
                1.0, 0.0, // class 0: channel 0 only
                0.5, -1.0, // class 1
                0.0, 0.0, // class 2: nothing
            ],
            vec![0.1, 0.2, 0.3],
        )
        .unwrap();
        (map, fc)
    }

    #[test]
    fn tiny_case_by_hand() {
        let (map, fc) = tiny();
        let c0 = class_activation_map(&map, &fc, 0).unwrap();
        assert_eq!(c0.values, vec![1.0, 2.0, 3.0, 4.0]);
        // 0.5·[1,2,3,4] − 1·[0,1,0,2] = [0.5, 0, 1.5, 0]
        let c1 = class_activation_map(&map, &fc, 1).unwrap();
        assert_eq!(c1.values, vec![0.5, 0.0, 1.5, 0.0]);
        assert_eq!((c1.height, c1.width, c1.class), (2, 2, 1));
        assert_eq!(c1.hottest(), (1, 0));
        assert_eq!(c1.normalized(), vec![1.0 / 3.0, 0.0, 1.0, 0.0]);
        // mean + bias = the logit of average pooling + FC: 0.5·2.5 − 1·0.75 + 0.2 = 0.7
        assert!((c1.logit() - 0.7).abs() < 1e-6, "{}", c1.logit());
        let c2 = class_activation_map(&map, &fc, 2).unwrap();
        assert_eq!(c2.normalized(), vec![0.0; 4], "a flat map normalizes to 0");
        let d = difference(&c1, &c0).unwrap();
        let want = [1.0 / 3.0, -1.0 / 3.0, 1.0 / 3.0, -1.0];
        assert!(
            d.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{d:?}"
        );
        // [0.5, 0, 1.5, 0] against [1, 2, 3, 4]: deviations [0, -0.5, 1, -0.5] · [-1.5, -0.5, 0.5, 1.5]
        // = 0.25 + 0.5 - 0.75 = 0; uncorrelated. A map with itself: 1. A flat one: none.
        assert!(correlation(&c1, &c0).unwrap().abs() < 1e-6);
        assert!((correlation(&c0, &c0).unwrap() - 1.0).abs() < 1e-6);
        assert!(correlation(&c0, &c2).is_none());
        // logits [2.6, 0.7, 0.3] → the top-1 map is class 0's
        assert_eq!(top1_map(&map, &fc, &[2.6, 0.7, 0.3]).unwrap().class, 0);
    }

    #[test]
    fn mismatched_sizes_are_errors() {
        let (map, fc) = tiny();
        assert!(class_activation_map(&map, &fc, 3).is_err());
        let other = FeatureMap::new(1, 2, 4, vec![0.0; 8]).unwrap();
        assert!(class_activation_map(&other, &fc, 0).is_err());
        assert!(FeatureMap::new(2, 2, 2, vec![0.0; 7]).is_err());
        assert!(Classifier::new(3, 2, vec![0.0; 5], vec![0.0; 3]).is_err());
        assert!(FeatureMap::split_batch(&[2, 2, 2, 2], &[0.0; 15]).is_err());
        assert!(FeatureMap::split_batch(&[2, 2, 2], &[0.0; 8]).is_err());
        let two = FeatureMap::split_batch(
            &[2, 2, 2, 2],
            &(0..16).map(|v| v as f32).collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(two[1].data[0], 8.0);
        let a = class_activation_map(&map, &fc, 0).unwrap();
        let b = Cam {
            height: 1,
            width: 4,
            ..a.clone()
        };
        assert!(difference(&a, &b).is_none());
    }
}
