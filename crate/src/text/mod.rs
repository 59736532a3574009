//! Text in and out: the tokenizer (and its pre-tokenizer patterns), the chat template, the
//! UTF-8 text stream with stop strings, and prompt pruning to a token budget.

mod pre;
pub mod prompt_pruning;
pub mod template;
pub mod tokenizer;
