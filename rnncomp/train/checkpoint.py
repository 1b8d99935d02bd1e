"""Pickle-free, atomic checkpoints of parameters, optimizer state and user metadata.

Format (version 1): a single ``.npz`` (uncompressed zip of ``.npy`` members)
holding ``params/<name>`` and ``opt/<name>`` arrays plus ``__meta__``, a uint8
array of UTF-8 JSON::

    {"format": "rnncomp-checkpoint", "version": 1,
     "params": {name: {"shape": [...], "dtype": "<f4"}, ...},
     "opt": {name: {...}, ...} or null,
     "user": <metadata>}

Why this shape: ``.npz`` is readable by anything with NumPy, object arrays are
refused both on save and on load (``allow_pickle=False``), so opening an
untrusted checkpoint never runs code, and the JSON manifest lets
:func:`load` detect truncation, tampering and version skew with a clear
:class:`CheckpointError` instead of a confusing downstream shape error.

Writes are atomic: the archive is written to a temporary file in the target's
directory, flushed and fsync'ed, then ``os.replace``'d over the target, so a
crash or exception mid-save leaves the previous checkpoint untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "VERSION",
    "Checkpoint",
    "CheckpointError",
    "load",
    "save",
]

FORMAT = "rnncomp-checkpoint"
VERSION = 1
_META_KEY = "__meta__"
_PARAMS_PREFIX = "params/"
_OPT_PREFIX = "opt/"


class CheckpointError(ValueError):
    """A checkpoint file exists but is corrupt, incompatible or does not match expectations."""


@dataclass
class Checkpoint:
    """What :func:`load` returns; ``opt_state`` is ``None`` if none was saved."""

    params: dict[str, np.ndarray]
    opt_state: dict[str, np.ndarray] | None = None
    metadata: Any = None
    version: int = field(default=VERSION)


def _json_default(obj: Any) -> Any:
    """Let NumPy scalars/arrays in user metadata serialise (they come back as Python types)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serialisable")


MAX_NAME_LEN = 1024
_NUMERIC_KINDS = "biuf"  # bool, signed/unsigned integers, floats


def _check_name(group: str, name: Any) -> None:
    """Names become zip member names: printable, bounded, and never aliasing another name
    (NpzFile maps "x" and "x.npy" to one member)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{group} names must be non-empty str, got {name!r}")
    if len(name) > MAX_NAME_LEN:
        raise ValueError(f"{group} name of {len(name)} characters: names are limited to "
                         f"{MAX_NAME_LEN} characters (received {name[:40]!r}...)")
    if not name.isprintable():
        raise ValueError(f"{group} name {name!r} contains a control character (NUL, newline, "
                         f"...): names must be printable")
    if name.endswith(".npy"):
        raise ValueError(f"{group} name {name!r} ends with '.npy', which NumPy's archive format "
                         f"strips: it would alias {name[:-4]!r}; rename it")


def _collect(group: str, arrays: Mapping[str, Any], prefix: str,
             finite: bool = False) -> tuple[dict, dict]:
    """Validate one group of named arrays; return (npz entries, manifest)."""
    entries: dict[str, np.ndarray] = {}
    manifest: dict[str, dict[str, Any]] = {}
    for name, value in arrays.items():
        _check_name(group, name)
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ValueError(
                f"{group} {name!r} has dtype {arr.dtype}; object arrays would need pickle "
                f"and are not allowed in checkpoints"
            )
        if arr.dtype.kind not in _NUMERIC_KINDS or arr.dtype.names is not None:
            raise ValueError(f"{group} {name!r} has dtype {arr.dtype}: checkpoints hold bool, "
                             f"integer and float arrays only")
        if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0]) if arr.ndim else ()
            raise ValueError(f"{group} {name!r} contains NaN/Inf (first at index {bad}); "
                             f"a checkpoint is never written from non-finite parameters (the "
                             f"previous one is kept). Pass allow_nonfinite=True to save anyway")
        entries[prefix + name] = arr
        manifest[name] = {"shape": list(arr.shape), "dtype": arr.dtype.str}
    return entries, manifest


def _target_mode(path: str) -> int:
    """Permission bits for the new file: those of the checkpoint being replaced, else 0644."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o644


def _fsync_dir(directory: str) -> None:
    """Persist the rename itself; best effort because not every OS/filesystem allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(
    path: str | os.PathLike[str],
    params: Mapping[str, np.ndarray],
    opt_state: Mapping[str, np.ndarray] | None = None,
    metadata: Any = None,
    *,
    allow_nonfinite: bool = False,
) -> None:
    """Atomically write a checkpoint to ``path`` (used verbatim; no ``.npz`` is appended).

    Names must be printable, at most MAX_NAME_LEN characters and not end in ``.npy``; arrays
    must be bool, integer or float; float parameters must be finite unless
    ``allow_nonfinite=True`` (a diverged run never replaces the last good checkpoint).

    ``metadata`` must be JSON-serialisable (NumPy scalars/arrays are converted
    to Python values).  Everything is validated before the file is touched; on
    any error the temporary file is removed and the exception re-raised, so an
    existing checkpoint at ``path`` survives a failed save byte for byte.
    """
    path = os.fspath(path)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of name -> array, got {type(params).__name__}")
    if opt_state is not None and not isinstance(opt_state, Mapping):
        raise TypeError(
            f"opt_state must be a dict of name -> array or None, got {type(opt_state).__name__}"
        )
    entries, params_manifest = _collect("parameter", params, _PARAMS_PREFIX,
                                        finite=not allow_nonfinite)
    opt_manifest = None
    if opt_state is not None:
        opt_entries, opt_manifest = _collect("optimizer state", opt_state, _OPT_PREFIX)
        entries.update(opt_entries)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "params": params_manifest,
        "opt": opt_manifest,
        "user": metadata,
    }
    try:
        meta_json = json.dumps(meta, default=_json_default, allow_nan=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"checkpoint metadata is not JSON serialisable: {exc}") from exc
    entries[_META_KEY] = np.frombuffer(meta_json.encode("utf-8"), dtype=np.uint8)

    directory = os.path.dirname(os.path.abspath(path))
    # Not a `with` block: the name must outlive the handle for os.replace / cleanup.
    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115
        delete=False, dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with tmp:
            # Object arrays were rejected above, so nothing here can need pickle.
            np.savez(tmp, **entries)
            tmp.flush()
            os.fsync(tmp.fileno())
        # NamedTemporaryFile is created 0600; keep the old file's mode, else rw-r--r--.
        os.chmod(tmp.name, _target_mode(path))
        os.replace(tmp.name, path)
    except BaseException:
        try:
            os.unlink(tmp.name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def _parse_meta(raw: np.ndarray, path: str) -> dict[str, Any]:
    """Decode and sanity-check the JSON manifest."""
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: invalid {_META_KEY} entry (expected a 1-D uint8 array)")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: {_META_KEY} is not valid UTF-8 JSON ({exc})") from exc
    except RecursionError as exc:
        raise CheckpointError(f"{path}: {_META_KEY} is nested too deeply to be a checkpoint "
                              f"manifest") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an rnncomp checkpoint ({_META_KEY} format is not {FORMAT!r})"
        )
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: invalid checkpoint version {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {version} is newer than the supported version "
            f"{VERSION}; upgrade rnncomp to read it"
        )
    if not isinstance(meta.get("params"), dict):
        raise CheckpointError(f"{path}: {_META_KEY} has no valid 'params' manifest")
    if meta.get("opt") is not None and not isinstance(meta["opt"], dict):
        raise CheckpointError(f"{path}: {_META_KEY} has an invalid 'opt' manifest")
    return meta


def _read_group(
    npz: Any, manifest: Mapping[str, Any], prefix: str, path: str
) -> dict[str, np.ndarray]:
    """Read the arrays listed in ``manifest`` and check them against it."""
    out: dict[str, np.ndarray] = {}
    for name, spec in manifest.items():
        key = prefix + name
        try:
            _check_name("array", name)
            shape = tuple(int(d) for d in spec["shape"])
            dtype = np.dtype(spec["dtype"])
            if any(d < 0 for d in shape) or dtype.kind not in _NUMERIC_KINDS or dtype.names:
                raise ValueError("negative dimension or non-numeric dtype")
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: invalid manifest entry for {key!r}: {spec!r} "
                                  f"({exc})") from exc
        if key not in npz.files:
            raise CheckpointError(f"{path}: array {key!r} listed in {_META_KEY} is missing")
        try:
            arr = npz[key]
        except Exception as exc:  # zip CRC errors, truncated members, pickled data, ...
            raise CheckpointError(
                f"{path}: array {key!r} cannot be read; the file is corrupt or truncated "
                f"or contains pickled objects ({type(exc).__name__}: {exc})"
            ) from exc
        if not isinstance(arr, np.ndarray):  # NpzFile returns raw bytes for a non-.npy member
            raise CheckpointError(f"{path}: member {key!r} is not a .npy array; the file is "
                                  f"corrupt or was not written by rnncomp.train.checkpoint.save")
        if arr.shape != shape or arr.dtype != dtype:
            raise CheckpointError(
                f"{path}: array {key!r} does not match {_META_KEY}: expected shape {shape} "
                f"dtype {dtype}, received shape {arr.shape} dtype {arr.dtype}"
            )
        out[name] = arr
    return out


def _check_template(
    params: Mapping[str, np.ndarray], template: Mapping[str, Any], path: str
) -> None:
    """Compare loaded params with a template; one error lists every discrepancy."""
    missing = sorted(set(template) - set(params))
    unexpected = sorted(set(params) - set(template))
    wrong = []
    for name in sorted(set(template) & set(params)):
        t = template[name]
        t_shape = tuple(np.shape(t))
        t_dtype = np.asarray(t).dtype if not hasattr(t, "dtype") else np.dtype(t.dtype)
        p = params[name]
        if p.shape != t_shape or p.dtype != t_dtype:
            wrong.append(
                f"{name!r}: expected shape {t_shape} dtype {t_dtype}, "
                f"received shape {p.shape} dtype {p.dtype}"
            )
    if missing or unexpected or wrong:
        lines = [f"{path}: checkpoint parameters do not match the expected template"]
        if missing:
            lines.append("missing: " + ", ".join(map(repr, missing)))
        if unexpected:
            lines.append("unexpected: " + ", ".join(map(repr, unexpected)))
        if wrong:
            lines.append("wrong shape/dtype: " + "; ".join(wrong))
        raise CheckpointError("\n  ".join(lines))


def _check_members(npz: Any, path: str) -> None:
    """save() writes stored (uncompressed) members; a compressed one could inflate to any size
    (a 1 MB file declaring 1 GB), so it is refused before anything is read."""
    zf = getattr(npz, "zip", None)
    if zf is None:
        return
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise CheckpointError(f"{path}: member {info.filename!r} is compressed; rnncomp "
                                  f"checkpoints store members uncompressed (the file was not "
                                  f"written by rnncomp.train.checkpoint.save)")


def _read_archive(
    npz: Any, path: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, dict[str, Any]]:
    """Read manifest and arrays from an open NpzFile, checking them against each other."""
    _check_members(npz, path)
    if _META_KEY not in npz.files:
        raise CheckpointError(f"{path}: missing {_META_KEY} entry; not an rnncomp checkpoint")
    try:
        raw = npz[_META_KEY]
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot read {_META_KEY}; the file is corrupt or truncated "
            f"or contains pickled objects ({type(exc).__name__}: {exc})"
        ) from exc
    meta = _parse_meta(raw, path)
    listed = {_PARAMS_PREFIX + n for n in meta["params"]}
    if meta["opt"] is not None:
        listed |= {_OPT_PREFIX + n for n in meta["opt"]}
    extra = sorted(set(npz.files) - listed - {_META_KEY})
    if extra:
        raise CheckpointError(
            f"{path}: arrays not listed in {_META_KEY}: {', '.join(map(repr, extra))}"
        )
    params = _read_group(npz, meta["params"], _PARAMS_PREFIX, path)
    opt_state = None
    if meta["opt"] is not None:
        opt_state = _read_group(npz, meta["opt"], _OPT_PREFIX, path)
    return params, opt_state, meta


def load(
    path: str | os.PathLike[str], expect_params: Mapping[str, Any] | None = None
) -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save`; never unpickles.

    Raises ``FileNotFoundError`` if ``path`` does not exist and
    :class:`CheckpointError` if the file is corrupt/truncated, lacks a valid
    manifest, has a newer version, has arrays disagreeing with its manifest,
    or (with ``expect_params``, a dict of name -> array-like template) holds
    parameters whose names, shapes or dtypes differ from the template.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    # We own the file handle (instead of passing the path to np.load) so it is
    # closed on every error path, including archives zipfile refuses to open.
    with open(path, "rb") as f:
        head = f.read(4)
        if head[:2] != b"PK":
            raise CheckpointError(
                f"{path}: not a checkpoint archive (not a zip/.npz file); "
                f"it is corrupt or truncated"
            )
        f.seek(0)
        try:
            npz = np.load(f, allow_pickle=False)
        except Exception as exc:  # BadZipFile, EOFError, OSError, ValueError, ...
            raise CheckpointError(
                f"{path}: cannot open checkpoint archive; the file is corrupt or truncated "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if not hasattr(npz, "files"):  # a bare .npy that happens to start with "PK"
            raise CheckpointError(f"{path}: not a checkpoint archive (expected .npz)")
        with npz:
            params, opt_state, meta = _read_archive(npz, path)
    if expect_params is not None:
        _check_template(params, expect_params, path)
    return Checkpoint(
        params=params, opt_state=opt_state, metadata=meta.get("user"), version=meta["version"]
    )
