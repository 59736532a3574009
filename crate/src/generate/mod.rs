//! Generation on a loaded [`Engine`](crate::Engine): a session's prefill and decode loop, a
//! batch of conversations, the sampler (with its grammar, logit bias and log-probabilities), and
//! the optional techniques (speculative decoding,
//! early exit).

pub mod batch;
pub mod early_exit;
pub(crate) mod emit;
pub mod logprobs;
pub mod sampler;
pub mod session;
pub mod speculative;
pub mod types;
