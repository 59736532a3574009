//! Tools over a loaded model that are not generation: scoring (perplexity), weight pruning,
//! and kernel benchmarks.

pub mod bench;
pub mod scoring;
pub mod weight_pruning;
