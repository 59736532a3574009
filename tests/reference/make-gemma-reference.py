#!/usr/bin/env python3
"""Writes tests/reference/gemma3-270m-q4_k_m/tokenizer_llamacpp.json: llama.cpp's token ids for
Gemma 3 270M (models/gemma-3-270m-q4_k_m.gguf, from `pkg-scripts/fetch-model.sh gemma3-270m`)
on a set of texts, with BOS as the model asks, plain (`ids`) and with special tokens parsed
(`ids_parse_special`); and the same with `tokenizer.ggml.add_space_prefix` turned on (Llama 2's
and Mistral's SentencePiece setting, `ids_space_prefix*`), from a copy of the file's metadata
written with the `gguf` package. llama.cpp is PyPI's llama-cpp-python, built once into the
cached environment `pkg-scripts/bench/cpu.sh` makes. Run once; the output is committed.
"""
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "bench"))
from llama_env import ROOT, enter  # noqa: E402

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

enter(__file__)

import llama_cpp  # noqa: E402
from gguf import GGUFReader, GGUFValueType, GGUFWriter  # noqa: E402


def with_space_prefix(src: Path, dst: Path) -> None:
    """The metadata of `src` (no tensors), with add_space_prefix set."""
    reader = GGUFReader(src)
    writer = GGUFWriter(dst, arch=str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8"))
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        kind = field.types[0]
        if key == "tokenizer.ggml.add_space_prefix":
            writer.add_bool(key, True)
        elif kind == GGUFValueType.ARRAY and field.types[-1] == GGUFValueType.STRING:
            writer.add_array(key, [bytes(field.parts[i]).decode("utf-8") for i in field.data])
        elif kind == GGUFValueType.ARRAY:
            writer.add_array(key, [field.parts[i][0].item() for i in field.data])
        elif kind == GGUFValueType.STRING:
            writer.add_string(key, bytes(field.parts[field.data[0]]).decode("utf-8"))
        else:
            writer.add_key_value(key, field.parts[field.data[0]][0].item(), kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tokenize(path: Path, text: str, special: bool) -> list:
    model = MODELS.setdefault(path, llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False))
    return model.tokenize(text.encode("utf-8"), add_bos=True, special=special)


MODELS = {}
prefixed = Path(tempfile.mkdtemp()) / "space-prefix.gguf"
with_space_prefix(MODEL, prefixed)
cases = [
    {
        "text": t,
        "ids": tokenize(MODEL, t, False),
        "ids_parse_special": tokenize(MODEL, t, True),
        "ids_space_prefix": tokenize(prefixed, t, False),
        "ids_space_prefix_parse_special": tokenize(prefixed, t, True),
    }
    for t in TEXTS
]
out = {"source": f"llama-cpp-python {llama_cpp.__version__}, vocab_only, add_bos=True", "cases": cases}
path = ROOT / "tests" / "reference" / "gemma3-270m-q4_k_m" / "tokenizer_llamacpp.json"
path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
print(f"wrote {path}")
