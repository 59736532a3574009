//! Model file containers, read as bytes with every offset and size checked: no model knowledge
//! here (what a tensor means is [`crate::load`]'s business).

pub mod gguf;
pub mod split;
