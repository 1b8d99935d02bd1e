"""rnncomp.train.checkpoint: bit-exact round trips, atomicity, corruption and pickle safety."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from rnncomp import checkpoint as ckpt
from rnncomp import optim
from rnncomp.train.checkpoint import CheckpointError


def make_params():
    r = np.random.default_rng(0)
    return {
        "rnn/basic_lstm_cell/kernel": r.standard_normal((5, 8)).astype(np.float32),
        "rnn/basic_lstm_cell/bias": r.standard_normal(8).astype(np.float32),
        "dense/kernel": r.standard_normal((2, 3)),  # float64
        "temperature": np.array(1.25, dtype=np.float64),  # 0-d
        "empty": np.zeros((0, 4), np.float32),
    }


def assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def tmp_leftovers(directory):
    return sorted(p for p in os.listdir(directory) if p.endswith(".tmp"))


def test_round_trip_bit_identical(tmp_path):
    params = make_params()
    params["rnn/basic_lstm_cell/kernel"][0, 0] = np.float32(np.nan)
    params["dense/kernel"][0, 0] = -0.0
    opt = optim.Adam(0.01)
    state = opt.init(params)
    grads = {k: np.ones_like(v) for k, v in params.items()}
    params, state = opt.update(params, grads, state)
    meta = {"epoch": 3, "optimizer": opt.config(), "note": "héllo ✓", "acc": np.float32(0.5)}
    path = tmp_path / "model.ckpt"
    ckpt.save(path, params, state, meta, allow_nonfinite=True)  # NaN kept bit for bit
    assert path.exists()  # path used verbatim, no ".npz" appended
    got = ckpt.load(path)
    assert isinstance(got, ckpt.Checkpoint)
    assert_bit_identical(got.params, params)
    assert_bit_identical(got.opt_state, state)
    assert got.opt_state["adam/step"].shape == ()
    assert got.opt_state["adam/step"].dtype == np.int64
    assert int(got.opt_state["adam/step"]) == 1
    assert got.metadata == {**meta, "acc": 0.5}
    assert optim.from_config(got.metadata["optimizer"]) == opt
    # and the template check passes for the right template
    ckpt.load(path, expect_params=make_params())


def test_round_trip_without_opt_state_and_metadata(tmp_path):
    path = tmp_path / "p.npz"
    ckpt.save(path, make_params())
    got = ckpt.load(str(path))
    assert got.opt_state is None
    assert got.metadata is None
    assert_bit_identical(got.params, make_params())


def test_file_layout_is_plain_npz_with_json_meta(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save(path, {"a/b": np.arange(3, dtype=np.int32)}, {"sgd/step": np.array(4)}, [1, 2])
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["__meta__", "opt/sgd/step", "params/a/b"]
        meta = json.loads(z["__meta__"].tobytes().decode("utf-8"))
        assert z["__meta__"].dtype == np.uint8
    assert meta == {
        "format": "rnncomp-checkpoint",
        "version": 1,
        "params": {"a/b": {"shape": [3], "dtype": np.dtype(np.int32).str}},
        "opt": {"sgd/step": {"shape": [], "dtype": np.dtype(np.int64).str}},
        "user": [1, 2],
    }


def test_overwrite_and_no_temp_files(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save(path, {"w": np.zeros(2)})
    ckpt.save(path, {"w": np.ones(2)})
    np.testing.assert_array_equal(ckpt.load(path).params["w"], [1.0, 1.0])
    assert tmp_leftovers(tmp_path) == []
    assert os.listdir(tmp_path) == ["c.npz"]


@pytest.mark.parametrize("where", ["savez_midway", "replace", "fsync"])
def test_failed_save_keeps_previous_file(tmp_path, monkeypatch, where):
    path = tmp_path / "c.npz"
    ckpt.save(path, make_params(), metadata={"epoch": 1})
    before = path.read_bytes()

    if where == "savez_midway":

        def boom(file, *args, **kwargs):
            file.write(b"PK\x03\x04 partial garbage")  # something was written...
            raise OSError("disk full")  # ...then the write failed

        monkeypatch.setattr(np, "savez", boom)
    elif where == "replace":

        def boom(src, dst):
            raise OSError("rename failed")

        monkeypatch.setattr(os, "replace", boom)
    else:

        def boom(fd):
            raise OSError("fsync failed")

        monkeypatch.setattr(os, "fsync", boom)

    with pytest.raises(OSError, match="failed|disk full"):
        ckpt.save(path, {"w": np.ones(3)}, metadata={"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert tmp_leftovers(tmp_path) == []
    assert os.listdir(tmp_path) == ["c.npz"]
    assert ckpt.load(path).metadata == {"epoch": 1}


def test_keyboard_interrupt_mid_save_also_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    ckpt.save(path, {"w": np.zeros(2)})
    before = path.read_bytes()

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupt)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(path, {"w": np.ones(2)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]


def test_file_mode_is_not_tempfile_0600(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save(path, {"w": np.zeros(2)})
    assert path.stat().st_mode & 0o777 == 0o644
    os.chmod(path, 0o640)
    ckpt.save(path, {"w": np.ones(2)})
    assert path.stat().st_mode & 0o777 == 0o640


def test_save_rejects_bad_input_before_touching_disk(tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(ValueError, match="object arrays"):
        ckpt.save(path, {"w": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="JSON"):
        ckpt.save(path, {"w": np.zeros(1)}, metadata={"f": object()})
    assert os.listdir(tmp_path) == []


def test_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        ckpt.load(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save(path, make_params())
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30, 3, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            ckpt.load(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load(path)
    path.write_bytes(b"PK\x03\x04" + np.random.default_rng(1).bytes(4096))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load(path)


def test_flipped_payload_byte_detected_by_crc(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save(path, {"w": np.zeros(1000)})
    data = bytearray(path.read_bytes())
    # flip a byte inside the zero payload of params/w
    idx = data.index(b"\x00" * 800) + 400
    data[idx] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load(path)


def test_checkpoint_error_is_value_error():
    assert issubclass(CheckpointError, ValueError)


def write_raw_npz(path, meta, arrays, allow_pickle=False):
    entries = dict(arrays)
    if meta is not None:
        raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
        entries["__meta__"] = np.frombuffer(raw, dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=allow_pickle, **entries)


def good_meta(**over):
    meta = {
        "format": "rnncomp-checkpoint",
        "version": 1,
        "params": {"w": {"shape": [2], "dtype": "<f8"}},
        "opt": None,
        "user": None,
    }
    meta.update(over)
    return meta


def test_future_version(tmp_path):
    path = tmp_path / "c.npz"
    write_raw_npz(path, good_meta(version=7), {"params/w": np.zeros(2)})
    with pytest.raises(CheckpointError, match=r"version 7 .*supported version 1"):
        ckpt.load(path)


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        (None, "missing __meta__"),
        (b"\xff\xfe not json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "not an rnncomp checkpoint"),
        ({"format": "something-else", "version": 1}, "not an rnncomp checkpoint"),
        ({"format": "rnncomp-checkpoint", "version": "1"}, "invalid checkpoint version"),
        ({"format": "rnncomp-checkpoint", "version": 1}, "'params' manifest"),
    ],
)
def test_missing_or_invalid_meta(tmp_path, meta, match):
    path = tmp_path / "c.npz"
    write_raw_npz(path, meta, {"params/w": np.zeros(2)})
    with pytest.raises(CheckpointError, match=match):
        ckpt.load(path)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"params/w": np.zeros(3)}, r"expected shape \(2,\).*received shape \(3,\)"),
        ({"params/w": np.zeros(2, np.float32)}, "expected shape.*float64.*float32"),
        ({}, "'params/w' listed in __meta__ is missing"),
        ({"params/w": np.zeros(2), "params/x": np.zeros(1)}, "not listed in __meta__.*params/x"),
    ],
)
def test_arrays_disagree_with_meta(tmp_path, arrays, match):
    path = tmp_path / "c.npz"
    write_raw_npz(path, good_meta(), arrays)
    with pytest.raises(CheckpointError, match=match):
        ckpt.load(path)


class _Payload:
    """Unpickling this creates a marker directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_object_array_is_refused_without_executing(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    meta = good_meta(params={"w": {"shape": [1], "dtype": "|O"}})
    write_raw_npz(path, meta, {"params/w": evil}, allow_pickle=True)
    # The payload is live: an unsafe loader would create the marker.
    with np.load(path, allow_pickle=True) as z:
        z["params/w"]
    assert marker.is_dir()
    marker.rmdir()

    with pytest.raises(CheckpointError, match="pickled"):
        ckpt.load(path)
    assert not marker.exists()

    # Same payload while the manifest claims a harmless dtype.
    write_raw_npz(
        path, good_meta(params={"w": {"shape": [1], "dtype": "<f8"}}), {"params/w": evil}, True
    )
    with pytest.raises(CheckpointError):
        ckpt.load(path)
    assert not marker.exists()


def test_pickled_meta_is_refused_without_executing(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    with open(path, "wb") as f:
        np.savez(f, __meta__=evil, allow_pickle=True)
    with pytest.raises(CheckpointError):
        ckpt.load(path)
    assert not marker.exists()


def test_expect_params_template_mismatch_lists_everything(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save(path, make_params())
    template = make_params()
    del template["temperature"]  # unexpected in the file
    template["rnn/extra"] = np.zeros(3)  # missing from the file
    template["dense/kernel"] = np.zeros((3, 2))  # wrong shape
    template["empty"] = np.zeros((0, 4), np.float64)  # wrong dtype
    with pytest.raises(CheckpointError) as ei:
        ckpt.load(path, expect_params=template)
    msg = str(ei.value)
    assert "missing: 'rnn/extra'" in msg
    assert "unexpected: 'temperature'" in msg
    assert "'dense/kernel': expected shape (3, 2) dtype float64, received shape (2, 3)" in msg
    assert (
        "'empty': expected shape (0, 4) dtype float64, received shape (0, 4) dtype float32" in msg
    )


def test_npz_is_a_real_zip(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save(path, {"w": np.zeros(2)})
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert set(z.namelist()) == {"params/w.npy", "__meta__.npy"}
