//! The variant registry: the one table of what inferscope serves.

use serde::{Deserialize, Serialize};

/// Numeric format of a variant's weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    Fp32,
    Int8,
}

/// One ResNet50 variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantSpec {
    /// Stable id, also the KServe v2 model name.
    pub id: &'static str,
    /// File name inside the models directory.
    pub file: &'static str,
    /// Short title for the page.
    pub title: &'static str,
    /// One line on what was done to the model.
    pub summary: &'static str,
    pub precision: Precision,
}

/// Every variant, baseline first.
pub const VARIANTS: [VariantSpec; 4] = [
    VariantSpec {
        id: "resnet50-baseline",
        file: "resnet50-baseline.onnx",
        title: "Baseline",
        summary: "ResNet50 v1, ImageNet weights, FP32, BatchNorm folded",
        precision: Precision::Fp32,
    },
    VariantSpec {
        id: "resnet50-pruned",
        file: "resnet50-pruned.onnx",
        title: "Pruned",
        summary: "Structured channel pruning to ≤70% FLOPs, least-squares reconstruction",
        precision: Precision::Fp32,
    },
    VariantSpec {
        id: "resnet50-sparse24",
        file: "resnet50-sparse24.onnx",
        title: "2:4 sparse",
        summary: "2:4 semi-structured sparsity chosen and compensated by SparseGPT",
        precision: Precision::Fp32,
    },
    VariantSpec {
        id: "resnet50-int8",
        file: "resnet50-int8.onnx",
        title: "INT8",
        summary: "Static INT8 quantization (QDQ, per-channel weights, calibrated activations)",
        precision: Precision::Int8,
    },
];

/// The unmodified model every other variant is built from.
pub const BASELINE: &VariantSpec = &VARIANTS[0];
/// Structured channel pruning.
pub const PRUNED: &VariantSpec = &VARIANTS[1];
/// 2:4 semi-structured sparsity (SparseGPT).
pub const SPARSE24: &VariantSpec = &VARIANTS[2];
/// Static INT8 quantization.
pub const INT8: &VariantSpec = &VARIANTS[3];

/// Built by `build-variants` for comparison only (in the report, not served): 2:4 by magnitude,
/// without SparseGPT's compensation.
pub const SPARSE24_MAGNITUDE: VariantSpec = VariantSpec {
    id: "resnet50-sparse24-magnitude",
    file: "resnet50-sparse24-magnitude.onnx",
    title: "2:4 magnitude",
    summary: "2:4 by weight magnitude, no compensation (comparison only)",
    precision: Precision::Fp32,
};

/// The variant with this id.
pub fn by_id(id: &str) -> Option<&'static VariantSpec> {
    VARIANTS.iter().find(|v| v.id == id)
}
