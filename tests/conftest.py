"""Shared test set-up: tests/ on sys.path (for `import helpers`, `import reference_cells`) and
an rng fixture. Shared helpers (golden files, comparisons, the cell table, the loss model,
example and subprocess runners) live in tests/helpers.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, fixed-seed generator per test (tests stay independent and reproducible)."""
    return np.random.default_rng(1234)
