"""Shared set-up of the robustness tests (tests/robust, docs/robustness.md).

Numba compiles are the expensive part (5-20 s each on a loaded machine), so every compiled graph
here is built once per module (module-scoped fixtures) and the number of distinct graphs is kept
small; compiled kernels land in the normal disk cache, so a second run compiles nothing.
Tests that need a private cache directory (test_cache_faults.py) use tiny graphs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnncomp as rc
from rnncomp import losses

ROBUST_DIR = Path(__file__).resolve().parent
REPO_ROOT = ROBUST_DIR.parents[1]

# the "pair" model: a custom two-state cell under dynamic_rnn with sequence_length and labels
B, T, I, H, C = 3, 5, 2, 4, 3


def pair_cell(x, state):
    h, c = state
    w = rc.param("w", (I, 2 * H))
    u = rc.param("u", (H, 2 * H))
    b = rc.param("b", (2 * H,), "zeros")
    g, cand = rc.split(rc.matmul(x, w) + rc.matmul(h, u) + b, 2, axis=1)
    c2 = rc.sigmoid(g) * c + rc.tanh(cand)
    h2 = rc.tanh(c2)
    return h2, (h2, c2)


def pair_model_fn(X, L, Y):
    cell = rc.FunctionCell(pair_cell, state_size=(H, H), output_size=H, name="pair")
    out, (h, _) = rc.dynamic_rnn(cell, X, sequence_length=L)
    logits = rc.matmul(h, rc.param("v", (H, C)))
    return {"out": out, "loss": losses.sparse_softmax_cross_entropy(labels=Y, logits=logits)}


def pair_model() -> rc.Model:
    return rc.Model(pair_model_fn, {"X": rc.Input((None, None, I)),
                                    "L": rc.Input((None,), "i32"),
                                    "Y": rc.Input((None,), "i32")}, name="pair")


def pair_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"X": rng.standard_normal((B, T, I)).astype(np.float32),
            "L": np.array([T, 3, 1], np.int32),
            "Y": np.array([0, 2, 1], np.int32)}


@pytest.fixture(scope="module")
def pair():
    """(model, params, feeds) of the pair model, shared by a module (compiled graphs are cached
    on the model object, so each backend compiles at most once per module)."""
    m = pair_model()
    return m, m.init(0), pair_feeds()


def run_python(code: str, *, env: dict | None = None, timeout: float = 240,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -c code` in a fresh interpreter with the repository importable."""
    return subprocess.run([sys.executable, "-c", code], env=subprocess_env(env),
                          capture_output=True, text=True, timeout=timeout, check=check)


def subprocess_env(extra: dict | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(ROBUST_DIR)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra or {})
    return env


def is_root_like(directory: Path) -> bool:
    """Whether permission bits do not stop this process from writing (root, CAP_DAC_OVERRIDE)."""
    probe = directory / "probe"
    directory.chmod(0o500)
    try:
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False
    finally:
        directory.chmod(0o700)
