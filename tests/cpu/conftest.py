"""Set-up shared by the CPU-backend tests.

- RNNCOMP_CACHE_DIR points at one temporary directory for the whole test session, so every
  compiled graph is written (and Numba-cached) there, never in ~/.cache, and a graph compiled
  by two test modules is compiled once. RNNCOMP_TEST_CACHE_DIR=DIR uses DIR instead and keeps it
  between runs (.ci/run keeps one next to its venv): a later run compiles only what changed
  (the cache key covers the rendered source, the backend's helper files and the numba/llvmlite/
  numpy versions; tests/cpu/test_cache.py checks it).
- RNNCOMP_VERIFY=1: the verifier runs after every optimization pass of every compile.
- `golden(name, text)` compares text with tests/cpu/golden/<name> (tests/helpers.py `golden`:
  a missing or different file fails; RNNCOMP_UPDATE_GOLDEN=1 rewrites the files).
"""

from __future__ import annotations

import os
from pathlib import Path

import helpers
import pytest

CPU_GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="session", autouse=True)
def _rnncomp_cpu_env(tmp_path_factory):
    keep = os.environ.get("RNNCOMP_TEST_CACHE_DIR")
    cache = Path(keep).resolve() if keep else tmp_path_factory.mktemp("rnncomp-cache")
    cache.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNCOMP_CACHE_DIR", str(cache))
        mp.setenv("RNNCOMP_VERIFY", "1")
        mp.delenv("RNNCOMP_ALWAYS_COMPILE", raising=False)
        mp.delenv("RNNCOMP_PRINT_AFTER", raising=False)
        yield cache


@pytest.fixture(scope="session")
def cpu_cache_dir(_rnncomp_cpu_env) -> Path:
    return _rnncomp_cpu_env


@pytest.fixture(scope="session")
def golden():
    return lambda name, text: helpers.golden(CPU_GOLDEN_DIR / name, text)
