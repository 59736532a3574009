//! Text in and out: the tokenizer (and its pre-tokenizer patterns), the chat template, the
//! UTF-8 text stream with stop strings, prompt pruning to a token budget, and the grammars that
//! constrain what a reply may say.

pub mod grammar;
mod pre;
pub mod prompt_pruning;
pub mod template;
pub mod tokenizer;
pub mod tools;
