"""Test helpers shared by every test directory (tests/ is on sys.path: `from helpers import ...`).

- `golden(path, text)`: the one golden-file check. A missing or different file fails; only
  RNNCOMP_UPDATE_GOLDEN=1 (re)writes files.
- `rel_err`, `assert_close`: the comparisons the backend tests use.
- `run_example`: run an example script in a subprocess and read its result line.
- `run_pytest_child`: a child pytest whose failure, error or all-skipped run fails the parent.
- `CELLS`: the one table of built-in cells and wrappers, each with its independent NumPy oracle
  (tests/reference_cells.py) and, where PyTorch has the cell, the torch module kind.
- `loss_model` / `loss_inputs` / `perturbed_params`: the "loss model" the backend tests compile:
  several cells side by side in ONE model (one compile covers them all), each cell with its own
  initial state inputs and loss weights: loss = sum_cells sum(out * R) + sum_k sum(tanh(s_k) * Q_k).
- `fd_check`: an independent gradient reference: random-direction central finite differences
  (one VJP + two evaluations), on whichever backend the model runs.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import reference_cells as ref

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
EXAMPLES = REPO / "examples"


# ---------------------------------------------------------------------------------------------
# golden files
# ---------------------------------------------------------------------------------------------
def update_golden() -> bool:
    return os.environ.get("RNNCOMP_UPDATE_GOLDEN") == "1"


def golden(path: str | os.PathLike, text: str) -> None:
    """Assert that `text` equals the golden file `path` (a trailing newline is added to `text`
    if it lacks one). A missing or different file fails; RNNCOMP_UPDATE_GOLDEN=1 writes it."""
    path = Path(path)
    if not text.endswith("\n"):
        text += "\n"
    if update_golden():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return
    if not path.exists():
        raise AssertionError(f"golden file {path} is missing; create it with "
                             f"RNNCOMP_UPDATE_GOLDEN=1 and review it")
    want = path.read_text()
    if want != text:
        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True),
                                            str(path), "now", n=2))
        raise AssertionError(f"output differs from golden file {path} (if the change is "
                             f"intended, regenerate with RNNCOMP_UPDATE_GOLDEN=1 and review the "
                             f"diff):\n{diff[:6000]}")


# ---------------------------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------------------------
def rel_err(a, b) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    num = float(np.linalg.norm(a - b))
    den = float(np.linalg.norm(b))
    return num / den if den else num


def assert_close(got, want, rtol: float, what: str, *, dtype: bool = True) -> None:
    """Elementwise |got - want| <= rtol * (|want| + max|want|), same shape (and dtype)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if dtype:
        assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-30), err_msg=what)


# ---------------------------------------------------------------------------------------------
# subprocesses
# ---------------------------------------------------------------------------------------------
def child_env(extra: dict | None = None) -> dict[str, str]:
    """os.environ with the repository and tests/ first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS_DIR)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra or {})
    return env


def run_pytest_child(path: str | os.PathLike, *, env: dict | None = None, timeout: float = 600,
                     args: Sequence[str] = ()) -> str:
    """Run pytest on `path` in a child process. Fails unless the child passes with at least one
    passed test: a failure, an error, no tests or only skips fail the parent (a child that skips
    must not turn into a green parent; decide what is absent in the parent, before starting it)."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-rs",
                        "-p", "no:cacheprovider", *args, str(path)], env=child_env(env), cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    tail = (r.stdout + r.stderr)[-8000:]
    assert r.returncode == 0, f"pytest child on {path} exited with {r.returncode}:\n{tail}"
    last = [ln for ln in r.stdout.splitlines() if ln.strip()][-1:] or [""]
    assert " passed" in last[0], f"pytest child on {path} passed nothing:\n{tail}"
    return r.stdout


def numba_cuda_missing() -> str | None:
    """Why the CUDA tests cannot run here (numba-cuda, an optional package, is not installed),
    or None. Only absence skips: a CUDA backend that fails to import once numba.cuda is there is
    a test failure, not a skip."""
    import importlib.util

    try:
        found = importlib.util.find_spec("numba.cuda") is not None
    except ImportError:
        found = False
    return None if found else "numba.cuda is not installed (pip install 'rnncomp[cuda]')"


def nvrtc_missing() -> str | None:
    """Why PTX cannot be generated here (no NVVM/NVRTC from numba-cuda[cu13]), or None."""
    reason = numba_cuda_missing()
    if reason:
        return reason
    from rnncomp.backends.cuda import compat

    if compat.nvvm_available():
        return None
    return "NVVM/NVRTC not available (pip install 'numba-cuda[cu13]')"


# ---------------------------------------------------------------------------------------------
# examples
# ---------------------------------------------------------------------------------------------
EXAMPLES_BACKEND = os.environ.get("RNNCOMP_EXAMPLES_BACKEND", "interp")


def run_example(name: str, *args: str, out: Path | None = None, timeout: int = 300,
                backend: str | None = EXAMPLES_BACKEND) -> tuple[dict, str]:
    """Run examples/<name> (--no-progress); returns (its `result: {json}` line, stdout)."""
    cmd = [sys.executable, str(EXAMPLES / name), "--no-progress"]
    if backend is not None:
        cmd += ["--backend", backend]
    if out is not None:
        cmd += ["--out", str(out)]
    cmd += list(args)
    env = dict(os.environ)
    if backend is None:  # the example's own default ("auto"), as a user gets it, not the suite's
        env.pop("RNNCOMP_DEFAULT_BACKEND", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("result: ")]
    assert lines, f"{name} printed no result line:\n{proc.stdout}"
    return json.loads(lines[-1][len("result: "):]), proc.stdout


# ---------------------------------------------------------------------------------------------
# the cell table
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellCase:
    """make(): a fresh cell. oracle(X, params, L, init, scope) -> (outputs [B, T, O], flat list
    of final states) with `init` the flat list of initial states, `scope` the dynamic_rnn scope
    ("rnn" by default). torch: "lstm" / "gru" / "rnn_tanh" / "rnn_relu" when torch.nn has the
    cell (with the same parametrization after rnncomp.tools.convert), else None."""

    make: Callable[[], Any]
    oracle: Callable[..., tuple[np.ndarray, list[np.ndarray]]]
    torch: str | None = None


def _rnn_oracle(activation):
    def f(X, p, L, init, scope="rnn"):
        out, h = ref.rnn_ref(X, p, scope=f"{scope}/basic_rnn_cell", activation=activation,
                             h0=init[0], seq_len=L)
        return out, [h]
    return f


def _lstm_oracle(cell, peepholes):
    def f(X, p, L, init, scope="rnn", prefix=""):
        out, (c, h) = ref.lstm_ref(X, p, scope=f"{scope}/{prefix}{cell}", peepholes=peepholes,
                                   c0=init[0], h0=init[1], seq_len=L)
        return out, [c, h]
    return f


def _gru_oracle(reset_after):
    def f(X, p, L, init, scope="rnn", prefix=""):
        out, h = ref.gru_ref(X, p, scope=f"{scope}/{prefix}gru_cell", reset_after=reset_after,
                             h0=init[0], seq_len=L)
        return out, [h]
    return f


def _multi_tuple_oracle(X, p, L, init, scope="rnn"):
    c0, h0, g0 = init
    out, ((c, h), g) = ref.multi_ref(X, [
        functools.partial(ref.lstm_ref, params=p,
                          scope=ref.layer_scope(scope, 0, "basic_lstm_cell"),
                          c0=c0, h0=h0),
        functools.partial(ref.gru_ref, params=p, scope=ref.layer_scope(scope, 1, "gru_cell"),
                          h0=g0),
    ], L)
    return out, [c, h, g]


def _multi_concat_oracle(X, p, L, init, scope="rnn"):
    s = init[0]
    out, (h1, (c, h)) = ref.multi_ref(X, [
        functools.partial(ref.rnn_ref, params=p, scope=ref.layer_scope(scope, 0, "basic_rnn_cell"),
                          h0=s[:, :2]),
        functools.partial(ref.lstm_ref, params=p, scope=ref.layer_scope(scope, 1, "lstm_cell"),
                          peepholes=True, c0=s[:, 2:5], h0=s[:, 5:8]),
    ], L)
    return out, [np.concatenate([h1, c, h], axis=1)]


def _dropout_oracle(X, p, L, init, scope="rnn"):
    """Inference mode only (training-mode masks: tests/core/test_cells.py)."""
    return _lstm_oracle("basic_lstm_cell", False)(X, p, L, init, scope)


def _projection_oracle(X, p, L, init, scope="rnn"):
    w = f"{scope}/output_projection_wrapper"
    out, st = _gru_oracle(True)(X, p, L, init, scope, prefix="output_projection_wrapper/")
    y = out @ p[f"{w}/kernel"] + p[f"{w}/bias"]
    if L is not None:
        y = np.where((np.arange(X.shape[1])[None, :] < np.asarray(L)[:, None])[..., None], y, 0)
    return y.astype(out.dtype), st


CELLS: dict[str, CellCase] = {}


def _register():
    import rnncomp as rc

    CELLS.update({
        "rnn_tanh": CellCase(lambda: rc.BasicRNNCell(3), _rnn_oracle("tanh"), "rnn_tanh"),
        "rnn_relu": CellCase(lambda: rc.BasicRNNCell(3, activation="relu"), _rnn_oracle("relu"),
                             "rnn_relu"),
        "basic_lstm": CellCase(lambda: rc.BasicLSTMCell(3), _lstm_oracle("basic_lstm_cell", False),
                               "lstm"),
        "lstm_peep": CellCase(lambda: rc.LSTMCell(3, use_peepholes=True),
                              _lstm_oracle("lstm_cell", True)),
        "gru_before": CellCase(lambda: rc.GRUCell(3, reset_after=False), _gru_oracle(False)),
        "gru_after": CellCase(lambda: rc.GRUCell(3, reset_after=True), _gru_oracle(True), "gru"),
        "multi_tuple": CellCase(lambda: rc.MultiRNNCell([rc.BasicLSTMCell(3),
                                                         rc.GRUCell(2, reset_after=False)]),
                                _multi_tuple_oracle),
        "multi_concat": CellCase(lambda: rc.MultiRNNCell([rc.BasicRNNCell(2), rc.LSTMCell(3, True)],
                                                         state_is_tuple=False),
                                 _multi_concat_oracle),
        "dropout": CellCase(lambda: rc.DropoutWrapper(rc.BasicLSTMCell(3), input_keep_prob=0.7,
                                                      output_keep_prob=0.8, state_keep_prob=0.9),
                            _dropout_oracle),
        "projection": CellCase(lambda: rc.OutputProjectionWrapper(rc.GRUCell(3, reset_after=True),
                                                                  2),
                               _projection_oracle),
    })


_register()
BUILTIN_CELLS = {name: c.make for name, c in CELLS.items()}  # name -> () -> a fresh cell


# ---------------------------------------------------------------------------------------------
# the loss model
# ---------------------------------------------------------------------------------------------
def unroll(cell, X, dynamic: bool, L=None, init=None, scope=None, T: int | None = None):
    """dynamic_rnn, or static_rnn over T slices of X with the outputs stacked to [B, T, O]."""
    import rnncomp as rc

    if dynamic:
        return rc.dynamic_rnn(cell, X, sequence_length=L, initial_state=init, scope=scope)
    T = T if T is not None else X.shape[1]
    xs = [rc.reshape(rc.slice(X, t, t + 1, axis=1), (X.shape[0], X.shape[2])) for t in range(T)]
    outs, st = rc.static_rnn(cell, xs, sequence_length=L, initial_state=init, scope=scope)
    return rc.concat([rc.expand_dims(o, 1) for o in outs], axis=1), st


@dataclass
class LossModel:
    model: Any                       # rc.Model: (loss, {cell: (outputs, state)})
    cells: list[str]
    state_sizes: dict[str, list[int]]
    out_sizes: dict[str, int]
    dynamic: bool
    with_len: bool
    dtype: str
    T: int
    I: int


def loss_model(cells: Sequence[str], *, dynamic: bool = True, with_len: bool = True,
               dtype: str = "f64", T: int = 3, I: int = 2) -> LossModel:
    """One model holding every cell in `cells` (each under scope=<its name>), with inputs X, L
    (if with_len), and per cell <name>_s<k> (initial state k), <name>_Q<k>, <name>_R. Output 0 is
    loss = sum over cells of sum(out * R) + sum_k sum(tanh(final state k) * Q_k); output 1 maps
    each cell name to its (outputs [B, T, O], final state)."""
    import rnncomp as rc
    from rnncomp.frontend.trace import flatten, unflatten

    specs = {"X": rc.Input((None, T, I))}
    if with_len:
        specs["L"] = rc.Input((None,), "i32")
    sizes, trees, outs = {}, {}, {}
    for name in cells:
        probe = CELLS[name].make()
        sizes[name], trees[name] = flatten(probe.state_size)
        outs[name] = probe.output_size
        for k, s in enumerate(sizes[name]):
            specs[f"{name}_s{k}"] = rc.Input((None, s))
            specs[f"{name}_Q{k}"] = rc.Input((None, s))
        specs[f"{name}_R"] = rc.Input((None, T, outs[name]))

    def fn(**kw):
        loss = None
        res = {}
        for name in cells:
            init = unflatten(trees[name], [kw[f"{name}_s{k}"] for k in range(len(sizes[name]))])
            out, st = unroll(CELLS[name].make(), kw["X"], dynamic, kw.get("L"), init, scope=name,
                             T=T)
            part = rc.sum(out * kw[f"{name}_R"])
            for k, s in enumerate(flatten(st)[0]):
                part = part + rc.sum(rc.tanh(s) * kw[f"{name}_Q{k}"])
            loss = part if loss is None else loss + part
            res[name] = (out, st)
        return loss, res

    m = rc.Model(fn, specs, dtype=dtype)
    return LossModel(m, list(cells), sizes, outs, dynamic, with_len, dtype, T, I)


def loss_inputs(lm: LossModel, rng: np.random.Generator, B: int = 3,
                lengths: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    npdt = np.dtype(np.float32 if lm.dtype == "f32" else np.float64)
    inputs = {"X": rng.standard_normal((B, lm.T, lm.I)).astype(npdt)}
    if lm.with_len:
        inputs["L"] = np.asarray(lengths if lengths is not None else [0, lm.T, 2][:B], np.int32)
    for name in lm.cells:
        for k, s in enumerate(lm.state_sizes[name]):
            inputs[f"{name}_s{k}"] = (0.5 * rng.standard_normal((B, s))).astype(npdt)
            inputs[f"{name}_Q{k}"] = rng.standard_normal((B, s)).astype(npdt)
        inputs[f"{name}_R"] = rng.standard_normal((B, lm.T, lm.out_sizes[name])).astype(npdt)
    return inputs


def perturbed_params(model, rng: np.random.Generator, scale: float = 0.1) -> dict[str, np.ndarray]:
    """model.init(0) plus noise, so zero-initialized biases matter too."""
    return {k: (v + scale * rng.standard_normal(v.shape)).astype(v.dtype)
            for k, v in model.init(0).items()}


def oracle(lm: LossModel, name: str, params, inputs) -> tuple[np.ndarray, list[np.ndarray]]:
    """The independent NumPy result (outputs, flat final states) of cell `name` in inference
    mode."""
    init = [inputs[f"{name}_s{k}"] for k in range(len(lm.state_sizes[name]))]
    return CELLS[name].oracle(inputs["X"], params, inputs.get("L"), init, scope=name)


def fd_check(value: Callable[[dict, dict], float], params: dict, inputs: dict, grads: dict,
             names: Sequence[str], rng: np.random.Generator, *, eps: float = 1e-6,
             rtol: float = 1e-6, what: str = "") -> None:
    """Random-direction central finite differences in float64: for a random direction v over
    the parameters/inputs `names`, (value(x + eps v) - value(x - eps v)) / (2 eps) must equal
    sum_n <grads[n], v_n> (one VJP, two evaluations)."""
    dirs = {n: rng.standard_normal(np.shape(grads[n])) for n in names}

    def shifted(sign):
        p = {k: v + sign * eps * dirs[k] if k in dirs else v for k, v in params.items()}
        i = {k: v + sign * eps * dirs[k] if k in dirs else v for k, v in inputs.items()}
        return float(value(p, i))

    fd = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
    an = float(sum(np.sum(np.asarray(grads[n], np.float64) * dirs[n]) for n in names))
    rel = abs(fd - an) / max(abs(an), 1e-300)
    assert abs(fd - an) <= rtol * max(abs(an), abs(fd), 1e-8), \
        f"{what}: finite differences {fd!r} != gradient {an!r} (rel {rel:.2e})"


# ---------------------------------------------------------------------------------------------
# PyTorch as a second reference (LSTM, reset-after GRU, tanh/relu RNN)
# ---------------------------------------------------------------------------------------------
def torch_reference(kind: str, params: dict, scope: str, X: np.ndarray, L, init: list,
                    R: np.ndarray, Q: list) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """torch.nn.LSTM / GRU / RNN with rnncomp's parameters (rnncomp.tools.convert.to_torch_*)
    on loss = sum(out * R) + sum_k sum(tanh(s_k) * Q_k), where s is the final state in
    rnncomp's flat order (LSTM: c, h). Each instance runs alone over its first L[b] steps (so a
    length of 0 works). Returns (outputs [B, T, H], flat final states, d loss / d params in the
    rnncomp layout under `scope`)."""
    import torch

    from rnncomp.tools import convert

    I, H = X.shape[2], init[-1].shape[1]
    B, T = X.shape[:2]
    tdt = torch.float64 if X.dtype == np.float64 else torch.float32
    if kind == "lstm":
        sd, mod = convert.to_torch_lstm(params, scope=scope), torch.nn.LSTM(I, H, batch_first=True)
    elif kind == "gru":
        sd, mod = convert.to_torch_gru(params, scope=scope), torch.nn.GRU(I, H, batch_first=True)
    else:
        sd = convert.to_torch_rnn(params, scope=scope)
        mod = torch.nn.RNN(I, H, batch_first=True, nonlinearity=kind.split("_")[1])
    mod = mod.to(tdt)
    mod.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in sd.items()})
    lengths = [T] * B if L is None else [int(n) for n in L]
    loss = torch.zeros((), dtype=tdt)
    outs, finals = [], []
    for b in range(B):
        h0 = torch.tensor(init[-1][b:b + 1][None])
        c0 = torch.tensor(init[0][b:b + 1][None]) if kind == "lstm" else None
        n = lengths[b]
        if n == 0:
            o = torch.zeros((1, T, H), dtype=tdt)
            flat = [c0, h0] if kind == "lstm" else [h0]
        else:
            o, st = mod(torch.tensor(X[b:b + 1, :n]), (h0, c0) if kind == "lstm" else h0)
            o = torch.nn.functional.pad(o, (0, 0, 0, T - n))
            flat = [st[1], st[0]] if kind == "lstm" else [st]
        loss = loss + (o[0] * torch.tensor(R[b])).sum()
        for k, s in enumerate(flat):
            loss = loss + (torch.tanh(s[0, 0]) * torch.tensor(Q[k][b])).sum()
        outs.append(o[0].detach().numpy())
        finals.append([s[0, 0].detach().numpy() for s in flat])
    loss.backward()
    g = {k: v.grad.numpy().copy() for k, v in mod.named_parameters()}
    # both torch biases enter through their sum (for the GRU's n block: b_in and b_hn differ)
    if kind == "gru":
        g["bias_hh_l0"][:2 * H] = 0
        grads = convert.from_torch_gru(g, scope=scope)
    elif kind == "lstm":
        g["bias_hh_l0"][:] = 0
        grads = convert.from_torch_lstm(g, scope=scope, forget_bias=0.0)
    else:
        g["bias_hh_l0"][:] = 0
        grads = convert.from_torch_rnn(g, scope=scope)
    states = [np.stack([f[k] for f in finals]) for k in range(len(finals[0]))]
    return np.stack(outs), states, grads
