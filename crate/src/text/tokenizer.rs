//! Text to token ids and back: the `tokenizers` crate, built from a `tokenizer.json` or from a
//! GGUF vocabulary so that it gives llama.cpp's ids (byte-level BPE, `gpt2`, and SentencePiece,
//! `llama`), plus a streaming detokenizer.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::format::gguf::Value;

/// Control tokens that end a turn in the chat formats we know of (llama.cpp's end-of-generation set).
const END_OF_TURN_TEXTS: [&str; 7] =
    ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|end_of_text|>"];

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;
const TOKEN_TYPE_BYTE: i64 = 6;

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

/// A token's `start..end` bytes in the text it came from.
pub type ByteRange = (usize, usize);

/// How the vocabulary writes a token's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// GPT-2's byte-level BPE: each byte is one printable character.
    ByteLevel,
    /// SentencePiece: `▁` for a space, `<0xXX>` tokens for bytes.
    SentencePiece,
    /// A `tokenizer.json` whose decoder is neither.
    Other,
}

/// A tokenizer with the model's special ids.
#[derive(Clone)]
pub struct Tokenizer {
    /// Splits special-token text into special ids.
    parsing: tokenizers::Tokenizer,
    /// Treats special-token text as plain text.
    plain: tokenizers::Tokenizer,
    bos: Option<u32>,
    add_bos: bool,
    /// Ids that end generation.
    end_of_generation: Vec<u32>,
    /// Ids of special (control) tokens: only a chat template's own text may produce them.
    special: BTreeSet<u32>,
    kind: VocabKind,
}

impl Tokenizer {
    /// Builds the tokenizer GGUF `tokenizer.ggml.*` metadata describes: byte-level BPE (`gpt2`,
    /// with the pre-tokenizer `tokenizer.ggml.pre` names) or SentencePiece (`llama`).
    pub fn from_gguf(metadata: &BTreeMap<String, Value>) -> Result<Self> {
        let get = |key: &str| metadata.get(&format!("tokenizer.ggml.{key}"));
        let model = get("model").and_then(Value::as_str).unwrap_or("");
        let tokens = string_array(get("tokens"), "tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match get("token_type").and_then(Value::as_array) {
            Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(Error::Tokenizer(format!("{} token types for {} tokens", types.len(), tokens.len())));
        }
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            vocab.insert(token.to_string(), id as u32);
        }
        let id =
            |key: &str| get(key).and_then(Value::as_u64).map(|v| v as u32).filter(|&v| (v as usize) < tokens.len());
        let inner = match model {
            "gpt2" => Self::byte_level_bpe(metadata, vocab)?,
            "llama" => {
                let scores: Vec<f32> = match get("scores").and_then(Value::as_array) {
                    Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
                    None => return Err(Error::Tokenizer("tokenizer.ggml.scores is missing".into())),
                };
                if scores.len() != tokens.len() {
                    return Err(Error::Tokenizer(format!("{} scores for {} tokens", scores.len(), tokens.len())));
                }
                let space_prefix = get("add_space_prefix").and_then(Value::as_bool).unwrap_or(true);
                let unknown = id("unknown_token_id").map(|i| tokens[i as usize]);
                Self::sentencepiece(&tokens, &scores, &types, vocab, unknown, space_prefix)?
            }
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.model {other:?} is not supported (byte-level BPE \"gpt2\" or SentencePiece \"llama\")"
                )));
            }
        };
        Self::with_vocabulary_tokens(inner, &tokens, &types, metadata)
    }

    /// Byte-level BPE from GGUF merges, with the pre-tokenizer `tokenizer.ggml.pre` names.
    fn byte_level_bpe(
        metadata: &BTreeMap<String, Value>,
        vocab: tokenizers::models::bpe::Vocab,
    ) -> Result<tokenizers::Tokenizer> {
        let get = |key: &str| metadata.get(&format!("tokenizer.ggml.{key}"));
        let merges = string_array(get("merges"), "tokenizer.ggml.merges")?
            .iter()
            .map(|m| {
                // llama.cpp splits at the first space after the first character.
                let split = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i);
                match split {
                    Some(i) => Ok((m[..i].to_string(), m[i + 1..].to_string())),
                    None => Err(Error::Tokenizer(format!("merge {m:?} has no space"))),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(false)
            .build()
            .map_err(|e| Error::Tokenizer(format!("BPE: {e}")))?;

        let pre = get("pre").and_then(Value::as_str).unwrap_or("default");
        let patterns = super::pre::patterns(pre).ok_or_else(|| {
            let known: Vec<&str> =
                super::pre::PRE_TOKENIZERS.iter().flat_map(|(names, _)| names.iter().copied()).collect();
            Error::Tokenizer(format!("pre-tokenizer {pre:?} is not supported (known: {})", known.join(", ")))
        })?;
        let mut steps = patterns
            .iter()
            .map(|&pattern| {
                Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false)
                    .map(PreTokenizerWrapper::Split)
                    .map_err(|e| Error::Tokenizer(format!("pre-tokenizer {pre:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)));
        let pre_tokenizer = Sequence::new(steps);
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner
            .with_pre_tokenizer(Some(pre_tokenizer))
            .with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        Ok(inner)
    }

    /// SentencePiece BPE as llama.cpp runs it (`llm_tokenizer_spm`): spaces become `▁` (one
    /// put first when `add_space_prefix`), the text is split into characters, and the adjacent
    /// pair whose concatenation is a token with the highest score merges first; characters
    /// with no token become their UTF-8 bytes' `<0xXX>` tokens. As a `tokenizers` BPE: every
    /// split of every token into two tokens is a merge, ranked by the merged token's score
    /// (llama.cpp breaks ties leftmost; a BPE rank cannot, so equal scores rank by id: in the
    /// vocabularies seen, every normal token's score is distinct).
    fn sentencepiece(
        tokens: &[&str],
        scores: &[f32],
        types: &[i64],
        vocab: tokenizers::models::bpe::Vocab,
        unknown: Option<&str>,
        space_prefix: bool,
    ) -> Result<tokenizers::Tokenizer> {
        use tokenizers::decoders::byte_fallback::ByteFallback;
        use tokenizers::decoders::fuse::Fuse;
        use tokenizers::decoders::strip::Strip;
        use tokenizers::normalizers::{Prepend, Replace};
        use tokenizers::{DecoderWrapper, NormalizerWrapper};

        let mut candidates: Vec<(f32, u32, usize)> = Vec::new();
        for (id, (token, &ty)) in tokens.iter().zip(types).enumerate() {
            if ty == TOKEN_TYPE_BYTE {
                continue;
            }
            for (at, _) in token.char_indices().skip(1) {
                if vocab.contains_key(&token[..at]) && vocab.contains_key(&token[at..]) {
                    candidates.push((scores[id], id as u32, at));
                }
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let merges = candidates
            .into_iter()
            .map(|(_, id, at)| {
                let token = tokens[id as usize];
                (token[..at].to_string(), token[at..].to_string())
            })
            .collect();
        let mut bpe = BPE::builder().vocab_and_merges(vocab, merges).ignore_merges(false).byte_fallback(true);
        if let Some(unknown) = unknown {
            bpe = bpe.unk_token(unknown.to_string());
        }
        let bpe = bpe.build().map_err(|e| Error::Tokenizer(format!("SentencePiece BPE: {e}")))?;

        let replace = |from: &str, to: &str| Replace::new(from, to).map_err(|e| Error::Tokenizer(e.to_string()));
        let mut normalizers = vec![NormalizerWrapper::Replace(replace(" ", SPM_SPACE)?)];
        let mut decoders = vec![
            DecoderWrapper::Replace(replace(SPM_SPACE, " ")?),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
        ];
        if space_prefix {
            normalizers.push(NormalizerWrapper::Prepend(Prepend::new(SPM_SPACE.into())));
            decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
        }
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner
            .with_normalizer(Some(tokenizers::normalizers::Sequence::new(normalizers)))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_decoder(Some(tokenizers::decoders::sequence::Sequence::new(decoders)));
        Ok(inner)
    }

    /// Adds the vocabulary's control and user-defined tokens to `inner`, and the special ids.
    fn with_vocabulary_tokens(
        mut inner: tokenizers::Tokenizer,
        tokens: &[&str],
        types: &[i64],
        metadata: &BTreeMap<String, Value>,
    ) -> Result<Self> {
        let get = |key: &str| metadata.get(&format!("tokenizer.ggml.{key}"));
        // Control tokens are special (kept as text unless parsing specials); user-defined ones
        // always match, in the text as written (before any normalizer), as in llama.cpp.
        let (mut special, mut user) = (Vec::new(), Vec::new());
        for (token, &ty) in tokens.iter().zip(types) {
            match ty {
                TOKEN_TYPE_CONTROL => special.push(AddedToken::from(token.to_string(), true)),
                TOKEN_TYPE_USER_DEFINED => user.push(AddedToken::from(token.to_string(), false).normalized(false)),
                _ => {}
            }
        }
        inner.add_special_tokens(special).map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.add_tokens(user).map_err(|e| Error::Tokenizer(e.to_string()))?;

        let id =
            |key: &str| get(key).and_then(Value::as_u64).map(|v| v as u32).filter(|&v| (v as usize) < tokens.len());
        let mut end_of_generation: Vec<u32> =
            [id("eos_token_id"), id("eot_token_id"), id("eom_token_id")].into_iter().flatten().collect();
        for (i, (token, ty)) in tokens.iter().zip(types).enumerate() {
            if *ty == TOKEN_TYPE_CONTROL && END_OF_TURN_TEXTS.contains(token) {
                end_of_generation.push(i as u32);
            }
        }
        let add_bos = get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
        let kind = match get("model").and_then(Value::as_str) {
            Some("llama") => VocabKind::SentencePiece,
            _ => VocabKind::ByteLevel,
        };
        Self::new(inner, id("bos_token_id"), add_bos, end_of_generation, kind)
    }

    /// Loads a Hugging Face `tokenizer.json`; `eos_ids` come from `config.json` or
    /// `tokenizer_config.json`.
    pub fn from_json(json: &[u8], bos: Option<u32>, add_bos: bool, eos_ids: &[u32]) -> Result<Self> {
        // Parsed to a value first: the crate's own streaming deserializers panic on some
        // malformed input (`expect("Helper")` in its decoders), which would trap a browser.
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        let decoder = &value["decoder"];
        let kind = match decoder["type"].as_str() {
            Some("ByteLevel") => VocabKind::ByteLevel,
            Some("Sequence")
                if decoder["decoders"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| d["type"].as_str() == Some("ByteFallback"))) =>
            {
                VocabKind::SentencePiece
            }
            _ => VocabKind::Other,
        };
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(value).map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        let mut end_of_generation = eos_ids.to_vec();
        for text in END_OF_TURN_TEXTS {
            if let Some(id) = inner.get_added_vocabulary().token_to_id(text, inner.get_model()) {
                end_of_generation.push(id);
            }
        }
        Self::new(inner, bos, add_bos, end_of_generation, kind)
    }

    fn new(
        parsing: tokenizers::Tokenizer,
        bos: Option<u32>,
        add_bos: bool,
        mut end_of_generation: Vec<u32>,
        kind: VocabKind,
    ) -> Result<Self> {
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        if end_of_generation.is_empty() {
            return Err(Error::Tokenizer("no end-of-sequence token".into()));
        }
        let mut plain = parsing.clone();
        plain.set_encode_special_tokens(true);
        let special = parsing
            .get_added_vocabulary()
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&id, _)| id)
            .collect();
        Ok(Self { parsing, plain, bos, add_bos, end_of_generation, special, kind })
    }

    /// Token ids of `text`. With `parse_special`, special-token text such as `<|im_start|>`
    /// becomes its special id; without, it is tokenized as plain text. Adds BOS only where
    /// the model asks for it (`add_bos`).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let tokenizer = if parse_special { &self.parsing } else { &self.plain };
        let encoding = tokenizer.encode_fast(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(self.added_bos().into_iter().chain(encoding.get_ids().iter().copied()).collect())
    }

    /// Like [`Self::encode`] with `parse_special`, also giving each token's byte range in
    /// `text` (empty for an added BOS).
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<ByteRange>)> {
        let encoding = self.parsing.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let bos = self.added_bos();
        let ids = bos.into_iter().chain(encoding.get_ids().iter().copied()).collect();
        let offsets = bos.map(|_| (0, 0)).into_iter().chain(encoding.get_offsets().iter().copied()).collect();
        Ok((ids, offsets))
    }

    /// A rendered chat prompt as token ids with their byte ranges: special-token text becomes
    /// a special id only outside `content` (the byte ranges of message contents), so that a
    /// message can never forge a turn. Without special-token text inside `content` this is
    /// exactly [`Self::encode_with_offsets`]; with it, the text between the template's own
    /// special tokens is encoded as plain text, which is what the tokenizer does to the text
    /// between special tokens anyway.
    pub fn encode_chat(&self, text: &str, content: &[Range<usize>]) -> Result<(Vec<u32>, Vec<ByteRange>)> {
        let (ids, offsets) = self.encode_with_offsets(text)?;
        let in_content = |&(s, e): &ByteRange| s < e && content.iter().any(|r| s < r.end && r.start < e);
        let forged = |(id, range): (&u32, &ByteRange)| self.special.contains(id) && in_content(range);
        if !ids.iter().zip(&offsets).any(forged) {
            return Ok((ids, offsets));
        }
        let mut out_ids: Vec<u32> = self.added_bos().into_iter().collect();
        let mut out_offsets: Vec<ByteRange> = out_ids.iter().map(|_| (0, 0)).collect();
        let plain = |from: usize, to: usize, ids: &mut Vec<u32>, offsets: &mut Vec<ByteRange>| -> Result<()> {
            if from < to {
                let e = self.plain.encode(&text[from..to], false).map_err(|e| Error::Tokenizer(e.to_string()))?;
                ids.extend_from_slice(e.get_ids());
                offsets.extend(e.get_offsets().iter().map(|&(s, t)| (s + from, t + from)));
            }
            Ok(())
        };
        let mut cursor = 0;
        for (&id, &(s, e)) in ids.iter().zip(&offsets) {
            if s < e && self.special.contains(&id) && !in_content(&(s, e)) {
                plain(cursor, s, &mut out_ids, &mut out_offsets)?;
                out_ids.push(id);
                out_offsets.push((s, e));
                cursor = e;
            }
        }
        plain(cursor, text.len(), &mut out_ids, &mut out_offsets)?;
        Ok((out_ids, out_offsets))
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// The BOS id encoding puts first, where the model asks for one.
    fn added_bos(&self) -> Option<u32> {
        self.bos.filter(|_| self.add_bos)
    }

    /// Text of `ids`; special tokens are skipped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.parsing.decode(ids, skip_special).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.parsing.get_vocab_size(true)
    }

    /// How the vocabulary writes bytes.
    pub fn vocab_kind(&self) -> VocabKind {
        self.kind
    }

    /// The bytes `id` stands for in text (a special token: its text): a byte-level token's
    /// characters mapped back to bytes, a SentencePiece `<0xXX>` its byte and `▁` a space. A
    /// token that is not valid UTF-8 on its own (part of a character) has such bytes.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let text = self.token_text(id)?;
        if self.is_special(id) {
            return Some(text.into_bytes());
        }
        Some(match self.kind {
            VocabKind::ByteLevel => {
                // An added (user-defined) token is stored as written, not byte-mapped.
                let map = byte_level_chars();
                let mapped: Option<Vec<u8>> = text.chars().map(|c| map.get(&c).copied()).collect();
                mapped.unwrap_or_else(|| text.into_bytes())
            }
            VocabKind::SentencePiece | VocabKind::Other => match sentencepiece_byte(&text) {
                Some(byte) => vec![byte],
                None => text.replace(SPM_SPACE, " ").into_bytes(),
            },
        })
    }

    /// The token's entry in the vocabulary, as stored (byte-level or SentencePiece pieces).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.parsing.id_to_token(id)
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Every id that ends generation, sorted.
    pub fn end_of_generation(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// The tokenizer as a Hugging Face `tokenizer.json` (special ids are kept separately).
    pub fn to_json(&self) -> Result<String> {
        self.parsing.to_string(false).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The first end-of-generation id, which chat templates call `eos_token`.
    pub fn eos(&self) -> u32 {
        self.end_of_generation[0]
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }
}

/// `<0xAB>` → 0xAB.
fn sentencepiece_byte(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's byte-level alphabet: the character each byte is written as in the vocabulary.
fn byte_level_chars() -> &'static std::collections::HashMap<char, u8> {
    static MAP: std::sync::OnceLock<std::collections::HashMap<char, u8>> = std::sync::OnceLock::new();
    MAP.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut next = 256u32;
        let mut map = std::collections::HashMap::with_capacity(256);
        for b in 0..=255u8 {
            let c = if printable(b) {
                char::from(b)
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap_or(char::REPLACEMENT_CHARACTER)
            };
            map.insert(c, b);
        }
        map
    })
}

fn string_array<'a>(value: Option<&'a Value>, key: &str) -> Result<Vec<&'a str>> {
    let array =
        value.and_then(Value::as_array).ok_or_else(|| Error::Tokenizer(format!("{key} is missing or not an array")))?;
    array.iter().map(|v| v.as_str().ok_or_else(|| Error::Tokenizer(format!("{key} holds a non-string")))).collect()
}

/// Turns a stream of token ids into text pieces that never split a UTF-8 character.
///
/// Byte-level tokens can end inside a multi-byte character; the decoder then yields U+FFFD.
/// Text is held back until the pending tokens decode to whole characters (the scheme of
/// Hugging Face's text-generation-inference: decode a short window, emit what it added).
#[derive(Clone, Debug, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl TextStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one id and returns the text it completes (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let after = tokenizer.decode(&self.ids[self.prefix_offset..], true)?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') && after.starts_with(&before) {
            let text = after[before.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(text)
        } else {
            Ok(String::new())
        }
    }

    /// Returns whatever is still held back (a dangling partial character becomes U+FFFD).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        let before = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let after = tokenizer.decode(&self.ids[self.prefix_offset..], true)?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(after.strip_prefix(before.as_str()).unwrap_or(&after).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SentencePiece vocabulary: specials, the 256 byte tokens, and pieces whose scores
    /// decide the merges.
    fn spm(space_prefix: bool, pieces: &[(&str, f32)]) -> Result<Tokenizer> {
        let mut tokens: Vec<(String, f32, i64)> = vec![
            ("<unk>".into(), 0.0, 2),
            ("<s>".into(), 0.0, TOKEN_TYPE_CONTROL),
            ("</s>".into(), 0.0, TOKEN_TYPE_CONTROL),
        ];
        tokens.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, TOKEN_TYPE_BYTE)));
        tokens.extend(pieces.iter().map(|&(p, s)| (p.to_string(), s, 1)));
        let array = |f: &dyn Fn(&(String, f32, i64)) -> Value| Value::Array(tokens.iter().map(f).collect());
        let metadata: BTreeMap<String, Value> = [
            ("model", Value::String("llama".into())),
            ("tokens", array(&|t| Value::String(t.0.clone()))),
            ("scores", array(&|t| Value::F32(t.1))),
            ("token_type", array(&|t| Value::I32(t.2 as i32))),
            ("bos_token_id", Value::U32(1)),
            ("eos_token_id", Value::U32(2)),
            ("unknown_token_id", Value::U32(0)),
            ("add_bos_token", Value::Bool(true)),
            ("add_space_prefix", Value::Bool(space_prefix)),
        ]
        .into_iter()
        .map(|(k, v)| (format!("tokenizer.ggml.{k}"), v))
        .collect();
        Tokenizer::from_gguf(&metadata)
    }

    /// Ids of pieces after the 259 specials and bytes.
    const P: u32 = 259;

    #[test]
    fn sentencepiece_merges_the_best_scored_pair_first_and_falls_back_to_bytes() {
        // "abc": "ab" (-1) outscores "bc" (-2), then "ab"+"c" makes nothing, so [ab, c];
        // with "bc" better, [a, bc]. "é" has no piece: its two UTF-8 bytes.
        let pieces = [
            ("a", -5.0),
            ("b", -5.0),
            ("c", -5.0),
            ("ab", -1.0),
            ("bc", -2.0),
            ("\u{2581}", -3.0),
            ("\u{2581}a", -0.5),
        ];
        let t = spm(false, &pieces).unwrap();
        assert_eq!(t.encode("abc", false).unwrap(), [1, P + 3, P + 2]);
        assert_eq!(t.encode("abc é", false).unwrap(), [1, P + 3, P + 2, P + 5, 3 + 0xC3, 3 + 0xA9]);
        assert_eq!(t.encode(" abc", false).unwrap(), [1, P + 6, P + 4], "▁a first (-0.5), then bc");
        assert_eq!(t.decode(&[1, P + 6, P + 4, P + 5, 3 + 0xC3, 3 + 0xA9], true).unwrap(), " abc é");
        let swapped = [("a", -5.0), ("b", -5.0), ("c", -5.0), ("ab", -2.0), ("bc", -1.0)];
        assert_eq!(spm(false, &swapped).unwrap().encode("abc", false).unwrap(), [1, P, P + 4]);
        // With a space prefix, "abc" is "▁abc": ▁a, then bc; decoding drops the prefix.
        let t = spm(true, &pieces).unwrap();
        assert_eq!(t.encode("abc", false).unwrap(), [1, P + 6, P + 4]);
        assert_eq!(t.decode(&[P + 6, P + 4], true).unwrap(), "abc");
    }

    #[test]
    fn byte_level_alphabet_covers_every_byte_once() {
        let map = byte_level_chars();
        assert_eq!(map.len(), 256);
        assert_eq!((map[&'Ġ'], map[&'Ċ'], map[&'a']), (b' ', b'\n', b'a'));
        let mut bytes: Vec<u8> = map.values().copied().collect();
        bytes.sort_unstable();
        assert_eq!(bytes, (0..=255).collect::<Vec<u8>>());
    }

    #[test]
    fn sentencepiece_byte_tokens() {
        assert_eq!(sentencepiece_byte("<0x0A>"), Some(b'\n'));
        assert_eq!(sentencepiece_byte("<0xFF>"), Some(0xFF));
        assert_eq!(sentencepiece_byte("<0x1>"), None);
        assert_eq!(sentencepiece_byte("<0xZZ>"), None);
        assert_eq!(sentencepiece_byte("hello"), None);
    }

    #[test]
    fn a_sentencepiece_vocabulary_without_scores_is_refused() {
        let mut metadata = BTreeMap::new();
        metadata.insert("tokenizer.ggml.model".to_string(), Value::String("llama".into()));
        metadata.insert("tokenizer.ggml.tokens".to_string(), Value::Array(vec![Value::String("a".into())]));
        let err = Tokenizer::from_gguf(&metadata).err().expect("refused");
        assert!(err.to_string().contains("scores"), "{err}");
    }
}
