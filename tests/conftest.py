"""Shared test set-up: tests/ on sys.path (for `import helpers`, `import reference_cells`) and
an rng fixture. Shared helpers (golden files, comparisons, the cell table, the loss model,
example and subprocess runners) live in tests/helpers.py."""

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


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, fixed-seed generator per test (tests stay independent and reproducible)."""
    return np.random.default_rng(1234)
