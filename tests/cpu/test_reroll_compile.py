"""A 28-step static unroll of a 3-layer MultiRNNCell (the seed's static_rnn MNIST workflow)
compiles forward+gradient as one scan: it used to become one straight-line kernel that did not
finish in 120 s (and a 9-step one used 21 GB). Run in a fresh process to measure its memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, resource, sys, time
import numpy as np
import rnncomp as rc
T, I, H = 28, 28, 32
def fn(X, Y):
    xs = [rc.reshape(rc.slice(X, t, t + 1, axis=1), (X.shape[0], I)) for t in range(T)]
    cell = rc.MultiRNNCell([rc.GRUCell(H), rc.BasicLSTMCell(H), rc.BasicLSTMCell(H)])
    outs, _ = rc.static_rnn(cell, xs)
    return rc.losses.sparse_softmax_cross_entropy(labels=Y, logits=rc.layers.dense(outs[-1], 10))
m = rc.Model(fn, {"X": rc.Input((None, T, I)), "Y": rc.Input((None,), "i32")})
p = m.init(0)
rng = np.random.default_rng(0)
X = rng.standard_normal((8, T, I)).astype(np.float32)
Y = rng.integers(0, 10, 8).astype(np.int32)
t0 = time.perf_counter()
loss, g = m.value_and_grad(p, backend="cpu", X=X, Y=Y)
dt = time.perf_counter() - t0
ref_loss, ref = m.value_and_grad(p, backend="interp", X=X, Y=Y)
err = max(float(np.max(np.abs(g[k] - ref[k]))) for k in ref)
def peak_mb():
    # VmHWM of this process's own memory map: ru_maxrss would include the parent's peak, which
    # Linux carries over fork and exec (a 2 GB pytest parent made a 400 MB child look like 2 GB)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": dt, "rss_mb": peak_mb(),
                  "loss": float(loss), "ref_loss": float(ref_loss), "grad_err": err}))
"""


def test_static_28_steps_compiles_in_bounded_memory(tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       timeout=600, env={**__import__("os").environ,
                                         "RNNCOMP_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"[reroll] 28-step static, 3 layers: fwd+grad compiled and run in {res['seconds']:.1f} s,"
          f" peak RSS {res['rss_mb']:.0f} MB")
    assert res["rss_mb"] < 1024
    assert abs(res["loss"] - res["ref_loss"]) < 1e-5
    assert res["grad_err"] < 1e-5
