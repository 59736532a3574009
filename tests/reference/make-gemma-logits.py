#!/usr/bin/env python3
"""Writes tests/reference/gemma3-270m-q4_k_m/logits_f32.json and greedy_llamacpp.json for
Gemma 3 270M (models/gemma-3-270m-q4_k_m.gguf, from `pkg-scripts/fetch-model.sh gemma3-270m`).

logits_f32.json: the top-5 logits at every position of a few prompts (one longer than the
512-token sliding window) from an exact f32 forward pass written here in numpy from Gemma 3's
definition (Hugging Face's modeling_gemma3 and llama.cpp's graph agree on it), over weights
dequantized by the `gguf` package: nothing of hearth's code is used.

greedy_llamacpp.json: llama.cpp's 24 greedy tokens after each short prompt, with its own gap
between the top two logits at each step (llama.cpp quantizes activations to 8 bits, so near-ties
may flip).

Prompt ids are llama.cpp's (BOS first, as the model asks). Both tools come from the cached
environment `pkg-scripts/bench/cpu.sh` builds (llama-cpp-python, numpy, gguf). Run once; the
output is committed.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "bench"))
from llama_env import ROOT, enter  # noqa: E402

MODEL = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
OUT = ROOT / "tests" / "reference" / "gemma3-270m-q4_k_m"
SHORT = [
    "Water boils at a temperature of",
    "def fibonacci(n):",
    "The capital of France is",
]
# Longer than the window: the same paragraph repeated, with a question at the end.
PARAGRAPH = (
    "The river rises in the mountains, where snow melts each spring and feeds a hundred small "
    "streams. It runs through forests of pine and birch, past villages whose mills it once "
    "turned, and into a wide valley of farms. There it slows, bends, and floods the fields "
    "in the wettest years, leaving the soil rich and dark. "
)
LONG = PARAGRAPH * 8 + "Where does the river rise? It rises in the"

enter(__file__)

import llama_cpp  # noqa: E402
import numpy as np  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize  # noqa: E402


class Gemma3:
    """An f32 Gemma 3 decoder over the dequantized GGUF weights."""

    def __init__(self, path: Path):
        reader = GGUFReader(path)
        field = lambda key: reader.fields[key].parts[reader.fields[key].data[0]][0].item()
        self.d = field("gemma3.embedding_length")
        self.layers = field("gemma3.block_count")
        self.heads = field("gemma3.attention.head_count")
        self.kv_heads = field("gemma3.attention.head_count_kv")
        self.hd = field("gemma3.attention.key_length")
        self.eps = field("gemma3.attention.layer_norm_rms_epsilon")
        self.theta = field("gemma3.rope.freq_base")
        self.window = field("gemma3.attention.sliding_window")
        self.w = {}
        for t in reader.tensors:
            shape = [int(n) for n in reversed(t.shape)]
            self.w[t.name] = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)

    def norm(self, x, w):
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(ms + np.float32(self.eps)) * w

    def rope(self, x, theta):
        """x: [n, heads, hd], rotated by halves (Gemma's order), positions 0..n."""
        n, hd = x.shape[0], self.hd
        freqs = theta ** (-np.arange(0, hd // 2, dtype=np.float64) * 2.0 / hd)
        angle = np.arange(n, dtype=np.float64)[:, None] * freqs[None, :]
        cos, sin = np.cos(angle).astype(np.float32)[:, None, :], np.sin(angle).astype(np.float32)[:, None, :]
        a, b = x[..., : hd // 2], x[..., hd // 2 :]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    def logits(self, ids):
        n, d, hd = len(ids), self.d, self.hd
        w = self.w
        h = w["token_embd.weight"][ids] * np.float32(np.sqrt(d))
        pos = np.arange(n)
        for l in range(self.layers):
            p = lambda s: w[f"blk.{l}.{s}.weight"]
            local = (l + 1) % 6 != 0
            x = self.norm(h, p("attn_norm"))
            q = (x @ p("attn_q").T).reshape(n, self.heads, hd)
            k = (x @ p("attn_k").T).reshape(n, self.kv_heads, hd)
            v = (x @ p("attn_v").T).reshape(n, self.kv_heads, hd)
            q, k = self.norm(q, p("attn_q_norm")), self.norm(k, p("attn_k_norm"))
            theta = 10000.0 if local else self.theta
            q, k = self.rope(q, theta), self.rope(k, theta)
            visible = pos[None, :] <= pos[:, None]
            if local:
                visible &= pos[:, None] - pos[None, :] < self.window
            out = np.empty((n, self.heads, hd), dtype=np.float32)
            group = self.heads // self.kv_heads
            for head in range(self.heads):
                s = q[:, head, :] @ k[:, head // group, :].T / np.float32(np.sqrt(hd))
                s = np.where(visible, s, -np.inf)
                s = np.exp(s - s.max(axis=1, keepdims=True))
                out[:, head, :] = (s / s.sum(axis=1, keepdims=True)) @ v[:, head // group, :]
            o = out.reshape(n, self.heads * hd) @ p("attn_output").T
            h = h + self.norm(o, p("post_attention_norm"))
            x = self.norm(h, p("ffn_norm"))
            g, u = x @ p("ffn_gate").T, x @ p("ffn_up").T
            gelu = 0.5 * g * (1.0 + np.tanh(np.float32(np.sqrt(2.0 / np.pi)) * (g + np.float32(0.044715) * g ** 3)))
            h = h + self.norm((gelu * u) @ p("ffn_down").T, p("post_ffw_norm"))
        return self.norm(h, w["output_norm.weight"]) @ w["token_embd.weight"].T


llama = llama_cpp.Llama(model_path=str(MODEL), n_ctx=1024, logits_all=True, n_threads=2, verbose=False)
tokenize = lambda text: llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)

model = Gemma3(MODEL)
cases = []
for prompt in SHORT + [LONG]:
    ids = tokenize(prompt)
    logits = model.logits(ids)
    top = np.argsort(-logits, axis=1)[:, :5]
    cases.append({
        "prompt": prompt,
        "ids": ids,
        "top5_ids": top.tolist(),
        "top5_logits": [[float(f"{logits[i, j]:.6g}") for j in row] for i, row in enumerate(top)],
    })
    print(f"{len(ids)} tokens: top-1 after the prompt {top[-1, 0]}", file=sys.stderr)
(OUT / "logits_f32.json").write_text(json.dumps({
    "source": "numpy f32 forward (tests/reference/make-gemma-logits.py) over gguf.quants.dequantize weights",
    "cases": cases,
}) + "\n")

greedy = []
for prompt in SHORT:
    ids = tokenize(prompt)
    llama.reset()
    llama.eval(ids)
    tokens, gaps = [], []
    for _ in range(24):
        scores = np.array(llama.scores[llama.n_tokens - 1])
        top2 = np.sort(scores)[-2:]
        token = int(np.argmax(scores))
        tokens.append(token)
        gaps.append(float(f"{top2[1] - top2[0]:.4g}"))
        llama.eval([token])
    greedy.append({"prompt": prompt, "ids": ids, "greedy": tokens, "gaps": gaps,
                   "text": llama.detokenize(tokens).decode("utf-8", "replace")})
(OUT / "greedy_llamacpp.json").write_text(json.dumps({
    "source": f"llama-cpp-python {llama_cpp.__version__} on the CPU, greedy, logits_all",
    "cases": greedy,
}, ensure_ascii=False, indent=1) + "\n")
print(f"wrote {OUT}/logits_f32.json and greedy_llamacpp.json")
