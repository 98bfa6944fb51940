//! Building the optimized variants from the baseline ResNet50: structured channel pruning with
//! least-squares reconstruction ([`prune`]), 2:4 semi-structured sparsity by SparseGPT ([`sparse`]) and
//! static INT8 post-training quantization ([`quant`]), all one-shot on calibration photos, plus the
//! statistics correction after each compression step ([`correct`]), the
//! pure-Rust forward pass ([`forward`]), layer Hessians ([`hessian`]) and order-fixed parallel sums
//! ([`ordered`]) they share.

pub mod block;
pub mod build;
pub mod correct;
pub mod forward;
pub mod hessian;
pub mod ordered;
pub mod pipeline;
pub mod prune;
pub mod quant;
pub mod report;
pub mod sparse;
pub mod spdy;
