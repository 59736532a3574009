//! How many tokens one forward pass takes, per job: the one place these sizes live. Every
//! dispatch of a pass stays far below WebGPU's 65,535 workgroups per dimension at these sizes.

/// Most tokens one pass through the blocks takes: attention dispatches one workgroup row per
/// token and the matmuls one per 8, both far below WebGPU's 65,535 at this size. (Prefill runs
/// in smaller chunks anyway; longer passes come from `logits_all` and evaluation.)
pub const MAX_PASS_TOKENS: usize = 1024;

/// Most prompt tokens one prefill forward pass runs. Between passes the session waits for the
/// device and asks whether to stop, so an abort lands within one chunk; small chunks also keep
/// every kernel's dispatch far below WebGPU's 65,535 workgroups per dimension.
pub const PREFILL_CHUNK: usize = 64;

/// Tokens scored per forward pass by `Session::surprisal` (prompt pruning's scores).
pub const SCORE_CHUNK: usize = 128;

/// Tokens run per forward pass while measuring perplexity; the cache keeps the earlier ones.
pub const EVAL_CHUNK: usize = 128;

/// Tokens of a calibration text that weight pruning at load measures.
pub const CALIBRATION_TOKENS: usize = 512;
