//! The byte-level BPE pre-tokenizers a GGUF's `tokenizer.ggml.pre` names, as llama.cpp runs
//! them (`llm_tokenizer_bpe` in llama-vocab.cpp): regexes applied one after another, each match
//! (and each stretch between matches) becoming a piece that merges never cross. One table, the
//! names of each set beside it; the patterns are llama.cpp's own (its adapted forms where it
//! rewrote a tokenizer.json pattern), so that the ids are llama.cpp's.

/// GPT-2's pattern.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's pattern (tiktoken's cl100k): digits in groups of up to three.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// BLOOM's: runs up to whitespace or punctuation.
const BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
/// Mistral's Tekken: words split at case changes, single digits.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// tiktoken's o200k (Phi-4): Tekken's word rule with contractions, digits in threes.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Each set of names and the regexes they split by, in order.
pub(super) const PRE_TOKENIZERS: &[(&[&str], &[&str])] = &[
    // llama.cpp's default, for a file that names none.
    (&["default"], &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]),
    (&["gpt2", "gpt-2", "mpt", "olmo", "jais", "trillion"], &[GPT2]),
    (&["falcon"], &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"]),
    (&["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"], &[r"\p{N}", GPT2]),
    (&["llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "chatglm-bpe"], &[LLAMA3]),
    (&["qwen2", "deepseek-r1-qwen", "stablelm2", "hunyuan", "grok-2"], &[QWEN2]),
    (&["poro-chat", "bloom", "gpt3-finnish"], &[BLOOM]),
    (&["viking"], &[BLOOM, r"\p{N}"]),
    (&["tekken"], &[TEKKEN]),
    (&["gpt-4o", "minimax-m2"], &[GPT4O]),
];

/// The regexes `name` splits by.
pub(super) fn patterns(name: &str) -> Option<&'static [&'static str]> {
    PRE_TOKENIZERS.iter().find(|(names, _)| names.contains(&name)).map(|(_, patterns)| *patterns)
}
