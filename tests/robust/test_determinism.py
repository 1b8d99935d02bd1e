"""Determinism: one seed gives the same parameters (Model.init), the same dropout masks
(DropoutWrapper in training mode) and the same training trajectory (Trainer steps), in this
process and in fresh interpreters with different hash seeds (compared by SHA-256 of the arrays).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
from conftest import subprocess_env

import rnncomp as rc
from rnncomp import losses, optim
from rnncomp.train import Trainer, step_seed


def _model():
    def fn(X, Y):
        cell = rc.DropoutWrapper(rc.GRUCell(5, reset_after=True), input_keep_prob=0.7,
                                 output_keep_prob=0.6, state_keep_prob=0.8)
        out, _ = rc.dynamic_rnn(rc.OutputProjectionWrapper(cell, 2), X)
        return {"loss": losses.mse(out, Y), "out": out}

    return rc.Model(fn, {"X": rc.Input((None, None, 3)), "Y": rc.Input((None, None, 2))})


def _batch(k: int):
    rng = np.random.default_rng(100 + k)
    return {"X": rng.standard_normal((4, 6, 3)).astype(np.float32),
            "Y": rng.standard_normal((4, 6, 2)).astype(np.float32)}


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def fingerprints(seed: int = 0) -> dict[str, str]:
    """SHA-256 digests of: init params, a training-mode (dropout) forward run, the dropout
    gradient, and the parameters after 3 Adam steps with clipping."""
    m = _model()
    p = m.init(seed)
    out = {"init": digest(p[k] for k in sorted(p))}
    b = _batch(0)
    r = m(p, training=True, seed=seed + 1, **b)
    out["dropout_forward"] = digest([r["out"], r["loss"]])
    _, g = m.value_and_grad(p, output="loss", training=True, seed=seed + 1, **b)
    out["dropout_grad"] = digest(g[k] for k in sorted(g))
    tr = Trainer(m, "loss", optim.Adam(0.01), clip_norm=1.0)
    o = tr.optimizer.init(p)
    losses_ = []
    for k in range(3):
        p, o, loss, _ = tr.step(p, o, _batch(k), seed=step_seed(seed, k))
        losses_.append(loss)
    out["trajectory"] = digest([p[k] for k in sorted(p)] + [o[k] for k in sorted(o)]
                               + [np.array(losses_)])
    return out


def test_same_seed_same_everything_in_process():
    a, b = fingerprints(0), fingerprints(0)
    assert a == b
    c = fingerprints(1)
    assert all(a[k] != c[k] for k in a), (a, c)  # and the seed really matters


def test_dropout_masks_depend_on_seed_and_training_flag():
    m = _model()
    p = m.init(0)
    b = _batch(0)
    train = [m(p, training=True, seed=s, **b)["out"] for s in (3, 3, 4)]
    np.testing.assert_array_equal(train[0], train[1])
    assert not np.array_equal(train[0], train[2])
    infer = [m(p, seed=s, **b)["out"] for s in (3, 4)]  # inference: no dropout, seed unused
    np.testing.assert_array_equal(infer[0], infer[1])
    assert not np.array_equal(infer[0], train[0])


def test_same_seed_same_everything_across_processes():
    code = ("import json, test_determinism as t\n"
            "print(json.dumps(t.fingerprints(0), sort_keys=True))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=subprocess_env({"PYTHONHASHSEED": str(h)}))
             for h in (1, 2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        outs.append(out.strip().splitlines()[-1])
    import json
    here = fingerprints(0)
    assert json.loads(outs[0]) == json.loads(outs[1]) == here
