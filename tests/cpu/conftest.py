"""Set-up shared by the CPU-backend tests.

- the session's kernel cache (tests/conftest.py `kernel_cache_dir`: one directory for the
  whole session, never ~/.cache; RNNCOMP_TEST_CACHE_DIR=DIR keeps it between runs).
- RNNCOMP_VERIFY=1: the verifier runs after every optimization pass of every compile.
- `golden(name, text)` compares text with tests/cpu/golden/<name> (tests/helpers.py `golden`:
  a missing or different file fails; RNNCOMP_UPDATE_GOLDEN=1 rewrites the files).
"""

from __future__ import annotations

from pathlib import Path

import helpers
import pytest

CPU_GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="session", autouse=True)
def _rnncomp_cpu_env(kernel_cache_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNCOMP_VERIFY", "1")
        mp.delenv("RNNCOMP_PRINT_AFTER", raising=False)
        yield kernel_cache_dir


@pytest.fixture(scope="session")
def cpu_cache_dir(kernel_cache_dir) -> Path:
    return kernel_cache_dir


@pytest.fixture(scope="session")
def golden():
    return lambda name, text: helpers.golden(CPU_GOLDEN_DIR / name, text)
