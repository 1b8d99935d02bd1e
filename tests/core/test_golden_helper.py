"""The one golden-file check (tests/helpers.py `golden`) used by every golden test: a missing or
different file fails, and only RNNCOMP_UPDATE_GOLDEN=1 writes."""

from __future__ import annotations

import pytest
from helpers import golden


def test_missing_golden_fails_and_is_not_written(tmp_path, monkeypatch):
    monkeypatch.delenv("RNNCOMP_UPDATE_GOLDEN", raising=False)
    path = tmp_path / "g" / "x.txt"
    with pytest.raises(AssertionError, match="missing"):
        golden(path, "text")
    assert not path.exists()


def test_different_golden_fails_with_a_diff(tmp_path, monkeypatch):
    monkeypatch.delenv("RNNCOMP_UPDATE_GOLDEN", raising=False)
    path = tmp_path / "x.txt"
    path.write_text("a\nb\n")
    with pytest.raises(AssertionError, match=r"(?s)differs.*-b.*\+c"):
        golden(path, "a\nc\n")
    assert path.read_text() == "a\nb\n"
    golden(path, "a\nb")  # equal up to the trailing newline the helper adds


@pytest.mark.parametrize("value", ["", "0", "true", "yes"])
def test_only_the_value_1_updates(tmp_path, monkeypatch, value):
    monkeypatch.setenv("RNNCOMP_UPDATE_GOLDEN", value)
    with pytest.raises(AssertionError):
        golden(tmp_path / "x.txt", "text")


def test_update_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNCOMP_UPDATE_GOLDEN", "1")
    path = tmp_path / "sub" / "x.txt"
    golden(path, "new")
    assert path.read_text() == "new\n"
    golden(path, "newer")
    assert path.read_text() == "newer\n"
