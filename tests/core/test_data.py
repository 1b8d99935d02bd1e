"""rnncomp.train.data: IDX parsing (plain/gzip), error messages, MNIST loading and batching."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from rnncomp import data

CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode independently of the reader: header via struct, payload big-endian."""
    header = struct.pack(">BBBB", 0, 0, CODES[arr.dtype], arr.ndim)
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", list(CODES))
def test_round_trip_all_dtypes(tmp_path, gz, dtype):
    r = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = r.integers(info.min, info.max, size=(3, 4, 5), endpoint=True).astype(dtype)
    else:
        arr = r.standard_normal((3, 4, 5)).astype(dtype)
    # extension deliberately misleading: detection is by magic bytes
    name = "x.idx" if gz else "x.idx.gz"
    out = data.read_idx(write_idx(tmp_path / name, arr, gz))
    assert out.dtype == dtype
    assert out.dtype.isnative
    assert out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 0  # writable, independent copy


def test_mnist_magic_numbers(tmp_path):
    imgs = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28).astype(np.uint8)
    raw = idx_bytes(imgs)
    assert raw[:4] == bytes.fromhex("00000803")
    assert raw[4:16] == struct.pack(">III", 2, 28, 28)
    assert idx_bytes(np.zeros(5, np.uint8))[:4] == bytes.fromhex("00000801")
    (tmp_path / "i").write_bytes(raw)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "i"), imgs)


def test_int16_values_are_big_endian(tmp_path):
    raw = bytes.fromhex("00000B01000000020102FFFE")
    (tmp_path / "x").write_bytes(raw)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "x"), [0x0102, -2])


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload_names_file_and_counts(tmp_path, gz):
    raw = idx_bytes(np.zeros((10, 7), np.int32))[:-6]  # header 12 bytes + 280 payload
    p = tmp_path / "bad-idx"
    p.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(ValueError, match=r"bad-idx.*expected 280 bytes, received 274 bytes"):
        data.read_idx(p)


def test_trailing_bytes_rejected(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(idx_bytes(np.zeros(4, np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="expected 4 bytes, received 5 bytes"):
        data.read_idx(p)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (bytes.fromhex("01000801") + struct.pack(">I", 1) + b"\x00", "bad IDX magic"),
        (bytes.fromhex("00000A01") + struct.pack(">I", 1) + b"\x00", "unknown IDX type code 0x0A"),
        (bytes.fromhex("00000800"), "0 dimensions"),
        (bytes.fromhex("00000803") + b"\x00\x00\x00\x02", "truncated IDX header"),
        (b"\x00\x00", "too short"),
    ],
)
def test_corrupt_header(tmp_path, raw, match):
    p = tmp_path / "hdr"
    p.write_bytes(raw)
    with pytest.raises(ValueError, match=match):
        data.read_idx(p)


def test_truncated_gzip_stream(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    p = tmp_path / "t.gz"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"t\.gz.*gzip stream is corrupt or truncated"):
        data.read_idx(p)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        data.read_idx(tmp_path / "nothing-here")


def make_mnist_folder(folder: Path, n_train=6, n_test=4, gz=True):
    r = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = r.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        lbls = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", imgs, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", lbls, gz)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_synthetic(tmp_path, gz):
    make_mnist_folder(tmp_path, gz=gz)
    x, y = data.load_mnist(tmp_path, "train")
    assert x.shape == (6, 28, 28)
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 1, 2, 3, 4, 5])
    x, y = data.load_mnist(tmp_path, kind="test")
    assert x.shape == (4, 28, 28)
    assert y.dtype == np.uint8


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        data.load_mnist(tmp_path, "test")
    for name in (
        "t10k-images-idx3-ubyte",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte",
        "t10k-labels-idx1-ubyte.gz",
    ):
        assert name in str(ei.value)
    with pytest.raises(ValueError, match="kind"):
        data.load_mnist(tmp_path, "validation")
    make_mnist_folder(tmp_path, n_train=6, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=False)
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        data.load_mnist(tmp_path, "train")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6, np.int32), gz=False)
    with pytest.raises(ValueError, match="uint8 labels"):
        data.load_mnist(tmp_path, "train")


def test_default_mnist_dir_env(tmp_path, monkeypatch):
    make_mnist_folder(tmp_path)
    monkeypatch.setenv("RNNCOMP_MNIST_DIR", str(tmp_path))
    assert data.default_mnist_dir() == tmp_path
    # an env var pointing at a non-MNIST folder is ignored (falls through)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("RNNCOMP_MNIST_DIR", str(empty))
    d = data.default_mnist_dir()
    assert d == data.SHIPPED_MNIST_DIR


# the subset shipped inside the package: found with no configuration, never skipped
REAL = data.SHIPPED_MNIST_DIR


def test_real_mnist_10k(monkeypatch):
    monkeypatch.delenv("RNNCOMP_MNIST_DIR", raising=False)
    assert data.default_mnist_dir() == REAL
    x, y = data.load_mnist(REAL, "train")
    assert x.shape == (8000, 28, 28)
    assert x.dtype == np.uint8
    assert y.shape == (8000,)
    assert x.max() == 255
    assert x.min() == 0
    np.testing.assert_array_equal(
        np.bincount(y, minlength=10), [801, 891, 801, 826, 779, 690, 820, 844, 756, 792]
    )
    x, y = data.load_mnist(REAL, "test")
    assert x.shape == (2000, 28, 28)
    np.testing.assert_array_equal(
        np.bincount(y, minlength=10), [200, 236, 190, 206, 201, 173, 194, 226, 188, 186]
    )


def test_batches_sequential_with_partial_last():
    x = np.arange(10)
    y = np.arange(10) * 10
    out = list(data.batches((x, y), 4))
    assert [len(bx) for bx, _ in out] == [4, 4, 2]
    for bx, by in out:
        np.testing.assert_array_equal(by, bx * 10)
    np.testing.assert_array_equal(np.concatenate([b for b, _ in out]), x)
    out = list(data.batches((x, y), 4, drop_last=True))
    assert [len(bx) for bx, _ in out] == [4, 4]
    single = list(data.batches(x, 5))
    assert isinstance(single[0], np.ndarray)
    np.testing.assert_array_equal(single[1], [5, 6, 7, 8, 9])


def test_batches_shuffle_is_aligned_and_deterministic():
    x = np.arange(23)
    imgs = np.stack([np.full((2, 2), i) for i in range(23)])
    a = list(data.batches([x, imgs], 5, shuffle=True, rng=np.random.default_rng(1)))
    b = list(data.batches([x, imgs], 5, shuffle=True, rng=np.random.default_rng(1)))
    assert [len(bx) for bx, _ in a] == [5, 5, 5, 5, 3]
    seen = np.concatenate([bx for bx, _ in a])
    assert sorted(seen.tolist()) == list(range(23))  # a permutation
    assert not np.array_equal(seen, x)
    for (ax, ai), (bx, bi) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ax, bx)
        np.testing.assert_array_equal(ai[:, 0, 0], ax)  # rows stay aligned
    assert (
        len(list(data.batches(x, 5, shuffle=True, rng=np.random.default_rng(1), drop_last=True)))
        == 4
    )


def test_batches_validation_is_eager():
    with pytest.raises(ValueError, match="same length"):
        data.batches((np.zeros(3), np.zeros(4)), 2)
    with pytest.raises(ValueError, match="batch_size"):
        data.batches(np.zeros(3), 0)
    with pytest.raises(ValueError, match="rng"):
        data.batches(np.zeros(3), 2, shuffle=True)
