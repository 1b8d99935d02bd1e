"""`rnncomp bench` works without PyTorch and JAX: rnncomp's columns, "-" for the others, and
one line saying what to install (both are hidden from the child with modules that raise
ImportError, as on a machine without them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_without_torch_and_jax(tmp_path):
    for name in ("torch", "jax"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "rnncomp.tools.cli", "bench", "--", "--quick",
                          "--configs", "small", "--cells", "rnn", "--repeat", "1",
                          "--no-compile"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "torch and jax not installed (pip install torch jax" in out.stdout
    # | threads | config | cell | mode | rnncomp ms | GFLOP/s | %roof | nn ms | x nn | eager ms
    # | x eager | jax ms | x jax | jax-h ms | x jax-h |
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith("| 1 | small | rnn |")]
    assert len(rows) == 4  # fwd and f+b, wall and CPU time
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4]) > 0 and cells[7:] == ["-"] * 8
