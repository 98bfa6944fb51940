//! From logits to the answer shown to users: softmax probabilities and the top-k classes.

use serde::{Deserialize, Serialize};

/// One class in a top-k answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// ImageNet class index (0..1000, the standard order).
    pub index: usize,
    /// Softmax probability over all classes, in [0, 1].
    pub prob: f32,
}

/// Numerically stable softmax of one row of logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&z| f64::from(z - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|&e| (e / sum) as f32).collect()
}

/// The `k` most probable classes of one row of logits, most probable first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<ClassScore> {
    let probs = softmax(logits);
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k)
        .map(|index| ClassScore {
            index,
            prob: probs[index],
        })
        .collect()
}

/// Index of the largest logit (the top-1 class).
pub fn argmax(logits: &[f32]) -> usize {
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_definition() {
        let z = [1.0f32, 2.0, 3.0, -1.0];
        let p = softmax(&z);
        let denom: f64 = z.iter().map(|&v| f64::from(v).exp()).sum();
        for (pi, &zi) in p.iter().zip(&z) {
            assert!((f64::from(*pi) - f64::from(zi).exp() / denom).abs() < 1e-6);
        }
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn softmax_is_stable_for_large_logits() {
        let p = softmax(&[1000.0, 1000.0]);
        assert_eq!(p, vec![0.5, 0.5]);
    }

    #[test]
    fn top_k_orders_by_probability() {
        let t = top_k(&[0.1, 5.0, 3.0, 4.0], 3);
        assert_eq!(t.iter().map(|c| c.index).collect::<Vec<_>>(), vec![1, 3, 2]);
        assert!(t[0].prob > t[1].prob && t[1].prob > t[2].prob);
        assert_eq!(argmax(&[0.1, 5.0, 3.0, 4.0]), 1);
    }
}
