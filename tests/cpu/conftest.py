"""Set-up shared by the CPU-backend tests.

- RNNCOMP_CACHE_DIR points at one temporary directory for the whole test session, so every
  compiled graph is written (and Numba-cached) there, never in ~/.cache, and a graph compiled
  by two test modules is compiled once.
- RNNCOMP_VERIFY=1: the verifier runs after every optimization pass of every compile.
- `golden` compares text with a file under tests/cpu/golden/ (RNNCOMP_UPDATE_GOLDEN=1
  rewrites the files instead).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CPU_GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("RNNCOMP_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="session", autouse=True)
def _rnncomp_cpu_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("rnncomp-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNCOMP_CACHE_DIR", str(cache))
        mp.setenv("RNNCOMP_VERIFY", "1")
        mp.delenv("RNNCOMP_ALWAYS_COMPILE", raising=False)
        mp.delenv("RNNCOMP_PRINT_AFTER", raising=False)
        yield cache


@pytest.fixture(scope="session")
def cpu_cache_dir(_rnncomp_cpu_env) -> Path:
    return _rnncomp_cpu_env


def check_golden(name: str, text: str) -> None:
    """Assert `text` equals tests/cpu/golden/<name> (or rewrite it with RNNCOMP_UPDATE_GOLDEN=1)."""
    path = CPU_GOLDEN_DIR / name
    if not text.endswith("\n"):
        text += "\n"
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        raise AssertionError(f"golden file {path} is missing; create it with "
                             f"RNNCOMP_UPDATE_GOLDEN=1 python3 -m pytest {Path(__file__).parent}")
    want = path.read_text()
    if want != text:
        import difflib

        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True),
                                            f"golden/{name}", "now", n=2))
        raise AssertionError(f"output differs from golden/{name} (regenerate with "
                             f"RNNCOMP_UPDATE_GOLDEN=1 if the change is intended):\n{diff[:6000]}")


@pytest.fixture(scope="session")
def golden():
    return check_golden
