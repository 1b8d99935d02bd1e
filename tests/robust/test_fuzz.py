"""Differential fuzzing: random custom cells, reference interpreter vs Numba CPU.

A cell is a JSON-able description (random op trees over the DSL: matmul with parameters, bias,
add/sub/mul, sigmoid/tanh/relu, exp of a bounded argument, where, concat, slice, split; sizes
1-4, one or two state arrays). It runs under dynamic_rnn with a random sequence_length, and
the gradient graph (rnncomp.transforms.autodiff.grad_graph: forward outputs + d loss / d every parameter
and X) is evaluated by the interpreter and by rnncomp.runtime.compiler.compile_graph(backend="cpu");
outputs and gradients must agree.

Compiles dominate (one per distinct cell), so the quick test draws cells from a small fixed
pool (POOL_SEEDS) and lets hypothesis vary batch, length, sequence lengths and data; the long
run (bench/fuzz_long.py) draws whole cells from `cells()`, so failures shrink to a minimal cell.
A failing example is written to tests/robust/regressions/new-failure-<test>.json (overwritten
while hypothesis shrinks, so it ends as the minimal one); test_regressions_replay replays every JSON
there (a "xfail" key marks a known, unfixed bug, which must still fail).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnncomp as rc
from rnncomp.transforms.autodiff import grad_graph
from rnncomp.runtime.compiler import compile_graph
from rnncomp.runtime.interp import evaluate

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_SIZE = 4
# float32 kernels: as tight as the built-in cell tests (tests/cpu/test_compiled_cells.py uses
# 2e-5 relative to the largest value of the array)
RTOL, ATOL = 2e-5, 2e-5

# -- cell descriptions ---------------------------------------------------------------------
# A tree is a list: ["x"], ["h", k], ["mm", param, width, a], ["bias", param, width, a],
# [op, a, b] for add/sub/mul, [act, a] for sigmoid/tanh/relu, ["exp", a] (= exp(tanh(a))),
# ["where", j, a, b] (= where(x[:, j] > 0, a, b)), ["concat", a, b], ["slice", start, width, a],
# ["split", k, n, a] (= split(a, n)[k]). Every value is [B, width].
OPS = ["leaf", "mm", "add", "sub", "mul", "tanh", "sigmoid", "relu", "exp", "where", "concat",
       "slice", "split", "bias"]


class RandomChooser:
    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def pick(self, seq):
        return seq[self.r.randrange(len(seq))]


class DrawChooser:
    """Choices drawn from hypothesis (so they shrink: toward the first option / smallest int)."""

    def __init__(self, draw):
        self.draw = draw

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def pick(self, seq):
        return seq[self.draw(st.integers(0, len(seq) - 1))]


def make_cell(c, depth: int = 3) -> dict[str, Any]:
    I, H, O, ns = c.int(1, MAX_SIZE), c.int(1, MAX_SIZE), c.int(1, MAX_SIZE), c.int(1, 2)
    counter = [0]

    def newp() -> str:
        counter[0] += 1
        return f"p{counter[0]}"

    def leaf(w):
        cands = ([["x"]] if w == I else []) + ([["h", k] for k in range(ns)] if w == H else [])
        if cands:
            return c.pick(cands)
        return ["mm", newp(), w, c.pick([["x"]] + [["h", k] for k in range(ns)])]

    def gen(w: int, d: int):
        op = c.pick(OPS if d > 0 else ["leaf"])
        if op == "leaf":
            return leaf(w)
        if op == "mm":
            n = c.pick([I, H])
            return ["mm", newp(), w, gen(n, d - 1)]
        if op == "bias":
            return ["bias", newp(), w, gen(w, d - 1)]
        if op in ("add", "sub", "mul"):
            return [op, gen(w, d - 1), gen(w, d - 1)]
        if op in ("tanh", "sigmoid", "relu", "exp"):
            return [op, gen(w, d - 1)]
        if op == "where":
            return ["where", c.int(0, I - 1), gen(w, d - 1), gen(w, d - 1)]
        if op == "concat" and w >= 2:
            a = c.int(1, w - 1)
            return ["concat", gen(a, d - 1), gen(w - a, d - 1)]
        if op == "slice":
            extra = c.int(1, 2)
            return ["slice", c.int(0, extra), w, gen(w + extra, d - 1)]
        if op == "split":
            n = c.int(2, 3)
            return ["split", c.int(0, n - 1), n, gen(w * n, d - 1)]
        return ["tanh", gen(w, d - 1)]

    # new states pass through tanh so that the recurrence stays bounded
    states = [["tanh", gen(H, depth)] for _ in range(ns)]
    return {"I": I, "H": H, "O": O, "states": states, "out": gen(O, depth)}


@st.composite
def cells(draw, depth: int = 3):
    return make_cell(DrawChooser(draw), depth)


def width(t, cell) -> int:
    op = t[0]
    if op == "x":
        return cell["I"]
    if op == "h":
        return cell["H"]
    if op in ("mm", "bias", "slice"):
        return t[2]
    if op == "concat":
        return width(t[1], cell) + width(t[2], cell)
    if op == "split":
        return width(t[3], cell) // t[2]
    if op == "where":
        return width(t[2], cell)
    return width(t[1], cell)


def build(t, x, hs, cell):
    def b(s):
        return build(s, x, hs, cell)

    op = t[0]
    if op == "x":
        return x
    if op == "h":
        return hs[t[1]]
    if op == "mm":
        return rc.matmul(b(t[3]), rc.param(t[1], (width(t[3], cell), t[2])))
    if op == "bias":
        return b(t[3]) + rc.param(t[1], (t[2],))
    if op in ("add", "sub", "mul"):
        return getattr(rc, op)(b(t[1]), b(t[2]))
    if op in ("tanh", "sigmoid", "relu"):
        return getattr(rc, op)(b(t[1]))
    if op == "exp":
        return rc.exp(rc.tanh(b(t[1])))
    if op == "where":
        cond = rc.greater(rc.slice(x, t[1], t[1] + 1, axis=1), 0.0)
        return rc.where(cond, b(t[2]), b(t[3]))
    if op == "concat":
        return rc.concat([b(t[1]), b(t[2])], axis=1)
    if op == "slice":
        return rc.slice(b(t[3]), t[1], t[1] + t[2], axis=1)
    if op == "split":
        return rc.split(b(t[3]), t[2], axis=1)[t[1]]
    raise ValueError(f"unknown op {op!r} in cell description")


def cell_model(cell: dict[str, Any]) -> rc.Model:
    ns = len(cell["states"])

    def step(x, state):
        hs = list(state) if ns > 1 else [state]
        new = [build(s, x, hs, cell) for s in cell["states"]]
        return build(cell["out"], x, hs, cell), (tuple(new) if ns > 1 else new[0])

    def fn(X, L):
        fc = rc.FunctionCell(step, state_size=(cell["H"],) * ns if ns > 1 else cell["H"],
                             output_size=cell["O"], name="fuzz")
        out, state = rc.dynamic_rnn(fc, X, sequence_length=L)
        finals = list(state) if ns > 1 else [state]
        loss = rc.mean(rc.square(out))
        for k, s in enumerate(finals):
            loss = loss + rc.mean(s) * float(k + 1)
        return {"loss": loss, "out": out, "state": tuple(finals)}

    return rc.Model(fn, {"X": rc.Input((None, None, cell["I"])), "L": rc.Input((None,), "i32")})


# -- running one case --------------------------------------------------------------------------
_COMPILED: dict[str, tuple] = {}  # cell JSON -> (model, grad graph, wrt, compiled graph or None)


def _prepared(cell, backend: str | None):
    key = json.dumps(cell, sort_keys=True)
    if key not in _COMPILED:
        m = cell_model(cell)
        wrt = list(m.param_specs) + ["X"]
        g = grad_graph(m.graph, 0, wrt)  # output 0 is the loss
        _COMPILED[key] = (m, g, wrt, {})
    m, g, wrt, compiled = _COMPILED[key]
    if backend is not None and backend not in compiled:
        compiled[backend] = compile_graph(g, backend=backend)
    return m, g, wrt, compiled.get(backend)


def case_arrays(cell, B: int, T: int, lengths: list[int], seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, cell["I"])).astype(np.float32)
    return x, np.asarray(lengths, np.int32)


def check_case(case: dict[str, Any], backend: str = "cpu") -> None:
    """Interpreter vs `backend` on one case {"cell", "B", "T", "lengths", "seed"}."""
    cell = case["cell"]
    m, g, wrt, cg = _prepared(cell, backend)
    x, L = case_arrays(cell, case["B"], case["T"], case["lengths"], case["seed"])
    p = m.init(case["seed"])
    args = m.arguments(p, {"X": x, "L": L})
    with np.errstate(all="ignore"):
        ref = evaluate(g, args)
    got = cg(*args)
    names = ["loss", "out"] + [f"state{k}" for k in range(len(cell["states"]))] + \
        [f"d/d{w}" for w in wrt]
    assert len(ref) == len(got) == len(names)
    for name, r, o in zip(names, ref, got, strict=True):
        r, o = np.asarray(r), np.asarray(o)
        assert r.shape == o.shape and r.dtype == o.dtype, (name, r.shape, o.shape, r.dtype,
                                                           o.dtype)
        assert np.isfinite(r).all(), f"{name}: the interpreter gave NaN/Inf"
        scale = 1.0 + float(np.abs(r).max(initial=0.0))
        np.testing.assert_allclose(o, r, rtol=RTOL, atol=ATOL * scale,
                                   err_msg=f"{backend} != interp for {name}")


@st.composite
def case_data(draw, cell_strategy):
    cell = draw(cell_strategy)
    B = draw(st.integers(1, 3))
    T = draw(st.integers(1, 5))
    lengths = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    return {"cell": cell, "B": B, "T": T, "lengths": lengths,
            "seed": draw(st.integers(0, 2**16))}


def save_failure(case: dict[str, Any], name: str, error: BaseException) -> Path:
    REGRESSIONS.mkdir(exist_ok=True)
    path = REGRESSIONS / f"new-failure-{name}.json"
    body = dict(case, error=f"{type(error).__name__}: {str(error)[:2000]}")
    path.write_text(json.dumps(body, indent=1) + "\n")
    return path


def run_recording(case, name: str, backend: str = "cpu") -> None:
    try:
        check_case(case, backend)
    except ImportError:  # a broken environment, not a finding
        raise
    except Exception as e:  # includes AssertionError
        save_failure(case, name, e)
        raise


# -- the quick test: a fixed pool of cells, so at most len(POOL_SEEDS) compiles -------------
POOL_SEEDS = [1, 172]  # chosen so that the two cells together use every op
POOL = [make_cell(RandomChooser(s)) for s in POOL_SEEDS]


@settings(max_examples=5, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(case=case_data(st.sampled_from(POOL)))
def test_fuzz_interp_vs_cpu(case):
    run_recording(case, "test_fuzz_interp_vs_cpu")


def test_pool_covers_every_op():
    seen = set()

    def walk(t):
        if isinstance(t, list) and t and isinstance(t[0], str):
            seen.add(t[0])
            for s in t[1:]:
                walk(s)

    for cell in POOL:
        for t in cell["states"] + [cell["out"]]:
            walk(t)
    missing = set(OPS) - {"leaf"} - seen
    assert not missing, f"POOL_SEEDS do not exercise {missing}; pick other seeds"


# -- replay of saved minimal failures ------------------------------------------------------
REGRESSION_FILES = sorted(REGRESSIONS.glob("*.json"))


def test_regressions_replay(tmp_path, monkeypatch):
    """Every saved case replays (none saved yet: see regressions/README.md), and the recording
    path works: a failing case is written as JSON that check_case replays to the same failure."""
    for path in REGRESSION_FILES:
        case = json.loads(path.read_text())
        if case.get("xfail"):
            with pytest.raises(AssertionError):  # a known bug: must still fail as recorded
                check_case(case, case.get("backend", "cpu"))
            continue
        check_case(case, case.get("backend", "cpu"))
    monkeypatch.setattr(sys.modules[__name__], "REGRESSIONS", tmp_path)
    case = {"cell": POOL[0], "B": 2, "T": 3, "lengths": [3, 1], "seed": 3}
    saved = save_failure(case, "roundtrip", AssertionError("planted"))
    loaded = json.loads(saved.read_text())
    assert {k: loaded[k] for k in case} == case and loaded["error"] == "AssertionError: planted"
    check_case(loaded)  # (the pool cell itself passes)


# -- CUDA simulator (only where the CUDA backend exists) ---------------------------------------
def _has_numba_cuda() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("numba.cuda") is not None
    except ImportError:
        return False


@pytest.mark.skipif(not _has_numba_cuda(), reason="numba.cuda is not installed (numba-cuda)")
def test_fuzz_cuda_simulator():
    """The pool cells through the CUDA backend under NUMBA_ENABLE_CUDASIM=1 (a subprocess:
    the simulator must be chosen before Numba is imported); the child must pass."""
    code = ("import test_fuzz as t\n"
            "for cell in t.POOL:\n"
            "    t.check_case({'cell': cell, 'B': 2, 'T': 3, 'lengths': [3, 1], 'seed': 1}, "
            "'cuda')\n"
            "print('ok')\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(Path(__file__).parent)]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
