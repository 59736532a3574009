#!/usr/bin/env python3
"""Writes tests/reference/gemma3-270m-q4_k_m/tokenizer_llamacpp.json: llama.cpp's token ids for
Gemma 3 270M (models/gemma-3-270m-q4_k_m.gguf, from `pkg-scripts/fetch-model.sh gemma3-270m`)
on a set of texts, with BOS as the model asks, plain (`ids`) and with special tokens parsed
(`ids_parse_special`). llama.cpp is PyPI's llama-cpp-python, built once into the cached
environment `pkg-scripts/bench-cpu.sh` makes. Run once; the output is committed.
"""
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("HEARTH_CACHE", Path.home() / ".cache" / "hearth")) / "llama-cpp"
MODEL = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
TEXTS = [
    "Water boils at a temperature of",
    "def fibonacci(n):\n    if n == 0:\n        return",
    "  leading spaces and trailing  ",
    "Café, naïve, São Paulo, Zürich — ½ résumé",
    "12345 67.89 3,141,592 and 1e-9",
    "emoji 🙂🚀👩‍👩‍👧 and 汉字 and ελληνικά and русский",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "tab\there\n\nnew lines\r\nand\t\ttabs",
    "",
    " ",
    "a",
    "The quick brown fox jumps over the lazy dog.",
    "<bos> literal and <0x41> and <unused3>",
    "if (x < 10) { return y->z[0] / 2.5f; } // done",
    "   \n\n\n   ",
]

if os.environ.get("HEARTH_LLAMA_VENV") != "1":
    python = VENV / "bin" / "python"
    if not python.exists():
        sys.exit(f"{python} is missing: run pkg-scripts/bench-cpu.sh once to build llama-cpp-python")
    os.execve(str(python), [str(python), __file__], {**os.environ, "HEARTH_LLAMA_VENV": "1"})

import llama_cpp  # noqa: E402

model = llama_cpp.Llama(model_path=str(MODEL), vocab_only=True, verbose=False)
cases = [
    {
        "text": t,
        "ids": model.tokenize(t.encode("utf-8"), add_bos=True, special=False),
        "ids_parse_special": model.tokenize(t.encode("utf-8"), add_bos=True, special=True),
    }
    for t in TEXTS
]
out = {"source": f"llama-cpp-python {llama_cpp.__version__}, vocab_only, add_bos=True", "cases": cases}
path = ROOT / "tests" / "reference" / "gemma3-270m-q4_k_m" / "tokenizer_llamacpp.json"
path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
print(f"wrote {path}")
