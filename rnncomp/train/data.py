"""IDX (MNIST-format) reading and minibatching, in pure NumPy.

The loader is strict on purpose: a truncated download or a mislabelled file
should fail here with the file name and byte counts, not later as a
mysterious reshape error or, worse, silently shifted labels.  Compression is
detected from the gzip magic bytes ``1f 8b`` rather than the extension,
because MNIST mirrors disagree on whether ``.gz`` files are already unpacked.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "IDX_DTYPES",
    "SHIPPED_MNIST_DIR",
    "batches",
    "default_mnist_dir",
    "load_mnist",
    "mnist_filenames",
    "read_idx",
]

# IDX type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
MAX_IDX_BYTES = 1 << 34  # 16 GiB: far above any MNIST-format set, far below a bomb's claims
_MNIST_PREFIX = {"train": "train", "test": "t10k"}


def _open_stream(path: Path):
    """The file as a byte stream, gunzipped on the fly when it starts with the gzip magic."""
    f = open(path, "rb")
    if f.read(2) == _GZIP_MAGIC:
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb"), f
    f.seek(0)
    return f, f


def _read_exactly(stream, n: int, path: Path) -> bytes:
    try:
        return stream.read(n)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"{path}: gzip stream is corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian array of its declared shape.

    Header: two zero bytes, a type code (0x08 ubyte, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then
    one big-endian uint32 per dimension; the payload must be exactly
    ``prod(dims) * itemsize`` bytes, otherwise ``ValueError`` names the file
    with the expected and received byte counts. A gzip file is decompressed as
    a stream and never past the size its header declares (a small file that
    inflates to gigabytes is refused after reading one byte too many).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"IDX path is a directory, not a file: {path} (pass the file, "
                                f"or the folder to load_mnist)")
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    stream, raw = _open_stream(path)
    with raw:
        head = _read_exactly(stream, 4, path)
        if len(head) < 4:
            raise ValueError(f"{path}: too short for an IDX header ({len(head)} bytes)")
        if head[0] != 0 or head[1] != 0:
            raise ValueError(
                f"{path}: bad IDX magic 0x{head[:4].hex()} (must start with two zero bytes; "
                f"images are 0x00000803, labels 0x00000801)"
            )
        code, ndim = head[2], head[3]
        if code not in IDX_DTYPES:
            valid = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
            raise ValueError(f"{path}: unknown IDX type code 0x{code:02X} (valid: {valid})")
        if ndim == 0:
            raise ValueError(f"{path}: IDX header declares 0 dimensions")
        dim_bytes = _read_exactly(stream, 4 * ndim, path)
        if len(dim_bytes) < 4 * ndim:
            raise ValueError(
                f"{path}: truncated IDX header: expected {4 + 4 * ndim} bytes for {ndim} "
                f"dimensions, received {4 + len(dim_bytes)}"
            )
        dims = tuple(int(d) for d in np.frombuffer(dim_bytes, dtype=">u4"))
        dtype = IDX_DTYPES[code]
        expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
        if expected > MAX_IDX_BYTES:
            raise ValueError(
                f"{path}: IDX header declares shape {dims} of {dtype.name} = {expected} bytes, "
                f"more than the {MAX_IDX_BYTES} bytes read_idx accepts (MAX_IDX_BYTES)"
            )
        # one byte more than declared: trailing data is detected without inflating it all
        payload = _read_exactly(stream, expected + 1, path)
        received = len(payload)
        if received > expected:
            got = (f"{os.path.getsize(path) - 4 - 4 * ndim} bytes" if stream is raw
                   else "more (the rest was not decompressed)")
            raise ValueError(f"{path}: IDX payload size mismatch for shape {dims} of "
                             f"{dtype.name}: expected {expected} bytes, received {got} "
                             f"(trailing data)")
    if received < expected:
        raise ValueError(
            f"{path}: IDX payload size mismatch for shape {dims} of {dtype.name}: expected "
            f"{expected} bytes, received {received} bytes (file truncated?)"
        )
    arr = np.frombuffer(payload, dtype=dtype).reshape(dims)
    # astype copies into a writable, native-endian array independent of `payload`.
    return arr.astype(dtype.newbyteorder("="))


def mnist_filenames(kind: str) -> tuple[list[str], list[str]]:
    """Candidate (images, labels) file names for ``kind``, uncompressed first."""
    if kind not in _MNIST_PREFIX:
        raise ValueError(f"kind must be 'train' or 'test', got {kind!r}")
    prefix = _MNIST_PREFIX[kind]
    images = f"{prefix}-images-idx3-ubyte"
    labels = f"{prefix}-labels-idx1-ubyte"
    return [images, images + ".gz"], [labels, labels + ".gz"]


def _find(folder: Path, candidates: list[str]) -> Path | None:
    for name in candidates:
        p = folder / name
        if p.is_file():
            return p
    return None


def load_mnist(
    folder: str | os.PathLike[str], kind: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(images uint8 [N, rows, cols], labels uint8 [N])`` from standard MNIST file names.

    Works for MNIST and drop-in sets with the same layout (Fashion-MNIST,
    subsets such as mnist-10k).  Checks that the files are ubyte images/labels
    with matching ``N`` so a mixed-up folder fails loudly.
    """
    folder = Path(folder)
    image_names, label_names = mnist_filenames(kind)
    img_path = _find(folder, image_names)
    lbl_path = _find(folder, label_names)
    if img_path is None or lbl_path is None:
        wanted = image_names + label_names
        raise FileNotFoundError(
            f"MNIST {kind} files not found in {folder}; looked for: {', '.join(wanted)}"
        )
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{img_path}: expected uint8 images of shape [N, rows, cols] (magic 0x00000803), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{lbl_path}: expected uint8 labels of shape [N] (magic 0x00000801), "
            f"got {labels.dtype} {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels for kind {kind!r}"
        )
    return images, labels


def _is_mnist_dir(p: Path) -> bool:
    """A folder counts if it holds train or test images under a standard name."""
    if not p.is_dir():
        return False
    return any(_find(p, mnist_filenames(k)[0]) is not None for k in _MNIST_PREFIX)


# the 8000/2000-digit subset shipped inside the package (README.md there: provenance, licence)
SHIPPED_MNIST_DIR = Path(__file__).resolve().parent / "datasets" / "mnist-10k"


def default_mnist_dir() -> Path | None:
    """Where to find MNIST without configuration.

    Order: ``$RNNCOMP_MNIST_DIR`` (if it is an existing MNIST folder: full MNIST,
    Fashion-MNIST, ...), then the mnist-10k subset shipped inside the package
    (``SHIPPED_MNIST_DIR``: 8000 train / 2000 test digits, 1.6 MB), so a fresh
    clone or a pip install finds data from any working directory. ``None`` only if
    the shipped copy was removed from the installation.
    """
    env = os.environ.get("RNNCOMP_MNIST_DIR")
    candidates = []
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(SHIPPED_MNIST_DIR)
    for c in candidates:
        if _is_mnist_dir(c):
            return c
    return None


def batches(
    arrays: np.ndarray | Sequence[np.ndarray],
    batch_size: int,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[np.ndarray | tuple[np.ndarray, ...]]:
    """Yield aligned minibatches along axis 0 (e.g. ``(images, labels)`` pairs).

    A single array yields arrays; a sequence yields tuples in the same order.
    The final partial batch is included unless ``drop_last``.  Shuffling
    draws one permutation per call from ``rng`` (required, so epochs are
    reproducible from a seed).  Arguments are validated when called, not on
    the first ``next()``.
    """
    single = isinstance(arrays, np.ndarray)
    arrs = [arrays] if single else [np.asarray(a) for a in arrays]
    if not arrs:
        raise ValueError("batches needs at least one array")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if any(a.ndim == 0 for a in arrs):
        raise ValueError("batches needs arrays with a leading (sample) axis, got a 0-d array")
    n = arrs[0].shape[0]
    lengths = [a.shape[0] for a in arrs]
    if any(length != n for length in lengths):
        raise ValueError(f"arrays must have the same length along axis 0, got {lengths}")
    if shuffle:
        if not isinstance(rng, np.random.Generator):
            raise ValueError("shuffle=True needs rng=np.random.default_rng(seed)")
        order = rng.permutation(n)
    else:
        order = None
    stop = n - n % batch_size if drop_last else n
    # Validation above runs eagerly (at call time); only the slicing is lazy.
    return _iter_batches(arrs, single, order, int(batch_size), stop)


def _iter_batches(
    arrs: list[np.ndarray], single: bool, order: np.ndarray | None, batch_size: int, stop: int
) -> Iterator[np.ndarray | tuple[np.ndarray, ...]]:
    for start in range(0, stop, batch_size):
        if order is None:
            chunk = [a[start : start + batch_size] for a in arrs]
        else:
            idx = order[start : start + batch_size]
            chunk = [a[idx] for a in arrs]
        yield chunk[0] if single else tuple(chunk)
