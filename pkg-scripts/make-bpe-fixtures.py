#!/usr/bin/env python3
"""Writes, for each byte-level BPE pre-tokenizer hearth reads from `tokenizer.ggml.pre`, a tiny
vocabulary-only GGUF (crate/tests/fixtures/tiny-bpe-{pre}.gguf: the 256 byte tokens, a few
specials, and merges chosen so that where the pre-tokenizer splits shows in the ids: digit
runs, contractions, runs of spaces and newlines, letters beside digits and punctuation) and
llama.cpp's ids for a set of texts (crate/tests/fixtures/bpe-pretokenizers.json). llama.cpp is
PyPI's llama-cpp-python, built once into the cached environment `pkg-scripts/bench-cpu.sh`
makes. Run once; the output is committed.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_env import ROOT, byte_chars, enter  # noqa: E402

OUT = ROOT / "crate" / "tests" / "fixtures"
PRES = [
    "default", "gpt-2", "falcon", "smollm", "command-r", "llama-bpe", "dbrx", "qwen2", "stablelm2",
    "bloom", "viking", "tekken", "gpt-4o", "olmo", "chatglm-bpe",
]
TEXTS = [
    "12345 678 9",
    "In 2024, 1234567 people",
    "it's I'M we'll they've DON'T",
    "a  b   c\n\n\nd \n e",
    "tab\tthen  \t two",
    "abc123def 4.5 -6",
    "héllo wörld ünïcode 漢字 ok",
    "x=(y+z)*2; // done!!",
    "   leading and trailing   ",
    "emoji 🙂 ok",
    "HeLLo WORLD camelCaseWord XMLHttpRequest don't",
    "a`b`c $x+y<=z^w~v|u",
    "Hello, world. Wait... what?! 1,234.56",
]

enter(__file__)

import llama_cpp  # noqa: E402
from gguf import GGUFWriter  # noqa: E402



# Merges that cross the boundaries some pre-tokenizers draw: digit groups, a space before
# letters, runs of spaces and newlines, contractions, letters against digits.
MERGES = [
    "1 2", "12 3", "123 4", "4 5", "6 7", "67 8", "2 0", "20 2", "202 4",
    "Ġ Ġ", "ĠĠ Ġ", "Ċ Ċ", "ĊĊ Ċ", "Ġ Ċ", "Ġ a", "Ġ b", "Ġ p", "i t", "' s", "' m", "' M", "' l", "'l l",
    "' v", "'v e", "' T", "a b", "ab c", "c 1", "d e", "de f", "Ġ t", "h e", "Ġt he", "e o", "p l", "pl e",
    "Ġ 1", "Ġ 6", "= (", "! !", "Ġ -", "- 6", "o k",
    # Across case changes (Tekken, o200k) and backticks (falcon):
    "l C", "lC a", "e W", "p R", "L L", "e L", "a `", "` b", "t '", "Ġ W",
]

specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
base = byte_chars()
merged = []
for m in MERGES:
    token = m.replace(" ", "")
    if token not in base and token not in merged:
        merged.append(token)
vocab = specials + base + merged

cases = {}
for pre in PRES:
    path = OUT / f"tiny-bpe-{pre}.gguf"
    w = GGUFWriter(str(path), arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(vocab)
    w.add_token_types([3] * len(specials) + [1] * (len(vocab) - len(specials)))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    try:
        model = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    except ValueError:
        sys.exit(f"llama.cpp does not load the pre-tokenizer {pre!r}")
    cases[pre] = [{"text": t, "ids": model.tokenize(t.encode("utf-8"), add_bos=False, special=False)} for t in TEXTS]
    print(f"wrote {path} ({path.stat().st_size} bytes)")
out = {"source": f"llama-cpp-python {llama_cpp.__version__}, vocab_only, no BOS", "cases": cases}
(OUT / "bpe-pretokenizers.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
