"""IDX files that lie about their size (rnncomp/train/data.py): a gzip bomb is refused without
inflating it, a header whose dimensions overflow gets a clear error, a directory is named."""

from __future__ import annotations

import gzip
import resource
import struct

import numpy as np
import pytest

from rnncomp.train import data


def test_gzip_bomb_is_refused_without_inflating(tmp_path):
    """Declares 1 byte, inflates to 2 GiB: refused after one byte too many."""
    path = tmp_path / "bomb-idx1-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 1))
        chunk = bytes(1 << 20)
        for _ in range(2048):
            f.write(chunk)
    assert path.stat().st_size < 4 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="expected 1 bytes, received more"):
        data.read_idx(path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200 * 1024, f"peak RSS grew by {grown_kib} KiB"


def test_dims_that_overflow_are_a_clear_error(tmp_path):
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x0e\x03" + struct.pack(">III", 0xFFFFFFFF, 0xFFFFFFFF, 8) + b"x")
    with pytest.raises(ValueError, match=r"declares shape \(4294967295, 4294967295, 8\) of "
                                         r"float64 = \d+ bytes, more than"):
        data.read_idx(path)


def test_directory_is_named(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        data.read_idx(tmp_path)


def test_gzip_round_trip_still_works(tmp_path):
    path = tmp_path / "ok-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes([1, 2, 3]))
    np.testing.assert_array_equal(data.read_idx(path), [1, 2, 3])
