"""ONNX export (rnncomp.onnx, docs/deployment.md): every built-in cell and wrapper, custom cells
and the other DSL ops are exported, checked by onnx.checker and run in ONNX Runtime, whose
outputs must equal rnncomp's interpreter within 1e-5 (f32). Built-in cells are tried both ways:
as native ONNX RNN/LSTM/GRU ops and as an ONNX Scan of the cell's ops (native=False).

Skipped, with the reason, when onnx or onnxruntime is not installed (pip install rnncomp[onnx]).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX export tests need onnx: pip install rnncomp[onnx]")
ort = pytest.importorskip("onnxruntime",
                          reason="ONNX export tests need onnxruntime: pip install rnncomp[onnx]")

import rnncomp as rc  # noqa: E402
from helpers import BUILTIN_CELLS  # noqa: E402
from rnncomp.frontend import layers, losses  # noqa: E402
from rnncomp.frontend.trace import flatten  # noqa: E402
from rnncomp.train import checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ATOL = 1e-5
NATIVE = {"RNN", "LSTM", "GRU"}
B, T, I = 3, 5, 2


# --- helpers ---------------------------------------------------------------------------------
def noisy_params(m: rc.Model, seed: int = 1) -> dict[str, np.ndarray]:
    """Initial parameters plus noise, so zero-initialized biases and diagonals matter too."""
    rng = np.random.default_rng(seed)
    return {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(v.dtype)
            for k, v in m.init(seed).items()}


def op_types(proto) -> set[str]:
    out = set()

    def walk(g):
        for n in g.node:
            out.add(n.op_type)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(proto.graph)
    return out


def export_and_compare(m: rc.Model, params, inputs, tmp_path, *, native=True, atol=ATOL):
    """Export to a file, check it with onnx.checker, run it in ONNX Runtime and compare every
    output with the interpreter; returns the ModelProto."""
    path = tmp_path / f"{m.name}_{'native' if native else 'scan'}.onnx"
    proto = rc.onnx.export(m, params, path, native=native)
    onnx.checker.check_model(str(path), full_check=True)
    got = rc.onnx.run(path, inputs)
    want = m.run(params, inputs)
    flat, _ = flatten(want)
    names = rc.onnx.output_names(m)
    assert list(got) == names
    for name, w in zip(names, flat):
        assert got[name].shape == w.shape, name
        np.testing.assert_allclose(got[name], w, rtol=0, atol=atol, err_msg=name)
    return proto


def seq_model(make_cell, *, lengths: bool, dtype="f32", initial=False) -> rc.Model:
    def model(X, L=None, C0=None, H0=None):
        cell = make_cell()
        init = None
        if initial:
            init = rc.LSTMStateTuple(C0, H0) if isinstance(cell.state_size, tuple) else H0
        return rc.dynamic_rnn(cell, X, sequence_length=L, initial_state=init)

    specs = {"X": rc.Input((None, None, I))}
    if lengths:
        specs["L"] = rc.Input((None,), "i32")
    if initial:
        specs["C0"] = rc.Input((None, 3))
        specs["H0"] = rc.Input((None, 3))
    return rc.Model(model, specs, dtype=dtype, name="seq")


def seq_inputs(rng, *, lengths: bool, b=B, t=T, dtype=np.float32):
    ins = {"X": rng.standard_normal((b, t, I)).astype(dtype)}
    if lengths:  # a full, an empty and a partial sequence
        ins["L"] = np.array([t, 0, 2] + [1] * (b - 3), np.int32)[:b]
    return ins


# --- every built-in cell and wrapper, native and as a Scan, with and without lengths ---------
@pytest.mark.parametrize("native", [True, False], ids=["native", "scan"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "seqlen"])
@pytest.mark.parametrize("cell", list(BUILTIN_CELLS))
def test_builtin_cells(cell, lengths, native, tmp_path, rng):
    m = seq_model(BUILTIN_CELLS[cell], lengths=lengths)
    proto = export_and_compare(m, noisy_params(m), seq_inputs(rng, lengths=lengths), tmp_path,
                               native=native)
    ops = op_types(proto)
    if native:  # DropoutWrapper too: dropout is the identity in the exported inference graph
        assert ops & NATIVE and "Scan" not in ops, ops
    else:
        assert "Scan" in ops and not ops & NATIVE, ops


def test_renamed_cells_in_a_scope_are_native(tmp_path, rng):
    # recognition goes by the parameters' structure, not by the default names
    def model(X, L):
        cell = rc.OutputProjectionWrapper(rc.MultiRNNCell(
            [rc.DropoutWrapper(rc.LSTMCell(3, use_peepholes=True, forget_bias=0.0, name="enc"),
                               input_keep_prob=0.5, state_keep_prob=0.7),
             rc.GRUCell(3, reset_after=False, name="g")], name="stack"), 2, activation="tanh",
            name="proj")
        return rc.dynamic_rnn(cell, X, sequence_length=L, scope="encoder")

    m = rc.Model(model, {"X": rc.Input((None, None, I)), "L": rc.Input((None,), "i32")},
                 name="renamed")
    assert "encoder/proj/stack/cell_0/enc/w_f_diag" in m.param_specs
    proto = export_and_compare(m, noisy_params(m), seq_inputs(rng, lengths=True), tmp_path)
    assert [n.op_type for n in proto.graph.node if n.op_type in NATIVE] == ["LSTM", "GRU"]
    assert "Scan" not in op_types(proto)


@pytest.mark.parametrize("forget_bias", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("kind", ["basic", "lstm", "peephole"])
def test_lstm_forget_bias(kind, forget_bias, tmp_path, rng):
    make = {"basic": lambda: rc.BasicLSTMCell(3, forget_bias=forget_bias),
            "lstm": lambda: rc.LSTMCell(3, forget_bias=forget_bias),
            "peephole": lambda: rc.LSTMCell(3, use_peepholes=True, forget_bias=forget_bias)}[kind]
    m = seq_model(make, lengths=True)
    proto = export_and_compare(m, noisy_params(m), seq_inputs(rng, lengths=True), tmp_path)
    (lstm,) = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert len(lstm.input) == (8 if kind == "peephole" else 7)  # P (peepholes) is input 7


@pytest.mark.parametrize("reset_after", [False, True])
def test_gru_forms_map_to_linear_before_reset(reset_after, tmp_path, rng):
    m = seq_model(lambda: rc.GRUCell(3, reset_after=reset_after), lengths=False)
    proto = export_and_compare(m, noisy_params(m), seq_inputs(rng, lengths=False), tmp_path)
    (gru,) = [n for n in proto.graph.node if n.op_type == "GRU"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gru.attribute}
    assert attrs["linear_before_reset"] == int(reset_after)


@pytest.mark.parametrize("native", [True, False], ids=["native", "scan"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_initial_state_kept_for_empty_sequences(cell, native, tmp_path, rng):
    # rnncomp (like TF1) returns the initial state for a length-0 sequence; ONNX Runtime's
    # native ops return zeros there, which the exporter corrects
    make = {"gru": lambda: rc.GRUCell(3, reset_after=True), "lstm": lambda: rc.LSTMCell(3)}[cell]
    m = seq_model(make, lengths=True, initial=True)
    ins = seq_inputs(rng, lengths=True)
    ins["C0"] = rng.standard_normal((B, 3)).astype(np.float32)
    ins["H0"] = rng.standard_normal((B, 3)).astype(np.float32)
    export_and_compare(m, noisy_params(m), ins, tmp_path, native=native)


def test_dynamic_batch_and_time(tmp_path, rng):
    m = seq_model(lambda: rc.BasicLSTMCell(3), lengths=True)
    p = noisy_params(m)
    path = tmp_path / "dyn.onnx"
    proto = rc.onnx.export(m, p, path)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(proto.graph.input) + list(proto.graph.output)}
    assert dims == {"X": ["B", "T", I], "L": ["B"], "0": ["B", "T", 3], "1.c": ["B", 3],
                    "1.h": ["B", 3]}
    for b, t in [(1, 1), (4, 7)]:
        ins = seq_inputs(rng, lengths=False, b=b, t=t)
        ins["L"] = rng.integers(0, t + 1, size=b).astype(np.int32)
        assert rc.onnx.check(m, p, path, ins) <= ATOL


def test_output_names(tmp_path, rng):
    def model(X):
        y = rc.tanh(X)
        return {"a.b": y, "a": {"b": y * 2.0}, "same": X}   # an input returned as an output too

    m = rc.Model(model, {"X": rc.Input((None, 3))}, name="names")
    assert rc.onnx.output_names(m) == ["a.b", "a.b_1", "same"]
    export_and_compare(m, {}, {"X": rng.standard_normal((2, 3)).astype(np.float32)}, tmp_path)
    single = rc.Model(lambda X: rc.tanh(X), {"X": rc.Input((None, 3))})
    assert rc.onnx.output_names(single) == ["output"]
    clash = rc.Model(lambda X: {"X": rc.tanh(X)}, {"X": rc.Input((None, 3))})
    with pytest.raises(rc.onnx.ExportError, match="'X' is also an input"):
        rc.onnx.export(clash, {})


def test_float64_model_exports_as_scan(tmp_path, rng):
    m = seq_model(lambda: rc.GRUCell(3, reset_after=False), lengths=True, dtype="f64")
    proto = export_and_compare(m, noisy_params(m), seq_inputs(rng, lengths=True, dtype=np.float64),
                               tmp_path, atol=1e-12)
    assert "Scan" in op_types(proto)


# --- custom cells: an ONNX Scan of the cell's ops ----------------------------------------------
def layer_norm(x, gain, shift, eps):
    mu = rc.mean(x, axis=1, keepdims=True)
    var = rc.mean(rc.square(x - mu), axis=1, keepdims=True)
    return (x - mu) / rc.sqrt(var + eps) * gain + shift


class LayerNormLSTMCell(rc.RNNCell):
    """docs/custom_cell_tutorial.md's layer-normalized LSTM."""

    default_name = "ln_lstm_cell"

    def __init__(self, num_units, eps=1e-5, forget_bias=1.0):
        super().__init__()
        self.num_units, self.eps, self.forget_bias = num_units, eps, forget_bias

    @property
    def state_size(self):
        return rc.LSTMStateTuple(self.num_units, self.num_units)

    @property
    def output_size(self):
        return self.num_units

    def call(self, x, state):
        c, h = state
        H = self.num_units
        z = rc.concat([x, h], axis=1) @ self.param("kernel", (x.shape[1] + H, 4 * H))
        normed = []
        for name, part in zip("ijfo", rc.split(z, 4, axis=1)):
            with rc.variable_scope(f"ln_{name}"):
                normed.append(layer_norm(part, self.param("gain", (H,), "ones"),
                                         self.param("shift", (H,), "zeros"), self.eps))
        i, j, f, o = normed
        new_c = rc.sigmoid(f + self.forget_bias) * c + rc.sigmoid(i) * rc.tanh(j)
        with rc.variable_scope("ln_c"):
            gc, bc = self.param("gain", (H,), "ones"), self.param("shift", (H,), "zeros")
        new_h = rc.sigmoid(o) * rc.tanh(layer_norm(new_c, gc, bc, self.eps))
        return new_h, rc.LSTMStateTuple(new_c, new_h)


class PeepholeRNNCell(rc.RNNCell):
    """docs/dsl.md's custom cell: tanh([x, h] @ kernel + diag * h)."""

    default_name = "peephole_rnn_cell"

    def __init__(self, num_units):
        super().__init__()
        self.num_units = num_units

    @property
    def state_size(self):
        return self.num_units

    @property
    def output_size(self):
        return self.num_units

    def call(self, x, h):
        k = self.param("kernel", (x.shape[1] + self.num_units, self.num_units))
        d = self.param("diag", (self.num_units,), "zeros")
        new_h = rc.tanh(rc.concat([x, h], axis=1) @ k + d * h)
        return new_h, new_h


def minimal_gated(x, h):
    """A minimal gated unit as a FunctionCell: one forget gate."""
    xh = rc.concat([x, h], axis=1)
    f = rc.sigmoid(xh @ rc.param("wf", (x.shape[1] + 3, 3)) + rc.param("bf", (3,), "ones"))
    c = rc.tanh(rc.concat([x, f * h], axis=1) @ rc.param("wc", (x.shape[1] + 3, 3)))
    new_h = f * h + (1.0 - f) * c
    return new_h, new_h


class ImpostorLSTMCell(rc.BasicLSTMCell):
    """Named and shaped like BasicLSTMCell but h' = o * c' (no tanh): must not become a native
    LSTM, since the re-traced candidate differs."""

    def call(self, x, state):
        c, h = state
        H = self.num_units
        z = rc.concat([x, h], 1) @ self.param("kernel", (x.shape[1] + H, 4 * H)) + \
            self.param("bias", (4 * H,), "zeros")
        i, j, f, o = rc.split(z, 4, axis=1)
        new_c = rc.sigmoid(f + self.forget_bias) * c + rc.sigmoid(i) * rc.tanh(j)
        new_h = rc.sigmoid(o) * new_c
        return new_h, rc.LSTMStateTuple(new_c, new_h)


CUSTOM = {
    "layer_norm_lstm": lambda: LayerNormLSTMCell(3),
    "peephole_rnn": lambda: PeepholeRNNCell(3),
    "minimal_gated": lambda: rc.FunctionCell(minimal_gated, state_size=3),
    "impostor_lstm": lambda: ImpostorLSTMCell(3),
    "multi_custom": lambda: rc.MultiRNNCell([PeepholeRNNCell(3), rc.GRUCell(3, reset_after=True)]),
}


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "seqlen"])
@pytest.mark.parametrize("cell", list(CUSTOM))
def test_custom_cells(cell, lengths, tmp_path, rng):
    m = seq_model(CUSTOM[cell], lengths=lengths)
    proto = export_and_compare(m, noisy_params(m), seq_inputs(rng, lengths=lengths), tmp_path)
    ops = op_types(proto)
    assert "Scan" in ops and not ops & NATIVE, ops


# --- the other DSL ops and loops -------------------------------------------------------------
def kitchen_sink(X, ids, lab, X0, X1):
    def decay(c, _):
        w = 1.0 / (rc.cast(rc.step_index(), "f32") + 1.0)
        return c * 0.5 + w, c

    tot, ys = rc.scan(decay, rc.zeros(("B", 2)), None, length=3, reverse=True)
    c2, ys2 = rc.scan(lambda c, x: (c + rc.sum(x, axis=1), rc.tanh(x)), rc.zeros(("B",)),
                      rc.transpose(X, (1, 0, 2)), reverse=True)
    _, st = rc.static_rnn(rc.GRUCell(3, reset_after=True), [X0, X1])
    e = layers.embedding(ids, 7, 3)
    logits = layers.dense(rc.concat([e, st], axis=1), 5, activation="relu")
    td = rc.tensordot(X, rc.param("td", (3, 4)), (2,), (0,))
    return {
        "tot": tot, "ys": ys, "c2": c2, "ys2": ys2, "softmax": rc.softmax(logits),
        "log_softmax": rc.log_softmax(logits), "lse": rc.logsumexp(logits, axis=-1),
        "picked": rc.take(logits, lab), "one_hot": rc.one_hot(lab, 5), "td": td,
        "split": rc.split(td, 2, axis=-1)[1], "mean": rc.mean(X, axis=(0, 1)),
        "max": rc.max(X, axis=1), "count": rc.count(X, axis=1),
        "bcast": rc.broadcast_to(rc.expand_dims(rc.mean(X, axis=1), 1), ("B", "T", 3)),
        "elementwise": rc.where(X > 0.0, rc.exp(rc.minimum(X, 1.0)),
                                rc.sqrt(rc.abs(X)) + rc.pow(rc.square(X) + 1.0, 0.5)),
        "logic": rc.cast(rc.logical_and(X > 0.0, rc.logical_not(X > 1.0)), "f32"),
        "loss": losses.sparse_softmax_cross_entropy(labels=lab, logits=logits),
        "argmax": rc.argmax(logits, -1), "argmax_i32": rc.argmax(X, axis=1, output_type="i32"),
    }


def test_kitchen_sink_ops(tmp_path, rng):
    m = rc.Model(kitchen_sink, {"X": rc.Input((None, None, 3)), "ids": rc.Input((None,), "i32"),
                                "lab": rc.Input((None,), "i32"), "X0": rc.Input((None, 3)),
                                "X1": rc.Input((None, 3))}, name="sink")
    ins = {"X": rng.standard_normal((4, 6, 3)).astype(np.float32),
           "ids": np.array([0, 6, 3, 2], np.int32), "lab": np.array([4, 0, 1, 2], np.int32),
           "X0": rng.standard_normal((4, 3)).astype(np.float32),
           "X1": rng.standard_normal((4, 3)).astype(np.float32)}
    proto = export_and_compare(m, noisy_params(m), ins, tmp_path)
    # an output named like a parameter ("td") keeps its name; the initializer is renamed
    assert "td" in [o.name for o in proto.graph.output]


def test_unsupported_op_names_the_op(tmp_path):
    m = rc.Model(lambda X: X + rc.random_uniform_like(X), {"X": rc.Input((None, 3))})
    with pytest.raises(rc.onnx.UnsupportedOpError, match="random_uniform") as e:
        rc.onnx.export(m, m.init(), tmp_path / "r.onnx")
    assert e.value.op == "random_uniform"
    assert not (tmp_path / "r.onnx").exists()


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    m = seq_model(lambda: rc.BasicRNNCell(3), lengths=False)
    with pytest.raises(ImportError, match=r"rnncomp\[onnx\]"):
        rc.onnx.export(m, m.init())


# --- the command line ------------------------------------------------------------------------
def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rnncomp.tools.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_export(tmp_path, rng):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import models
    finally:
        sys.path.remove(str(REPO / "examples"))
    out = tmp_path / "f.onnx"
    r = cli("export", "examples/models.py:varlen_lstm", "--format", "onnx", "-o", str(out),
            "--check")
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "recurrences: LSTM" in r.stdout
    assert "X: f32[B,T,3]" in r.stdout and "1.h: f32[B,4]" in r.stdout
    assert "check: ONNX Runtime matches" in r.stdout
    onnx.checker.check_model(str(out), full_check=True)
    m = models.varlen_lstm()  # the CLI's default parameters are m.init(seed=0)
    ins = {"X": rng.standard_normal((2, 6, 3)).astype(np.float32),
           "L": np.array([6, 3], np.int32)}
    assert rc.onnx.check(m, m.init(0), out, ins) <= ATOL

    # trained weights from a checkpoint; a custom cell as a Scan
    m = models.custom_cell()
    p = noisy_params(m, seed=5)
    ckpt = tmp_path / "ckpt.npz"
    checkpoint.save(ckpt, p)
    out2 = tmp_path / "custom.onnx"
    r = cli("export", "examples/models.py:custom_cell", "-o", str(out2), "--params", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert "recurrences: Scan x1" in r.stdout and f"parameters: {ckpt}" in r.stdout
    assert rc.onnx.check(m, p, out2, {"X": ins["X"]}) <= ATOL

    r = cli("export", "examples/models.py:lstm", "-o", str(tmp_path / "f.txt"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("rnncomp: error: export: give --format onnx"), r.stderr


def test_sort_ops_export(tmp_path, rng):
    """argsort (stable, longest first: ties keep their order) and permute (forward and inverse)
    as ONNX ops (a length-aware dynamic_rnn sorts its batch with them)."""
    from rnncomp.ir import ops

    def f(X, L):
        perm = ops.argsort(L)
        xs = ops.permute(X, perm, 0)
        return {"perm": perm, "sorted": xs, "back": ops.permute(xs * 2.0, perm, 0, True)}

    m = rc.Model(f, {"X": rc.Input((None, 3)), "L": rc.Input((None,), "i32")}, name="sort")
    ins = {"X": rng.standard_normal((6, 3)).astype(np.float32),
           "L": np.array([2, 5, 2, 0, 5, 1], np.int32)}
    proto = export_and_compare(m, {}, ins, tmp_path, native=False)
    assert {"TopK", "Gather", "ScatterElements"} <= op_types(proto)
    got = rc.onnx.run(tmp_path / "sort_scan.onnx", ins)
    np.testing.assert_array_equal(got["perm"], [1, 4, 0, 2, 5, 3])


def test_length_aware_rnn_exports_its_sort(tmp_path, rng):
    """The sorted batch of a length-aware dynamic_rnn (unsorted lengths with ties) runs in ONNX
    Runtime as exported: native LSTM and Scan both equal the interpreter."""
    m = seq_model(lambda: rc.BasicLSTMCell(3), lengths=True)
    assert any(n.op.value == "argsort" for n in m.graph.nodes)
    ins = seq_inputs(rng, lengths=True, b=6)
    ins["L"] = np.array([2, T, 0, 2, 1, T], np.int32)
    for native in (True, False):
        proto = export_and_compare(m, noisy_params(m), ins, tmp_path, native=native)
        assert "TopK" in op_types(proto)
