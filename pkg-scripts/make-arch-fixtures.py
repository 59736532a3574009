#!/usr/bin/env python3
"""Writes, for each architecture hearth runs besides real models, a tiny random GGUF (written
with the `gguf` package's GGUFWriter, f32 weights) and llama.cpp's logits for it at every
position of a fixed token sequence: crate/tests/fixtures/tiny-{arch}.gguf and
crate/tests/fixtures/tiny-{arch}.logits.json. llama.cpp is PyPI's llama-cpp-python, built once
into the cached environment `pkg-scripts/bench-cpu.sh` makes. Run once; the output is committed.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_env import ROOT, byte_chars, enter  # noqa: E402

OUT = ROOT / "crate" / "tests" / "fixtures"
TOKENS = [5, 77, 140, 9, 201, 33, 250, 18, 64, 120]

enter(__file__)

import llama_cpp  # noqa: E402
import numpy as np  # noqa: E402
from gguf import GGUFWriter  # noqa: E402



def write(arch: str, path: Path, rng, head_dim=None, longrope=False) -> None:
    d, layers, heads, kv_heads, ff = 32, 2, 4, 2, 64
    if arch == "gemma3":
        # Six layers: five with a sliding window of 4 tokens (RoPE base 10,000, llama.cpp's
        # fixed local base), the sixth global (base 1,000,000).
        layers = 6
    hd = head_dim or d // heads
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he"]
    vocab = specials + byte_chars() + [m.replace(" ", "") for m in merges]
    w = GGUFWriter(str(path), arch=arch)
    w.add_name(f"tiny {arch}")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(1e6 if arch == "gemma3" else 10000.0)
    if arch == "gemma3":
        w.add_sliding_window(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    if head_dim:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if longrope:
        # Phi-3.5's LongRoPE as llama.cpp's converter writes it: the original context, the
        # attention factor, and a divisor per frequency pair for short and for long contexts.
        w.add_rope_scaling_orig_ctx_len(128)
        w.add_rope_scaling_attn_factors(1.15)
    if arch == "phi3":
        # Phi-3's own kind of vocabulary (llama.cpp's Phi-3 loader wants SentencePiece):
        # <unk>, <s>, </s>, the 256 byte tokens, three pieces, and its end-of-turn token.
        vocab = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581t", "he", "\u2581the", "<|end|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"]
        w.add_tokenizer_model("llama")
        w.add_token_list(vocab)
        w.add_token_types([2, 3, 3] + [6] * 256 + [1, 1, 1, 3, 3, 3, 3, 3])
        w.add_token_scores([0.0, 0.0, 0.0] + [0.0] * 256 + [-1.0, -2.0, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0])
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(vocab)
        w.add_token_types([3] * len(specials) + [1] * (len(vocab) - len(specials)))
        w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)

    def tensor(name, shape, scale, offset=0.0):
        w.add_tensor(name, (offset + scale * rng.standard_normal(shape)).astype(np.float32))

    lin = lambda fan_in: 1.0 / np.sqrt(fan_in)
    tensor("token_embd.weight", (len(vocab), d), 1.0)
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", (d,), 0.1, 1.0)
        if arch == "phi3":  # Q, K and V in one matrix
            tensor(f"blk.{i}.attn_qkv.weight", ((heads + 2 * kv_heads) * hd, d), lin(d))
        else:
            tensor(f"blk.{i}.attn_q.weight", (heads * hd, d), lin(d))
            tensor(f"blk.{i}.attn_k.weight", (kv_heads * hd, d), lin(d))
            tensor(f"blk.{i}.attn_v.weight", (kv_heads * hd, d), lin(d))
        if arch in ("qwen3", "gemma3"):
            tensor(f"blk.{i}.attn_q_norm.weight", (hd,), 0.3, 1.0)
            tensor(f"blk.{i}.attn_k_norm.weight", (hd,), 0.3, 1.0)
        if arch == "qwen2":
            tensor(f"blk.{i}.attn_q.bias", (heads * hd,), 0.5)
            tensor(f"blk.{i}.attn_k.bias", (kv_heads * hd,), 0.5)
            tensor(f"blk.{i}.attn_v.bias", (kv_heads * hd,), 0.5)
        tensor(f"blk.{i}.attn_output.weight", (d, heads * hd), lin(heads * hd))
        tensor(f"blk.{i}.ffn_norm.weight", (d,), 0.1, 1.0)
        if arch == "phi3":  # gate rows, then up rows
            tensor(f"blk.{i}.ffn_up.weight", (2 * ff, d), lin(d))
        else:
            tensor(f"blk.{i}.ffn_gate.weight", (ff, d), lin(d))
            tensor(f"blk.{i}.ffn_up.weight", (ff, d), lin(d))
        tensor(f"blk.{i}.ffn_down.weight", (d, ff), lin(ff))
        if arch == "gemma3":
            tensor(f"blk.{i}.post_attention_norm.weight", (d,), 0.1, 1.0)
            tensor(f"blk.{i}.post_ffw_norm.weight", (d,), 0.1, 1.0)
    if longrope:
        w.add_tensor("rope_factors_short.weight", (1.0 + 2.0 * rng.random(hd // 2)).astype(np.float32))
        w.add_tensor("rope_factors_long.weight", (4.0 + 20.0 * rng.random(hd // 2)).astype(np.float32))
    tensor("output_norm.weight", (d,), 0.1, 1.0)
    if arch != "gemma3":  # Gemma ties its head to the embedding
        tensor("output.weight", (len(vocab), d), lin(d))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


rng = np.random.default_rng(20261201)
# llama-hd12: heads of 12 (queries 48 wide) beside a d_model of 32, as key_length states them.
FIXTURES = [
    ("llama", "llama", None),
    ("qwen2", "qwen2", None),
    ("llama-hd12", "llama", 12),
    ("qwen3", "qwen3", 12),
    ("gemma3", "gemma3", 16),
    ("phi3", "phi3", None),
    ("phi3-longrope", "phi3", None),
]


def logits(path: Path, n_ctx: int):
    model = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, n_threads=1, verbose=False)
    model.eval(TOKENS)
    return [[float(f"{v:.8g}") for v in model.scores[i]] for i in range(len(TOKENS))]


for label, arch, head_dim in FIXTURES:
    gguf_path = OUT / f"tiny-{label}.gguf"
    longrope = label.endswith("longrope")
    if label == "phi3-longrope":
        # Its own generator, so that adding it left the other fixtures byte-identical.
        write(arch, gguf_path, np.random.default_rng(20261202), head_dim, longrope)
    else:
        write(arch, gguf_path, rng, head_dim)
    source = f"llama-cpp-python {llama_cpp.__version__} on the CPU, f32 weights, logits_all"
    out = {"source": source, "tokens": TOKENS, "logits": logits(gguf_path, 64)}
    if longrope:
        # A context past the original 128 takes the long factors (llama.cpp chooses by n_ctx).
        out["logits_long"] = logits(gguf_path, 256)
        out["source"] += "; logits at n_ctx 64 (short factors), logits_long at n_ctx 256 (long)"
    (OUT / f"tiny-{label}.logits.json").write_text(json.dumps(out) + "\n")
    print(f"wrote {gguf_path} ({gguf_path.stat().st_size} bytes) and its logits")
