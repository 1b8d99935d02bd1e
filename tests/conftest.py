"""Shared test set-up: tests/ on sys.path (for `import helpers`, `import reference_cells`), one
kernel cache for the whole session, and an rng fixture. Shared helpers (golden files,
comparisons, the cell table, the loss model, example and subprocess runners) live in
tests/helpers.py.

The kernel cache: RNNCOMP_CACHE_DIR points at one directory for the whole test session (every
test folder, and the child processes the tests start), never at the user's ~/.cache, so a graph
compiled by two test modules is compiled once. It is a fresh temporary directory, shared by the
pytest-xdist workers of a parallel run (`-n 2`), unless RNNCOMP_TEST_CACHE_DIR=DIR names one to
keep between runs (.ci/run keeps one next to its venv): a later run then compiles only what
changed (the cache key covers the rendered source, the backend's helper files and the
numba/llvmlite/numpy versions; tests/cpu/test_cache.py checks it). Workers that compile the same
graph at once are safe: entries are written by rename (first writer wins) and Numba writes its
index and object files the same way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

# backend="auto" (the library default) compiles; a test that calls a model without naming a
# backend means the reference interpreter (the oracle), so the suite does not compile every
# model it traces. Tests of "auto" itself, and subprocesses that test a default, unset it.
# Set RNNCOMP_DEFAULT_BACKEND=cpu to run those tests compiled instead.
os.environ.setdefault("RNNCOMP_DEFAULT_BACKEND", "interp")


def _session_cache_dir(tmp_path_factory) -> Path:
    keep = os.environ.get("RNNCOMP_TEST_CACHE_DIR")
    if keep:
        return Path(keep).resolve()
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # a worker's basetemp is <the controller's basetemp>/<worker id>
    return base / "rnncomp-cache"


@pytest.fixture(scope="session", autouse=True)
def kernel_cache_dir(tmp_path_factory) -> Path:
    """The session's kernel cache directory (RNNCOMP_CACHE_DIR, inherited by child processes;
    RNNCOMP_TEST_CACHE_DIR too, so a child pytest uses the same one)."""
    cache = _session_cache_dir(tmp_path_factory)
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNCOMP_CACHE_DIR", str(cache))
        mp.setenv("RNNCOMP_TEST_CACHE_DIR", str(cache))
        mp.delenv("RNNCOMP_ALWAYS_COMPILE", raising=False)
        yield cache


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, fixed-seed generator per test (tests stay independent and reproducible)."""
    return np.random.default_rng(1234)

