"""Shared test set-up: tests/ on sys.path (for `import reference_cells`), an rng fixture,
and a `verified` helper fixture that runs the verifier on every graph a test builds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

GOLDEN_DIR = TESTS_DIR / "golden"
UPDATE_GOLDEN = os.environ.get("RNNCOMP_UPDATE_GOLDEN") == "1"


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, fixed-seed generator per test (tests stay independent and reproducible)."""
    return np.random.default_rng(1234)
