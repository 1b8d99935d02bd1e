"""Training that meets NaN/Inf, and arguments that used to give unclear errors (issue 15,
items 4 and 10): a NaN batch stops training before the update with an error naming the step,
the last checkpoint survives, clipping with inf means no clipping, and every bad argument gets
a message naming it."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.train import NonFiniteTrainingError, Trainer, optim
from rnncomp.train import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[2]


def model():
    def fn(X, Y):
        out, _ = rc.dynamic_rnn(rc.BasicRNNCell(4), X)
        return rc.mean(rc.square(rc.slice(out, 0, 1, axis=2) - Y))

    return rc.Model(fn, {"X": rc.Input((None, 5, 2)), "Y": rc.Input((None, 5, 1))})


M = model()
RNG = np.random.default_rng(0)
GOOD = {"X": RNG.standard_normal((3, 5, 2)).astype(np.float32),
        "Y": RNG.standard_normal((3, 5, 1)).astype(np.float32)}
BAD = dict(GOOD, X=np.where(np.arange(30).reshape(3, 5, 2) == 7, np.nan, GOOD["X"]).astype(
    np.float32))


def test_nan_batch_stops_training_and_the_checkpoint_survives(tmp_path):
    tr = Trainer(M, optimizer=optim.Adam(1e-2))
    path = tmp_path / "ck"
    batches = {0: [GOOD, GOOD], 1: [GOOD, BAD, GOOD]}
    hist = tr.fit(M.init(0), lambda e, rng: batches[e], epochs=1, progress=False,
                  checkpoint_path=str(path))
    before = path.read_bytes()
    good_params = hist.state.params
    with pytest.raises(NonFiniteTrainingError, match=r"epoch 2, step 3: the loss is nan"):
        tr.fit(hist.state, lambda e, rng: batches[e], epochs=2, progress=False,
               checkpoint_path=str(path))
    assert path.read_bytes() == before
    restored = tr.restore(str(path))
    for k, v in good_params.items():
        np.testing.assert_array_equal(restored.params[k], v)
        assert np.all(np.isfinite(restored.params[k]))


def test_skip_option_skips_nonfinite_steps():
    tr = Trainer(M, optimizer=optim.Adam(1e-2), on_nonfinite="skip")
    hist = tr.fit(M.init(0), lambda e, rng: [GOOD, BAD, GOOD], epochs=1, progress=False)
    assert tr.skipped_steps == 1
    assert all(np.all(np.isfinite(v)) for v in hist.state.params.values())


def test_step_refuses_before_updating():
    tr = Trainer(M, optimizer=optim.SGD(0.1))
    p = M.init(0)
    st = tr.init(p)
    with pytest.raises(NonFiniteTrainingError, match="training stopped before the update"):
        tr.step(st.params, st.opt_state, BAD)


def test_clip_with_inf_means_no_clipping():
    g = {"a": np.array([3.0, 4.0], np.float32)}
    clipped, norm = optim.clip_by_global_norm(g, math.inf)
    assert norm == 5.0
    np.testing.assert_array_equal(clipped["a"], g["a"])
    tr = Trainer(M, clip_norm=math.inf)
    st = tr.init(M.init(0))
    p, _, loss, n = tr.step(st.params, st.opt_state, GOOD)
    assert math.isfinite(loss) and math.isfinite(n)
    assert all(np.all(np.isfinite(v)) for v in p.values())


@pytest.mark.parametrize("kw, msg", [
    ({"clip_norm": "5"}, r"clip_norm: expected a positive number, received '5'"),
    ({"clip_value": -1.0}, r"clip_value: expected a positive number, received -1.0"),
    ({"clip_norm": True}, r"clip_norm: expected a positive number"),
    ({"on_nonfinite": "ignore"}, r"on_nonfinite: expected 'raise' or 'skip'"),
])
def test_trainer_arguments_are_named(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Trainer(M, **kw)


@pytest.mark.parametrize("epochs", ["3", math.nan, -1, 2.5, None])
def test_fit_epochs_is_checked(epochs):
    with pytest.raises(ValueError, match=r"epochs: expected a non-negative integer"):
        Trainer(M).fit(M.init(0), lambda e, rng: [GOOD], epochs=epochs, progress=False)


def test_data_function_returning_none():
    def forgot(epoch, rng):
        [GOOD]  # noqa: B018 - the bug: no return

    with pytest.raises(TypeError, match="data_iter_fn returned NoneType for epoch 1.*forget"):
        Trainer(M).fit(M.init(0), forgot, epochs=1, progress=False)


def test_data_function_yielding_a_non_batch():
    with pytest.raises(TypeError, match=r"batch 1 of epoch 1 is a tuple"):
        Trainer(M).fit(M.init(0), lambda e, rng: [GOOD, (GOOD["X"], GOOD["Y"])], epochs=1,
                       progress=False)


@pytest.mark.parametrize("field, value", [("epoch", -1), ("epoch", 1.5), ("step", -1),
                                          ("epoch", None), ("step", "3")])
def test_restore_validates_its_metadata(tmp_path, field, value):
    tr = Trainer(M)
    st = tr.init(M.init(0))
    path = tmp_path / "ck"
    tr.save_checkpoint(str(path), st)
    c = ckpt.load(path)
    meta = dict(c.metadata)
    if value is None:
        del meta[field]
    else:
        meta[field] = value
    ckpt.save(path, c.params, c.opt_state, meta)
    with pytest.raises(ckpt.CheckpointError, match=rf"trainer metadata '{field}' must be a "
                                                   rf"non-negative integer"):
        tr.restore(str(path))


@pytest.mark.parametrize("seed", [2**63, -2**63 - 1, 1.5, "3"])
def test_seed_out_of_range_is_named(seed):
    m = rc.Model(lambda X: rc.dropout(X, 0.5), {"X": rc.Input((None, 2))})
    with pytest.raises(rc.InputError, match=r"seed: expected an integer"):
        m({}, X=np.ones((2, 2), np.float32), training=True, seed=seed)


def test_ragged_list_input_names_the_input():
    with pytest.raises(rc.InputError, match=r"input 'X': expected a rectangular array"):
        M(M.init(0), X=[[[1.0, 2.0]], [[1.0]]], Y=GOOD["Y"])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rnncomp.tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flag", ["--batch", "--time"])
def test_cli_run_rejects_non_positive_sizes(flag):
    r = _cli("run", "examples/models.py:lstm", flag, "-1")
    assert r.returncode != 0 and f"{flag}: expected an integer >= 1, received -1" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_run_inputs_not_npz(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("hello")
    r = _cli("run", "examples/models.py:lstm", "--inputs", str(f))
    assert r.returncode != 0 and "not an .npz archive" in r.stderr
    assert "pickled" not in r.stderr and "Traceback" not in r.stderr
