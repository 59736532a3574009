//! Constrained output: a JSON schema, any JSON object, a Lark grammar or a regular expression,
//! compiled by [llguidance] against the model's vocabulary into a per-request
//! [`TokenConstraint`] that says, before every token, which tokens may come next.
//!
//! The vocabulary's bytes come from our own tokenizer (not llguidance's tokenizer.json reader,
//! which asserts on input a hostile file controls, and a panic would trap a browser): byte-level
//! BPE maps each character back to its byte, SentencePiece turns `▁` into a space and `<0xXX>`
//! into its byte, and special tokens are marked so that no grammar ever matches their text.
//! The Lark syntax is llguidance's (docs/syntax.md upstream), not XGrammar's EBNF.
//!
//! Hostile schemas and grammars are bounded by llguidance's limits (fuel for the lexer, items
//! per step, grammar size): compiling refuses with `bad_options`, a step over its budget stops
//! the matcher with an error instead of running on.

use std::sync::Arc;

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{InferenceCapabilities, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde::{Deserialize, Serialize};

use super::tokenizer::{Tokenizer, VocabKind};
use crate::error::{Error, Result};

/// What a reply must match. (The browser bindings refuse keys a variant does not have; serde's
/// `deny_unknown_fields` would be lost on the generated TypeScript type.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Grammar {
    /// Any JSON object.
    JsonObject,
    /// JSON valid under this JSON Schema (the keywords llguidance implements; others are
    /// refused when compiled).
    JsonSchema {
        #[cfg_attr(not(target_arch = "wasm32"), ts(type = "unknown"))]
        schema: serde_json::Value,
    },
    /// A Lark grammar in llguidance's syntax.
    Lark { grammar: String },
    /// A regular expression the whole reply matches.
    Regex { regex: String },
}

impl Grammar {
    /// The keys an object of each `type` may have, for the bindings' check.
    pub fn keys(kind: &str) -> Option<&'static [&'static str]> {
        Some(match kind {
            "json_object" => &["type"],
            "json_schema" => &["type", "schema"],
            "lark" => &["type", "grammar"],
            "regex" => &["type", "regex"],
            _ => return None,
        })
    }
}

/// Deepest nesting of objects and arrays a JSON schema may have. Deserializing and compiling a
/// schema recurse once per level, and a browser's wasm stack is small: a hostile schema nested
/// thousands deep must be refused, not trap the engine.
pub const MAX_SCHEMA_DEPTH: usize = 64;

/// How deeply `value`'s objects and arrays nest (a scalar is 0), counted without recursion.
pub fn json_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Object(o) => Box::new(o.values()),
            serde_json::Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// The whitespace JSON may have between its tokens under a schema (and in tool calls): none,
/// a space, or a new line indented by up to 24 spaces. JSON's own (any run of spaces, tabs and
/// newlines anywhere) lets a model wander in it until `max_tokens`: Qwen2.5-Coder-0.5B, greedy,
/// wrote spaces after `"xs":` for 80 tokens.
pub(crate) const JSON_WHITESPACE: &str = "( |\n {0,24})?";

/// `schema` with [`JSON_WHITESPACE`] as its whitespace, unless it says its own (`x-guidance`).
pub(crate) fn bounded_whitespace(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance").or_insert_with(|| serde_json::json!({ "whitespace_pattern": JSON_WHITESPACE }));
    }
    schema
}

/// Largest grammar text accepted (a schema as JSON, a Lark grammar or a regex), before
/// llguidance's own limits apply.
pub const MAX_GRAMMAR_BYTES: usize = 1 << 20;

impl Grammar {
    fn top_level(&self) -> Result<TopLevelGrammar> {
        let bytes = match self {
            Grammar::JsonObject => 0,
            Grammar::JsonSchema { schema } => serde_json::to_string(schema).map_or(usize::MAX, |s| s.len()),
            Grammar::Lark { grammar } => grammar.len(),
            Grammar::Regex { regex } => regex.len(),
        };
        if bytes > MAX_GRAMMAR_BYTES {
            return Err(Error::BadOptions(format!(
                "the grammar is {bytes} bytes, more than the {MAX_GRAMMAR_BYTES} accepted"
            )));
        }
        Ok(match self {
            Grammar::JsonObject => {
                TopLevelGrammar::from_json_schema(bounded_whitespace(serde_json::json!({"type": "object"})))
            }
            Grammar::JsonSchema { schema } => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(Error::BadOptions("a JSON schema must be an object".into()));
                }
                let depth = json_depth(schema);
                if depth > MAX_SCHEMA_DEPTH {
                    return Err(Error::BadOptions(format!(
                        "the JSON schema nests {depth} levels deep, more than the {MAX_SCHEMA_DEPTH} accepted"
                    )));
                }
                TopLevelGrammar::from_json_schema(bounded_whitespace(schema.clone()))
            }
            Grammar::Lark { grammar } => TopLevelGrammar::from_lark(grammar.clone()),
            Grammar::Regex { regex } => TopLevelGrammar::from_regex(regex),
        })
    }

    /// What kind of grammar this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonObject => "JSON object",
            Grammar::JsonSchema { .. } => "JSON schema",
            Grammar::Lark { .. } => "Lark grammar",
            Grammar::Regex { .. } => "regular expression",
        }
    }
}

/// The vocabulary as llguidance sees it: every token's bytes in a trie, and our tokenizer for
/// the text a grammar forces.
struct Vocabulary {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Forced text is plain text: special-token text in it stays text. llguidance indexes
        // its tables with these ids unchecked: an id outside the trie (a hostile tokenizer's
        // added token past its count, say) must never reach it, so such text is tokenized
        // greedily over the trie instead.
        // The ids must also spell `s` exactly (a SentencePiece normalizer may add a space):
        // otherwise the greedy tokenization stands in as well.
        let ids = self.tokenizer.encode(&String::from_utf8_lossy(s), false).unwrap_or_default();
        let inside = ids.iter().all(|&id| id < self.trie.vocab_size() as u32);
        if inside && self.trie.decode_raw(&ids) == s { ids } else { self.trie.greedy_tokenize(s) }
    }
}

/// Compiles grammars for one model: built once per loaded model (the token trie and the
/// lexer's slices take tens of milliseconds), shared by its requests.
pub struct GrammarCompiler {
    factory: ParserFactory,
    vocab: usize,
    /// The end-of-generation id llguidance knows, and every id that ends generation.
    eos: u32,
    ends: Vec<u32>,
}

impl GrammarCompiler {
    /// For `tokenizer`'s vocabulary, in logits of `vocab` entries (ids past the tokenizer's
    /// are never allowed).
    pub fn new(tokenizer: &Tokenizer, vocab: usize) -> Result<Self> {
        let mut words = token_bytes(tokenizer)?;
        words.resize(vocab.max(words.len()), Vec::new());
        if tokenizer.eos() as usize >= words.len() {
            return Err(Error::BadOptions(format!(
                "the end-of-generation token {} is outside the vocabulary of {}",
                tokenizer.eos(),
                words.len()
            )));
        }
        let info = TokRxInfo::new(words.len() as u32, tokenizer.eos());
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Vocabulary { trie, tokenizer: tokenizer.clone() });
        let mut factory = ParserFactory::new(
            &env,
            InferenceCapabilities::default(),
            &llguidance::earley::SlicedBiasComputer::general_slices(),
        )
        .map_err(|e| Error::Tokenizer(format!("building the grammar vocabulary: {e}")))?;
        factory.quiet();
        *factory.limits_mut() = limits();
        let (eos, ends) = (tokenizer.eos(), tokenizer.end_of_generation().to_vec());
        Ok(GrammarCompiler { factory, vocab: words.len(), eos, ends })
    }

    /// A fresh constraint for one reply; `bad_options` naming the problem when the grammar
    /// does not compile.
    pub fn compile(&self, grammar: &Grammar) -> Result<TokenConstraint> {
        let parser = self
            .factory
            .create_parser(grammar.top_level()?)
            .map_err(|e| Error::BadOptions(format!("the {} does not compile: {}", grammar.kind(), first_line(&e))))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::BadOptions(format!("the {} does not compile: {}", grammar.kind(), first_line(&e))));
        }
        Ok(TokenConstraint { matcher, vocab: self.vocab, allowed: Vec::new(), eos: self.eos, ends: self.ends.clone() })
    }
}

/// llguidance's defaults, with errors kept short (they would quote the whole grammar).
fn limits() -> ParserLimits {
    ParserLimits { verbose_errors: false, ..ParserLimits::default() }
}

fn first_line(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(300).collect()
}

/// One reply's grammar state: which tokens may come next, advanced by every token taken.
pub struct TokenConstraint {
    matcher: Matcher,
    vocab: usize,
    /// Scratch: the allowed set of the last mask, one bit per token.
    allowed: Vec<u32>,
    eos: u32,
    /// Every end-of-generation id: each ends a complete reply as `eos` does.
    ends: Vec<u32>,
}

impl TokenConstraint {
    /// Sets the logits of every token the grammar does not allow next to -inf. Once the
    /// grammar is complete only the end-of-generation token is left.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let allowed = self.allowed()?;
        for (i, logit) in logits.iter_mut().enumerate() {
            if allowed.get(i / 32).is_none_or(|w| w >> (i % 32) & 1 == 0) {
                *logit = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// The tokens the grammar allows next, one bit each (bit `i % 32` of word `i / 32`), for
    /// a mask applied elsewhere (on the device). Once the grammar is complete only the
    /// end-of-generation tokens are left; an error when no token is.
    pub fn allowed(&mut self) -> Result<&[u32]> {
        self.allowed.clear();
        if !self.matcher.is_stopped() {
            let mask = self.matcher.compute_mask_or_eos().map_err(|e| self.failure(e))?;
            self.allowed.extend_from_slice(mask.as_slice());
        }
        self.allowed.resize(self.vocab.div_ceil(32), 0);
        if !self.vocab.is_multiple_of(32) {
            // Nothing past the vocabulary.
            let last = self.allowed.len() - 1;
            self.allowed[last] &= (1u32 << (self.vocab % 32)) - 1;
        }
        // Wherever the grammar may end, every end-of-generation token may end it.
        if self.matcher.is_stopped() || self.allows(self.eos) {
            for &end in &self.ends {
                if (end as usize) < self.vocab {
                    self.allowed[end as usize / 32] |= 1 << (end % 32);
                }
            }
        }
        if self.allowed.iter().all(|&w| w == 0) {
            return Err(Error::BadOptions("the grammar allows no token here".into()));
        }
        Ok(&self.allowed)
    }

    /// Whether `token` is allowed by the last [`Self::allowed`].
    fn allows(&self, token: u32) -> bool {
        let i = token as usize;
        self.allowed.get(i / 32).is_some_and(|w| w >> (i % 32) & 1 == 1)
    }

    /// Advances past `token`, which the last mask allowed (an end-of-generation token ends
    /// the grammar as its own end token does).
    pub fn consume(&mut self, token: u32) -> Result<()> {
        if self.matcher.is_stopped() {
            return Ok(());
        }
        let token = if self.ends.contains(&token) { self.eos } else { token };
        self.matcher.consume_token(token).map_err(|e| self.failure(e))
    }

    /// Takes the tokens the grammar forces next (at most `limit`), as the tokenizer would
    /// write their text, and advances past them: the caller feeds them to the model in one
    /// pass instead of a step each. Empty when nothing is forced, or once the grammar ended.
    pub fn forced(&mut self, limit: usize) -> Result<Vec<u32>> {
        if limit == 0 || self.matcher.is_stopped() {
            return Ok(Vec::new());
        }
        let mut tokens = self.matcher.compute_ff_tokens();
        if let Some(e) = self.matcher.get_error() {
            return Err(self.failure(e));
        }
        tokens.truncate(limit);
        // Each is checked as it is taken: a tokenization the grammar would not accept token
        // by token is cut where it stops agreeing, and the rest is left to the mask.
        let taken = self.matcher.try_consume_tokens(&tokens).map_err(|e| self.failure(e))?;
        tokens.truncate(taken);
        Ok(tokens)
    }

    fn failure(&self, e: impl std::fmt::Display) -> Error {
        Error::BadOptions(format!("the grammar failed while generating: {}", first_line(&e)))
    }
}

/// Every token's bytes as the detokenizer would write them; special tokens carry llguidance's
/// marker byte first, so that no grammar matches them.
pub fn token_bytes(tokenizer: &Tokenizer) -> Result<Vec<Vec<u8>>> {
    if tokenizer.vocab_kind() == VocabKind::Other {
        return Err(Error::BadOptions(
            "constrained output needs a byte-level BPE or SentencePiece vocabulary; this tokenizer's decoder is neither"
                .into(),
        ));
    }
    Ok((0..tokenizer.vocab_size() as u32)
        .map(|id| {
            let bytes = tokenizer.token_bytes(id).unwrap_or_default();
            if tokenizer.is_special(id) {
                std::iter::once(TokTrie::SPECIAL_TOKEN_MARKER).chain(bytes).collect()
            } else {
                bytes
            }
        })
        .collect())
}
