"""Training on the reference interpreter: the book's time-series model learns, clipping keeps an
exploding setup finite, and checkpoints restore training bit for bit."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rnncomp as rc
from rnncomp import checkpoint, layers, losses, optim
from rnncomp.train import History, Trainer, TrainState

N_STEPS, RES = 20, 0.1


def series(t):
    return t * np.sin(t) / 3 + 2 * np.sin(t * 5)


def ts_batch(rng, batch_size, n_steps=N_STEPS):
    """Random 20-step windows of the series: X the values, Y the same shifted by one step."""
    t0 = rng.random((batch_size, 1)) * (30 - n_steps * RES)
    ts = t0 + np.arange(n_steps + 1) * RES
    ys = series(ts)
    return {"X": ys[:, :-1, None].astype(np.float32), "Y": ys[:, 1:, None].astype(np.float32)}


def ts_model(X, Y):
    cell = rc.OutputProjectionWrapper(rc.BasicRNNCell(100, activation="relu"), output_size=1)
    outputs, _ = rc.dynamic_rnn(cell, X)
    return {"loss": losses.mse(outputs, Y), "outputs": outputs}


def _ts():
    return rc.Model(ts_model, {"X": rc.Input((None, None, 1)), "Y": rc.Input((None, None, 1))})


def test_time_series_adam_drives_the_loss_down():
    m = _ts()
    tr = Trainer(m, loss_output="loss", optimizer=optim.Adam(1e-3))
    rng = np.random.default_rng(42)
    test = ts_batch(np.random.default_rng(0), 50)
    p = m.init(0)
    o = tr.optimizer.init(p)
    initial = float(m(p, **test)["loss"])
    for _ in range(150):
        p, o, loss, norm = tr.step(p, o, ts_batch(rng, 50))
        assert np.isfinite(loss) and np.isfinite(norm)
    final = float(m(p, **test)["loss"])
    assert final < 0.3 * initial, (initial, final)


def test_sgd_step_is_the_formula():
    m = _ts()
    tr = Trainer(m, "loss", optim.SGD(0.01))
    p = m.init(1)
    b = ts_batch(np.random.default_rng(1), 4)
    p1, o1, loss, norm = tr.step(p, tr.optimizer.init(p), b)
    out, g = m.value_and_grad(p, output="loss", **b)
    assert loss == float(out["loss"]) and norm == pytest.approx(optim.global_norm(g))
    for n in p:
        np.testing.assert_array_equal(p1[n], (p[n] - np.float32(0.01) * g[n]).astype(np.float32))
        assert p1[n].dtype == np.float32
    assert int(o1["sgd/step"]) == 1


def _exploding():
    def fn(X, Y):
        out, _ = rc.dynamic_rnn(rc.BasicRNNCell(8, activation="relu"), X)
        return losses.mse(layers.dense(out, 1), Y)

    m = rc.Model(fn, {"X": rc.Input((None, None, 2)), "Y": rc.Input((None, None, 1))})
    p = m.init(0)
    p["rnn/basic_rnn_cell/kernel"] = p["rnn/basic_rnn_cell/kernel"] * 4.0  # recurrent gain > 1
    rng = np.random.default_rng(3)
    b = {"X": rng.random((4, 30, 2)).astype(np.float32) * 2,
         "Y": rng.standard_normal((4, 30, 1)).astype(np.float32)}
    return m, p, b


def test_clip_by_global_norm_keeps_an_exploding_setup_finite():
    m, p, b = _exploding()
    _, g = m.value_and_grad(p, **b)
    assert optim.global_norm(g) > 1e6  # the gradient explodes
    tr = Trainer(m, optimizer=optim.SGD(0.1), clip_norm=1.0)
    o = tr.optimizer.init(p)
    q = p
    for _ in range(3):
        q2, o, loss, norm = tr.step(q, o, b)
        step = np.sqrt(sum(np.sum((q2[n].astype(np.float64) - q[n]) ** 2) for n in q))
        assert step <= 0.1 * 1.0 * (1 + 1e-5)  # lr * clip_norm bounds the update
        q = q2
    assert all(np.isfinite(v).all() for v in q.values())
    # without clipping the same step throws the parameters far away
    free = Trainer(m, optimizer=optim.SGD(0.1))
    q3, _, _, _ = free.step(p, free.optimizer.init(p), b)
    assert np.abs(q3["rnn/basic_rnn_cell/kernel"] - p["rnn/basic_rnn_cell/kernel"]).max() > 1e3
    # clip_value bounds every element of the update
    tv = Trainer(m, optimizer=optim.SGD(1.0), clip_value=0.5)
    q4, _, _, _ = tv.step(p, tv.optimizer.init(p), b)
    for n in p:
        assert np.abs(q4[n] - p[n]).max() <= 0.5 + 1e-6


def _small():
    def fn(X, Y):
        cell = rc.DropoutWrapper(rc.GRUCell(6, reset_after=True), output_keep_prob=0.8)
        out, _ = rc.dynamic_rnn(rc.OutputProjectionWrapper(cell, 1), X)
        return {"loss": losses.mse(out, Y)}

    return rc.Model(fn, {"X": rc.Input((None, None, 1)), "Y": rc.Input((None, None, 1))})


def _epoch_batches(epoch, rng):
    data = ts_batch(np.random.default_rng(100), 24, n_steps=8)
    order = rng.permutation(24)  # shuffled with the trainer's generator
    for k in range(0, 24, 8):
        idx = order[k:k + 8]
        yield {"X": data["X"][idx], "Y": data["Y"][idx]}


def test_fit_history_and_eval():
    m = _small()
    tr = Trainer(m, "loss", optim.Adam(1e-2))
    evals = []

    def eval_fn(params):
        evals.append(1)
        return {"val_loss": float(m(params, **ts_batch(np.random.default_rng(9), 8, 8))["loss"])}

    hist = tr.fit(m.init(0), _epoch_batches, epochs=3, progress=False, eval_fn=eval_fn)
    assert isinstance(hist, History) and len(hist) == 3 and len(evals) == 3
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert all(r["steps"] == 3 and r["time"] > 0 and np.isfinite(r["val_loss"]) for r in hist)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert hist.state.epoch == 3 and hist.state.step == 9
    assert hist.metric("loss") == [r["loss"] for r in hist]


def test_checkpoint_restore_continues_bit_identically(tmp_path):
    m = _small()
    tr = Trainer(m, "loss", optim.Adam(1e-2), clip_norm=5.0)
    straight = tr.fit(m.init(0), _epoch_batches, epochs=4, progress=False, seed=11)

    path = str(tmp_path / "ckpt.npz")
    first = tr.fit(m.init(0), _epoch_batches, epochs=2, progress=False, seed=11,
                   checkpoint_path=path)
    del first
    tr2 = Trainer(m, "loss", optim.from_config(optim.Adam(1e-2).config()), clip_norm=5.0)
    state = tr2.restore(path)
    assert isinstance(state, TrainState) and state.epoch == 2 and state.step == 6
    resumed = tr2.fit(state, _epoch_batches, epochs=4, progress=False, seed=11)
    assert [r["epoch"] for r in resumed] == [3, 4]
    for n in straight.params:
        np.testing.assert_array_equal(resumed.params[n], straight.params[n])
    for n in straight.opt_state:
        np.testing.assert_array_equal(resumed.opt_state[n], straight.opt_state[n])
    assert resumed[-1]["loss"] == straight[-1]["loss"]
    meta = checkpoint.load(path).metadata
    assert meta["trainer"]["optimizer"] == {"name": "adam", "lr": 0.01, "beta1": 0.9,
                                            "beta2": 0.999, "eps": 1e-8}
    assert meta["trainer"]["clip_norm"] == 5.0 and meta["epoch"] == 2
    # a trainer with a different optimizer refuses the checkpoint
    with pytest.raises(checkpoint.CheckpointError, match="optimizer"):
        Trainer(m, "loss", optim.SGD(0.1)).restore(path)


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    m = _small()
    tr = Trainer(m, "loss", optim.Adam(1e-2))
    path = str(tmp_path / "ckpt.npz")
    state = tr.init(m.init(0), seed=1)
    tr.save_checkpoint(path, state)
    before = open(path, "rb").read()
    state2 = tr.fit(state, _epoch_batches, epochs=1, progress=False).state

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        tr.save_checkpoint(path, state2)
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    restored = tr.restore(path)
    assert restored.epoch == 0
    for n, v in m.init(0).items():
        np.testing.assert_array_equal(restored.params[n], v)


def test_loss_and_layers():
    def fn(X, y, ids):
        e = layers.embedding(ids, 5, 2)
        out, st = rc.dynamic_rnn(rc.BasicRNNCell(4), rc.concat([X, e], axis=-1))
        h = layers.dense(out, 5, activation="tanh")  # [B, T, F] input
        logits = layers.dense(st, 3)  # [B, F] input
        return {"loss": losses.sparse_softmax_cross_entropy(labels=y, logits=logits),
                "seq": losses.sparse_softmax_cross_entropy(labels=ids, logits=h), "logits": logits}

    m = rc.Model(fn, {"X": rc.Input((None, None, 2)), "y": rc.Input((None,), "i32"),
                      "ids": rc.Input((None, None), "i32")}, dtype="f64")
    assert set(m.param_specs) >= {"dense/kernel", "dense/bias", "dense_1/kernel",
                                  "embedding/embeddings"}
    assert m.param_specs["dense/kernel"].shape == (4, 5)
    rng = np.random.default_rng(0)
    inp = {"X": rng.standard_normal((3, 4, 2)), "y": np.array([0, 2, 1]),
           "ids": rng.integers(0, 5, (3, 4))}
    p = m.init(0)
    out = m(p, **inp)
    lg = out["logits"]
    ref = -np.mean(lg[np.arange(3), inp["y"]] - np.log(np.exp(lg).sum(-1)))
    np.testing.assert_allclose(out["loss"], ref, rtol=1e-12)
    assert losses.accuracy(lg, inp["y"]) == np.mean(lg.argmax(-1) == inp["y"])
    _, g = m.value_and_grad(p, output="seq", **inp)
    assert np.abs(g["embedding/embeddings"]).sum() > 0
    with pytest.raises(rc.InputError, match="labels"):
        m(p, **{**inp, "y": np.array([0, 3, 1])})
    with pytest.raises(rc.InputError, match="embedding ids"):
        m(p, **{**inp, "ids": np.full((3, 4), 5)})
