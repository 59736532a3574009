"""What the fixture scripts (make-arch-fixtures.py, make-bpe-fixtures.py, make-gemma-*.py)
share: re-running themselves inside the cached llama-cpp-python environment that
`pkg-scripts/bench/cpu.sh` builds (with the gguf package pinned), and GPT-2's byte table."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("HEARTH_CACHE", Path.home() / ".cache" / "hearth")) / "llama-cpp"


def enter(script: str) -> None:
    """Re-runs `script` with the environment's Python unless it already runs there."""
    if os.environ.get("HEARTH_LLAMA_VENV") == "1":
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        sys.exit(f"{python} is missing: run pkg-scripts/bench/cpu.sh once to build llama-cpp-python")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "gguf==0.19.0"], check=True)
    os.execve(str(python), [str(python), script], {**os.environ, "HEARTH_LLAMA_VENV": "1"})


def byte_chars():
    """GPT-2's byte-to-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]
