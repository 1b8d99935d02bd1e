"""Stable value names and source lines (rnncomp.ir.provenance, rnncomp.ir.printer).

- A pass that moves one op changes only the lines of that op (and of the few values that read
  it): the other values keep their names from stage to stage.
- Names do not depend on what else the process traced or optimized, nor on the process.
- Every value carries the file:line of the user's code that made it, beside the node (interned
  nodes are shared, so the location is not part of the node).
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import rnncomp as rc
from rnncomp.ir import provenance
from rnncomp.ir.printer import leaf_names, pformat
from rnncomp.transforms.autodiff import grad_graph
from rnncomp.transforms.passes import optimize

REPO = Path(__file__).resolve().parents[2]
HERE = os.path.relpath(__file__)


def lstm_model(units: int = 4):
    return rc.Model(lambda X: rc.dynamic_rnn(rc.BasicLSTMCell(units), X),
                    {"X": rc.Input((None, None, 3))})


def changed(a: str, b: str) -> list[str]:
    return [ln for ln in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def test_moving_one_matmul_changes_only_its_lines():
    """hoist moves x_t @ W_x out of the loop: the diff shows the moved matmul, the scan's new
    operand and binder, and the one add that reads it; the rest of the cell is untouched."""
    res = optimize(lstm_model().graph, verify=True)
    before, after = str(res.stages["licm"]), str(res.stages["hoist"])
    diff = changed(before, after)
    assert len(diff) <= 12, "\n".join(diff)
    removed = [ln for ln in diff if ln.startswith("-")]
    added = [ln for ln in diff if ln.startswith("+")]
    assert sum(" = matmul " in ln for ln in removed) == 1
    assert sum(" = matmul " in ln for ln in added) == 2  # the hoisted GEMM and h @ W_h
    for op in ("sigmoid", "tanh", "mul", "slice[axis=1"):
        assert not any(f" = {op}" in ln for ln in diff), (op, diff)
    # the value that replaced the traced matmul keeps its name: its users did not change
    (old_mm,) = [ln for ln in removed if " = matmul " in ln]
    name = old_mm.split(":")[0].strip("- ")
    assert any(ln.strip().startswith(f"+{name}:") or ln.lstrip("+ ").startswith(f"{name}:")
               for ln in added)


def test_every_stage_diff_is_smaller_than_the_graph():
    """No pass re-letters the graph: consecutive stages differ in a minority of lines."""
    res = optimize(lstm_model().graph, verify=True)
    texts = [(name, str(g)) for name, g in res.stages.items()]
    for (na, a), (nb, b) in zip(texts, texts[1:]):
        if nb == "fuse_elementwise":  # fusion rewrites the cell into fused regions
            continue
        assert len(changed(a, b)) <= len(b.splitlines()) // 2, (na, nb, changed(a, b))


def test_names_do_not_depend_on_history():
    """Optimizing a graph twice, or after other models that share interned nodes were traced
    and optimized (and are still alive), prints the same names."""
    m = lstm_model()
    first = [str(g) for g in optimize(m.graph).stages.values()]
    others = [lstm_model(), rc.Model(lambda X: rc.dynamic_rnn(rc.GRUCell(4), X),
                                     {"X": rc.Input((None, None, 3))})]
    kept = [optimize(o.graph) for o in others]
    again = [str(g) for g in optimize(m.graph).stages.values()]
    assert first == again
    assert str(lstm_model().graph) == str(m.graph)
    assert kept  # alive until here


def _stages_text() -> str:
    m = lstm_model()
    opt = optimize(m.graph).graph
    loss = rc.Model(lambda X: rc.sum(rc.square(rc.dynamic_rnn(rc.BasicLSTMCell(4), X)[0])),
                    {"X": rc.Input((None, None, 3))})
    g = grad_graph(loss.graph, 0)
    return "\n=====\n".join([str(opt), str(g), str(optimize(g).graph)])


def test_names_stable_across_processes():
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, "tests"); sys.path.insert(0, "tests/core")
        import test_provenance as t
        print(t._stages_text())
    """)
    runs = [subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": str(seed),
                                                       "PATH": "/usr/bin:/bin"}).stdout
            for seed in (1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] == _stages_text() + "\n"


def test_backward_keeps_forward_names():
    m = rc.Model(lambda X: rc.sum(rc.square(rc.dynamic_rnn(rc.BasicLSTMCell(4), X)[0])),
                 {"X": rc.Input((None, None, 3))})
    fwd = str(m.graph).splitlines()
    bwd = str(grad_graph(m.graph, 0)).splitlines()
    # the forward equations print identically inside the gradient graph (but the scan, which
    # autodiff replaces by an augmented scan that also outputs the residuals)
    body = [ln for ln in fwd if " = " in ln and " = scan[" not in ln]
    assert len(body) > 20
    assert all(ln in bwd for ln in body), [ln for ln in body if ln not in bwd]


def test_source_lines_point_to_the_users_code():
    def model(X):
        h = rc.tanh(X * 2.0)  # line A
        return rc.sigmoid(h) + 1.0  # line B

    first = inspect.getsourcelines(model)[1]
    m = rc.Model(model, {"X": rc.Input((None, 3))})
    text = pformat(m.graph, source_lines=True)
    lines = {ln.split(" = ")[1].split()[0]: ln for ln in text.splitlines() if " = " in ln}
    assert lines["mul"].endswith(f"# {HERE}:{first + 1}")
    assert lines["tanh"].endswith(f"# {HERE}:{first + 1}")
    assert lines["sigmoid"].endswith(f"# {HERE}:{first + 2}")
    assert lines["add"].endswith(f"# {HERE}:{first + 2}")
    assert str(m.graph) == pformat(m.graph)  # no locations unless asked
    assert "#" not in str(m.graph)


def test_source_lines_of_a_custom_cell_survive_the_passes():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import models
    finally:
        sys.path.remove(str(REPO / "examples"))
    src = Path(models.__file__).read_text().splitlines()
    m = models.custom_cell()
    for stage in (m.graph, optimize(m.graph).graph):
        text = pformat(stage, source_lines=True)
        locs = re.findall(r"# (\S+):(\d+)$", text, re.M)
        eqns = [ln for ln in text.splitlines() if " = " in ln and "lambda" not in ln]
        assert len(locs) == len(eqns), "every equation has a location"
        for path, line in locs:
            assert path.endswith("examples/models.py")
            code = src[int(line) - 1]
            # the DSL calls of the cell and of layer_norm (or the dynamic_rnn line)
            assert "rc." in code or "layer_norm" in code or "x - mu" in code, code
        # the layer-norm divisions point into layer_norm()
        ln_line = next(k for k, s in enumerate(src, 1) if "/ rc.sqrt(var + eps)" in s)
        assert any(int(line) == ln_line for _, line in locs)


def test_location_is_not_part_of_node_identity():
    """The same expression on two lines of two models is one interned node; each model's table
    gives it its own line."""
    def a(X):
        return rc.tanh(X)

    def b(X):
        y = X * 1.0  # a different line before it
        return rc.tanh(X) + y

    ma = rc.Model(a, {"X": rc.Input((None, 3))})
    mb = rc.Model(b, {"X": rc.Input((None, 3))})
    ta = ma.graph.outputs[0]
    tb = mb.graph.outputs[0].inputs[0]
    assert ta is tb
    la = provenance.family(ma.graph).get(ta).loc
    lb = provenance.family(mb.graph).get(tb).loc
    assert la[1] == inspect.getsourcelines(a)[1] + 1
    assert lb[1] == inspect.getsourcelines(b)[1] + 2


def test_leaf_names():
    assert leaf_names(["X", "rnn/basic_lstm_cell/kernel", "rnn/basic_lstm_cell/bias"]) == {
        "X": "X", "rnn/basic_lstm_cell/kernel": "kernel", "rnn/basic_lstm_cell/bias": "bias"}
    assert leaf_names(["rnn/multi_rnn_cell/cell_0/lstm/kernel",
                       "rnn/multi_rnn_cell/cell_1/lstm/kernel", "@ct/0", "@seed"]) == {
        "rnn/multi_rnn_cell/cell_0/lstm/kernel": "cell_0_kernel",
        "rnn/multi_rnn_cell/cell_1/lstm/kernel": "cell_1_kernel",
        "@ct/0": "ct_0", "@seed": "seed"}
    assert leaf_names(["a/w", "w"]) == {"a/w": "a_w", "w": "w"}


def test_names_that_collide_get_a_suffix():
    # a parameter named like a value ('b') keeps its name; the value is renamed
    def fn(X):
        return rc.tanh(rc.matmul(X, rc.param("b", (3, 2))) + 1.0)

    text = str(rc.trace(fn, {"X": rc.Input((None, 3))}).graph)
    assert "b_1:f32[B,2] = add a 1.0:f32" in text and "matmul X b" in text
    assert "tanh b_1" in text
