"""Checkpoints an attacker or a diverged run would write (rnncomp/train/checkpoint.py): each of
these used to save, replace the good file and then fail to load (or load the wrong array)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from rnncomp.train import checkpoint as ckpt

GOOD = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.ckpt"
    ckpt.save(path, GOOD, metadata={"epoch": 1})
    return path, path.read_bytes()


BAD_SAVES = {
    "alias_npy_suffix": ({"x": np.ones(2), "x.npy": np.zeros(2)}, "ends with '.npy'"),
    "nul_byte": ({"a\x00b": np.ones(2)}, "control character"),
    "newline": ({"a\nb": np.ones(2)}, "control character"),
    "huge_name": ({"n" * 70_000: np.ones(2)}, "limited to 1024 characters"),
    "structured_dtype": ({"s": np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])},
                         "bool, integer and float arrays only"),
    "string_dtype": ({"s": np.array(["a", "b"])}, "bool, integer and float arrays only"),
    "nan_param": ({"w": np.array([1.0, np.nan], np.float32)}, "contains NaN/Inf"),
    "inf_param": ({"w": np.array([np.inf], np.float64)}, "contains NaN/Inf"),
}


@pytest.mark.parametrize("case", list(BAD_SAVES))
def test_bad_save_is_refused_and_the_good_file_survives(saved, case):
    path, before = saved
    params, msg = BAD_SAVES[case]
    with pytest.raises(ValueError, match=msg):
        ckpt.save(path, params)
    assert path.read_bytes() == before
    np.testing.assert_array_equal(ckpt.load(path).params["w"], GOOD["w"])


def test_nonfinite_can_be_saved_on_purpose(tmp_path):
    ckpt.save(tmp_path / "c", {"w": np.array([np.nan])}, allow_nonfinite=True)
    assert np.isnan(ckpt.load(tmp_path / "c").params["w"][0])


def test_deeply_nested_metadata_is_a_clear_error(saved):
    path, before = saved
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="not JSON serialisable"):
        ckpt.save(path, GOOD, metadata=deep)
    assert path.read_bytes() == before


def _rewrite(path, transform):
    """Rebuild the archive member by member through `transform(name, data) -> (name, data,
    compress_type)`."""
    src = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            name, data, ct = transform(info.filename, src.read(info.filename))
            z.writestr(name, data, compress_type=ct)
    path.write_bytes(out.getvalue())


def test_compressed_member_is_refused(saved):
    path, _ = saved
    _rewrite(path, lambda n, d: (n, d, zipfile.ZIP_DEFLATED))
    with pytest.raises(ckpt.CheckpointError, match="is compressed"):
        ckpt.load(path)


def test_deeply_nested_manifest_is_a_clear_error(saved):
    path, _ = saved
    nested = ("[" * 200_000 + "]" * 200_000).encode()

    def t(name, data):
        if name == "__meta__.npy":
            buf = io.BytesIO()
            np.save(buf, np.frombuffer(nested, np.uint8))
            data = buf.getvalue()
        return name, data, zipfile.ZIP_STORED

    _rewrite(path, t)
    with pytest.raises(ckpt.CheckpointError, match="nested too deeply|not an rnncomp checkpoint"):
        ckpt.load(path)


@pytest.mark.parametrize("spec", [{"shape": [-1], "dtype": "<f4"},
                                  {"shape": [2], "dtype": "|V8"},
                                  {"shape": [2], "dtype": "<U3"}])
def test_manifest_with_bad_entries(saved, spec):
    path, _ = saved

    def t(name, data):
        if name == "__meta__.npy":
            meta = json.loads(np.load(io.BytesIO(data)).tobytes())
            meta["params"]["b"] = spec
            buf = io.BytesIO()
            np.save(buf, np.frombuffer(json.dumps(meta).encode(), np.uint8))
            data = buf.getvalue()
        return name, data, zipfile.ZIP_STORED

    _rewrite(path, t)
    with pytest.raises(ckpt.CheckpointError, match="invalid manifest entry"):
        ckpt.load(path)
