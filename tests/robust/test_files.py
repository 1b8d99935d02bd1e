"""Checkpoint files under crashes, corruption and hostile content (extends
tests/core/test_checkpoint.py, which covers round trips, in-process failed saves, truncation,
CRC errors, pickled .npy members, versions and template mismatches).

Here: a *process* dying mid-save (os._exit inside the save, and SIGKILL at a random moment of
a save loop) leaves the previous checkpoint loadable; zip members that are raw pickles instead
of .npy arrays are refused without running them; Trainer.restore refuses checkpoints of another
model, of another kind, or of a newer format.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import subprocess_env

import rnncomp as rc
from rnncomp import checkpoint as ckpt
from rnncomp import layers, losses, optim
from rnncomp.train.checkpoint import CheckpointError
from rnncomp.train import Trainer

SAVE_TWICE = """
import os, sys
import numpy as np
from rnncomp import checkpoint as ck
path = sys.argv[1]
ck.save(path, {{"w": np.zeros(1000)}}, metadata={{"v": 1}})
{patch}
ck.save(path, {{"w": np.ones(1000)}}, metadata={{"v": 2}})
print("second save finished")
"""

CRASHES = {
    # the process dies right before the rename that publishes the new file
    "before_rename": "os.replace = lambda *a, **k: os._exit(17)",
    # ... in the middle of writing the archive
    "mid_write": ("def half(f, *a, **k):\n"
                  "    f.write(b'PK\\x03\\x04' + b'x' * 100); f.flush(); os._exit(17)\n"
                  "np.savez = half"),
    # ... after the data is on disk, during fsync
    "during_fsync": "os.fsync = lambda fd: os._exit(17)",
}


@pytest.mark.parametrize("where", list(CRASHES))
def test_process_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, where):
    path = tmp_path / "c.npz"
    code = SAVE_TWICE.format(patch=CRASHES[where])
    r = subprocess.run([sys.executable, "-c", code, str(path)], env=subprocess_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 17, r.stderr
    assert "second save finished" not in r.stdout
    got = ckpt.load(path)
    assert got.metadata == {"v": 1}
    np.testing.assert_array_equal(got.params["w"], np.zeros(1000))
    # the dead writer's temp file is hidden, never mistaken for the checkpoint, and harmless
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "c.npz"]
    assert all(n.startswith(".c.npz.") and n.endswith(".tmp") for n in leftovers), leftovers
    ckpt.save(path, {"w": np.full(1000, 3.0)}, metadata={"v": 3})
    assert ckpt.load(path).metadata == {"v": 3}


SAVE_LOOP = """
import sys
import numpy as np
from rnncomp import checkpoint as ck
path = sys.argv[1]
for i in range(100000):
    ck.save(path, {"w": np.full(1_000_000, float(i)), "b": np.full(7, float(i))},
            opt_state={"adam/step": np.array(i)}, metadata={"i": i})
    print(i, flush=True)
"""


def test_sigkill_during_repeated_saves_leaves_a_consistent_checkpoint(tmp_path):
    path = tmp_path / "loop.npz"
    p = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(path)], env=subprocess_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if int(line) >= 3:  # several saves done, the next one is in flight
                break
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.communicate(timeout=60)
    got = ckpt.load(path)
    i = got.metadata["i"]
    assert i >= 3
    for name, arr in got.params.items():
        assert np.all(arr == float(i)), name  # never a mix of two saves
    assert int(got.opt_state["adam/step"]) == i


# -- hostile or foreign archives -----------------------------------------------------------
class _Payload:
    """Unpickling this creates a marker directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _meta(**params) -> bytes:
    meta = {"format": "rnncomp-checkpoint", "version": 1, "opt": None, "user": None,
            "params": {k: {"shape": list(s), "dtype": "<f8"} for k, s in params.items()}}
    return _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))


def _zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


@pytest.mark.parametrize("member", ["params/w.npy", "__meta__.npy"])
def test_raw_pickle_members_are_refused_without_executing(tmp_path, member):
    """A zip member that is a bare pickle (no .npy header): np.load hands back its bytes; the
    loader must refuse it with a CheckpointError, never unpickle it."""
    marker = tmp_path / "PWNED"
    evil = pickle.dumps(_Payload(marker))
    members = {"__meta__.npy": _meta(w=(2,)), "params/w.npy": _npy(np.zeros(2))}
    members[member] = evil
    path = tmp_path / "evil.npz"
    _zip(path, members)
    with pytest.raises(CheckpointError, match="not a .npy array|invalid __meta__ entry"):
        ckpt.load(path)
    with pytest.raises(CheckpointError):
        Trainer(_model()).restore(str(path))
    assert not marker.exists()


def test_foreign_archives(tmp_path):
    path = tmp_path / "x.npz"
    _zip(path, {"readme.txt": b"hello"})
    with pytest.raises(CheckpointError, match="missing __meta__ entry; not an rnncomp checkpoint"):
        ckpt.load(path)
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="not a checkpoint archive"):
        ckpt.load(tmp_path / "a.npy")
    with pytest.raises(IsADirectoryError):
        ckpt.load(tmp_path)


# -- Trainer.restore ---------------------------------------------------------------------------
def _model(h=3):
    def fn(X, Y):
        out, _ = rc.dynamic_rnn(rc.BasicRNNCell(h), X)
        return losses.mse(layers.dense(out, 1), Y)

    return rc.Model(fn, {"X": rc.Input((None, None, 2)), "Y": rc.Input((None, None, 1))})


def _saved(tmp_path, model=None):
    m = model or _model()
    tr = Trainer(m, optimizer=optim.Adam(0.01))
    path = str(tmp_path / "train.npz")
    tr.save_checkpoint(path, tr.init(m.init(0), seed=5))
    return path


def test_restore_round_trip(tmp_path):
    path = _saved(tmp_path)
    st = Trainer(_model(), optimizer=optim.Adam(0.01)).restore(path)
    assert st.epoch == 0 and st.step == 0
    assert st.rng.integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)


def test_restore_into_another_model_lists_the_mismatch(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(CheckpointError) as e:
        Trainer(_model(h=4), optimizer=optim.Adam(0.01)).restore(path)
    msg = str(e.value)
    assert "checkpoint parameters do not match the expected template" in msg
    assert ("'rnn/basic_rnn_cell/kernel': expected shape (6, 4) dtype float32, received shape "
            "(5, 3) dtype float32") in msg


@pytest.mark.parametrize("metadata", [None, [1, 2], {"kind": "something else"}])
def test_restore_refuses_checkpoints_not_written_by_a_trainer(tmp_path, metadata):
    m = _model()
    path = tmp_path / "plain.npz"
    ckpt.save(path, m.init(0), metadata=metadata)
    with pytest.raises(CheckpointError, match="not a checkpoint written by "
                                              "Trainer.save_checkpoint"):
        Trainer(m).restore(str(path))


def test_restore_newer_version_and_truncated(tmp_path):
    path = _saved(tmp_path)
    data = open(path, "rb").read()
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = np.load(io.BytesIO(members["__meta__.npy"]))
    meta = json.loads(raw.tobytes())
    meta["version"] = 99
    members["__meta__.npy"] = _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))
    _zip(path, members)
    with pytest.raises(CheckpointError, match="version 99 is newer than the supported version"):
        Trainer(_model(), optimizer=optim.Adam(0.01)).restore(path)
    with open(path, "wb") as f:
        f.write(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Trainer(_model(), optimizer=optim.Adam(0.01)).restore(path)


def test_restore_in_a_fresh_process_matches(tmp_path):
    """A checkpoint written here loads bit for bit in another interpreter."""
    m = _model()
    p = m.init(4)
    ckpt.save(tmp_path / "p.npz", p)
    code = ("import sys, hashlib, numpy as np\n"
            "from rnncomp import checkpoint as ck\n"
            "c = ck.load(sys.argv[1])\n"
            "print(hashlib.sha256(b''.join(c.params[k].tobytes() for k in sorted(c.params)))"
            ".hexdigest())")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.npz")],
                       env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    want = hashlib.sha256(b"".join(p[k].tobytes() for k in sorted(p))).hexdigest()
    assert r.stdout.strip() == want

