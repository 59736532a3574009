"""Writes a GGUF of a real model's shapes with random weights (speed and memory need no trained
weights): Qwen2.5-3B (qwen2, 36 layers, d_model 2048, FFN 11008, 16 query / 2 KV heads of 128,
vocab 151,936, tied), Qwen2.5-1.5B (28 layers, d_model 1536, FFN 8960, 12 / 2 heads, untied) or
Llama-3.2-3B (llama, 28 layers, d_model 3072, FFN 8192, 24 / 8 heads of 128, tied, with a
`rope_freqs.weight` as llama.cpp writes Llama 3's; its vocabulary is Qwen's 151,936 tokens, not
Llama 3's 128,256, as no Llama tokenizer is reachable here), the tokenizer and chat template
copied from Qwen2.5-Coder-0.5B. `--types q4_0` (the default): every matrix Q4_0; `--types
q4_k_m`: the types llama.cpp's Q4_K_M gives Qwen2.5-1.5B (every matrix Q4_K, the token
embedding too, but `attn_v` and `ffn_down` Q6_K in every other layer, and an untied head Q6_K).
Optionally split in N shards as llama.cpp's gguf-split names them.

Usage: python write_big_model.py SHAPE TOKENIZER_GGUF OUT.gguf [--split N] [--types q4_0|q4_k_m]
Never commit the output: pkg-scripts/bench/big-models.sh writes it under models/.
"""

import argparse
from pathlib import Path

import gguf
import numpy as np

SHAPES = {
    "qwen2.5-3b": dict(layers=36, d=2048, ffn=11008, heads=16, kv_heads=2, head_dim=128, tied=True),
    "qwen2.5-1.5b": dict(layers=28, d=1536, ffn=8960, heads=12, kv_heads=2, head_dim=128, tied=False),
    "llama-3.2-3b": dict(layers=28, d=3072, ffn=8192, heads=24, kv_heads=8, head_dim=128, tied=True, arch="llama"),
}
VOCAB = 151_936
BLOCK, BLOCK_BYTES = 32, 18  # Q4_0: an f16 scale and 16 bytes of 4-bit codes


def q4_0(rng: np.random.Generator, rows: int, cols: int, scale: float) -> np.ndarray:
    """Random Q4_0 blocks of a [rows, cols] matrix: codes uniform, every block's scale `scale`."""
    blocks = rng.integers(0, 256, size=(rows * cols // BLOCK, BLOCK_BYTES), dtype=np.uint8)
    blocks[:, :2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
    return blocks.reshape(rows, cols // BLOCK * BLOCK_BYTES)


def q4_k(rng: np.random.Generator, rows: int, cols: int, scale: float) -> np.ndarray:
    """Random Q4_K super-blocks (144 bytes a 256): d and dmin set so that a weight is about
    `scale`, the 6-bit scales, mins and 4-bit codes uniform."""
    blocks = rng.integers(0, 256, size=(rows * cols // 256, 144), dtype=np.uint8)
    blocks[:, 0:2] = np.frombuffer(np.float16(scale / 400).tobytes(), dtype=np.uint8)
    blocks[:, 2:4] = np.frombuffer(np.float16(scale / 400).tobytes(), dtype=np.uint8)
    return blocks.reshape(rows, cols // 256 * 144)


def q6_k(rng: np.random.Generator, rows: int, cols: int, scale: float) -> np.ndarray:
    """Random Q6_K super-blocks (210 bytes a 256: low and high code bits, 16 int8 scales, d
    last), d set so that a weight is about `scale`."""
    blocks = rng.integers(0, 256, size=(rows * cols // 256, 210), dtype=np.uint8)
    blocks[:, 208:210] = np.frombuffer(np.float16(scale / 2000).tobytes(), dtype=np.uint8)
    return blocks.reshape(rows, cols // 256 * 210)


def matrix_type(name: str, types: str) -> str:
    """The ggml type of matrix `name` under `types` (see the module's doc)."""
    if types == "q4_0":
        return "Q4_0"
    if name == "output.weight":
        return "Q6_K"
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    if name.endswith(("attn_v.weight", "ffn_down.weight")) and layer % 2 == 0:
        return "Q6_K"
    return "Q4_K"


MAKERS = {"Q4_0": q4_0, "Q4_K": q4_k, "Q6_K": q6_k}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("shape", choices=SHAPES)
    p.add_argument("tokenizer")
    p.add_argument("out")
    p.add_argument("--split", type=int, default=1)
    p.add_argument("--types", choices=("q4_0", "q4_k_m"), default="q4_0")
    a = p.parse_args()
    s = SHAPES[a.shape]
    rng = np.random.default_rng(7)
    source = gguf.GGUFReader(a.tokenizer)

    # Embedding, 12 tensors a layer, the head when untied, the final norm.
    arch = s.get("arch", "qwen2")
    biases = arch == "qwen2"
    total = 1 + (12 if biases else 9) * s["layers"] + (0 if s["tied"] else 1) + 1 + (arch == "llama")
    # Split: the writer names the shards from OUT as gguf-split does (OUT-00001-of-0000N.gguf).
    per_shard = -(-total // a.split) if a.split > 1 else 0
    w = gguf.GGUFWriter(Path(a.out), arch, split_max_tensors=per_shard)
    w.add_name(f"random {a.shape}")
    w.add_block_count(s["layers"])
    w.add_context_length(32768)
    w.add_embedding_length(s["d"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_freq_base(500_000.0 if arch == "llama" else 1_000_000.0)
    if arch == "llama":
        w.add_key_length(s["head_dim"])
        w.add_value_length(s["head_dim"])
    w.add_layer_norm_rms_eps(1e-6)
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template"):
        f = source.fields[key]
        w.add_string(key, bytes(f.parts[f.data[0]]).decode())
    tokens = source.fields["tokenizer.ggml.tokens"]
    w.add_token_list([bytes(tokens.parts[i]).decode() for i in tokens.data])
    types = source.fields["tokenizer.ggml.token_type"]
    w.add_token_types([int(types.parts[i][0]) for i in types.data])
    merges = source.fields["tokenizer.ggml.merges"]
    w.add_token_merges([bytes(merges.parts[i]).decode() for i in merges.data])
    for key in ("eos_token_id", "padding_token_id", "bos_token_id"):
        f = source.fields[f"tokenizer.ggml.{key}"]
        w.add_uint32(f"tokenizer.ggml.{key}", int(f.parts[f.data[0]][0]))
    w.add_bool("tokenizer.ggml.add_bos_token", False)

    d, ffn, hd = s["d"], s["ffn"], s["head_dim"]
    q, kv = s["heads"] * hd, s["kv_heads"] * hd
    tensors = [("token_embd.weight", VOCAB, d)]
    for i in range(s["layers"]):
        b = f"blk.{i}"
        tensors += [(f"{b}.attn_q.weight", q, d), (f"{b}.attn_k.weight", kv, d), (f"{b}.attn_v.weight", kv, d),
                    (f"{b}.attn_output.weight", d, q), (f"{b}.ffn_gate.weight", ffn, d),
                    (f"{b}.ffn_up.weight", ffn, d), (f"{b}.ffn_down.weight", d, ffn)]
    if not s["tied"]:
        tensors.append(("output.weight", VOCAB, d))
    for name, rows, cols in tensors:
        # Scale so a row's dot product with a unit activation stays about unit.
        kind = matrix_type(name, a.types)
        w.add_tensor(name, MAKERS[kind](rng, rows, cols, 1.0 / (4.0 * np.sqrt(cols))),
                     raw_dtype=gguf.GGMLQuantizationType[kind])
        if name.endswith("attn_v.weight"):
            i = name.split(".")[1]
            for bias, n in (("attn_q", q), ("attn_k", kv), ("attn_v", kv)) if biases else ():
                w.add_tensor(f"blk.{i}.{bias}.bias", (rng.standard_normal(n) * 0.02).astype(np.float32))
            w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, dtype=np.float32))
            w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    if arch == "llama":
        # Llama 3's RoPE scaling as llama.cpp's converter stores it: a divisor per frequency.
        w.add_tensor("rope_freqs.weight", np.linspace(1.0, 8.0, hd // 2).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


if __name__ == "__main__":
    main()
