#!/usr/bin/env python3
"""Writes crate/tests/fixtures/ggml_quantizers.json: rows of random floats (several shapes of
weights: Gaussian, heavy-tailed, one-signed, with outliers, constant, zero, tiny) and the blocks
ggml's reference quantizers make of them (`quantize_row_<type>_ref`, called through ctypes in
the libggml-base that llama-cpp-python 0.3.16 builds), the oracle hearth's quantizers are
tested against byte for byte. Run once; the output is committed.

Usage: pkg-scripts/make-quantizer-fixtures.py   (needs the environment bench-cpu.sh builds)
"""
import ctypes
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_env  # noqa: E402

llama_env.enter(__file__)

import numpy as np  # noqa: E402
import llama_cpp  # noqa: E402

LIB = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
# Bytes per block and elements per block (ggml-common.h).
TYPES = {
    "q4_0": (18, 32), "q4_1": (20, 32), "q8_0": (34, 32),
    "q2_K": (84, 256), "q3_K": (110, 256), "q4_K": (144, 256), "q5_K": (176, 256), "q6_K": (210, 256),
}

rng = np.random.default_rng(20261202)
n = 256
rows = [
    rng.standard_normal(n) * 0.02,
    rng.standard_t(3, n) * 0.05,
    np.abs(rng.standard_normal(n)) * 0.1,
    -np.abs(rng.standard_normal(n)) * 0.1 - 0.01,
    np.where(rng.random(n) < 0.02, 40.0, 1.0) * rng.standard_normal(n) * 0.01,
    np.full(n, 0.375),
    np.zeros(n),
    rng.standard_normal(n) * 1e-6,
    np.concatenate([np.zeros(128), rng.standard_normal(128)]),
    rng.uniform(-3, 3, n),
]
x = np.concatenate(rows).astype(np.float32)

out = {
    "source": "ggml quantize_row_*_ref, llama-cpp-python 0.3.16 (pkg-scripts/make-quantizer-fixtures.py)",
    "floats_f32_le": x.tobytes().hex(),
    "types": {},
}
for name, (size, elements) in TYPES.items():
    fn = getattr(LIB, f"quantize_row_{name}_ref")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
    dst = ctypes.create_string_buffer(len(x) // elements * size)
    fn(x.ctypes.data, dst, len(x))
    out["types"][name] = dst.raw.hex()

path = llama_env.ROOT / "crate" / "tests" / "fixtures" / "ggml_quantizers.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path} ({path.stat().st_size} bytes)")
