#!/usr/bin/env python3
"""Writes crate/tests/fixtures/gguf_blocks.json: random blocks of every GGUF tensor type hearth
reads, and their values as PyPI's `gguf` package dequantizes them (`gguf.quants.dequantize`),
the oracle the Rust scalar dequantizers are tested against. Run once; the output is committed.

Usage: pkg-scripts/make-quant-fixtures.py   (installs `gguf` into a cached virtual environment)
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("HEARTH_CACHE", Path.home() / ".cache" / "hearth")) / "gguf-py"
GGUF_VERSION = "0.19.0"

if os.environ.get("HEARTH_GGUF_VENV") != "1":
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"gguf=={GGUF_VERSION}"], check=True)
    os.execve(str(python), [str(python), __file__], {**os.environ, "HEARTH_GGUF_VENV": "1"})

import numpy as np  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

# Byte offsets of each block's f16 parameters (ggml-common.h): random bytes there would be
# NaNs and infinities, so they get random finite halves instead, one block in each type a zero
# scale and one a subnormal.
HALVES = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
BLOCKS = {32: 8, 256: 3}

rng = np.random.default_rng(20261201)
out = {"source": f"gguf {GGUF_VERSION} gguf.quants.dequantize on random blocks (pkg-scripts/make-quant-fixtures.py)", "types": {}}
for ty, halves in HALVES.items():
    elems, size = GGML_QUANT_SIZES[ty]
    n = BLOCKS[elems]
    blocks = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for at in halves:
        h = rng.uniform(-0.1, 0.1, size=n).astype(np.float16)
        h[1] = np.float16(0.0) if at == halves[0] else h[1]
        h[2] = np.float16(3e-6) if at == halves[0] else h[2]
        blocks[:, at:at + 2] = h.view(np.uint8).reshape(n, 2)
    values = dequantize(blocks.reshape(-1), ty).astype(np.float32)
    assert values.size == n * elems
    out["types"][ty.name] = {"blocks": blocks.tobytes().hex(), "values_f32_le": values.tobytes().hex()}

for ty in (T.F16, T.BF16):
    bits = rng.integers(0, 1 << 16, size=64, dtype=np.uint16)
    bits = bits[(bits & 0x7F80 if ty == T.BF16 else bits & 0x7C00) != (0x7F80 if ty == T.BF16 else 0x7C00)][:48]
    values = dequantize(bits.view(np.uint8), ty).astype(np.float32)
    out["types"][ty.name] = {"blocks": bits.tobytes().hex(), "values_f32_le": values.tobytes().hex()}

path = ROOT / "crate" / "tests" / "fixtures" / "gguf_blocks.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path} ({path.stat().st_size} bytes)")
