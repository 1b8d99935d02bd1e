"""The examples run as scripts (subprocess) and print what they promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / name), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def matrix_after(text: str, header: str) -> np.ndarray:
    block = text.split(header + "\n", 1)[1].split("==", 1)[0]
    block = block.split("\n" + "static_rnn", 1)[0].split("\ninstance", 1)[0]
    return np.array([float(v) for v in re.findall(r"-?\d+\.\d*(?:e[-+]\d+)?", block)])


@pytest.mark.parametrize("name", ["workflow1_two_steps.py", "workflow2_variable_length.py",
                                  "quickstart.py"])
def test_help(name):
    out = run_example(name, "--help")
    assert out.startswith("usage: ") and "--seed" in out


def test_workflow1():
    out = run_example("workflow1_two_steps.py")
    for title in ("manual", "static_rnn", "dynamic_rnn"):
        assert f"== {title} graph ==" in out
    assert out.count(" = scan[") == 1  # only the dynamic_rnn graph has a loop
    Y0 = matrix_after(out, "== Y0 (manual) ==").reshape(4, 5)
    Y1 = matrix_after(out, "== Y1 (manual) ==").reshape(4, 5)
    assert np.all(np.abs(Y0) <= 1) and np.all(np.abs(Y1) <= 1)  # tanh
    # check the printed numbers independently: same weights as the example (init seed 42)
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import workflow1_two_steps as w1
    finally:
        sys.path.pop(0)
    import rnncomp as rc

    p = rc.Model(w1.manual, {"X0": rc.Input((None, 3)), "X1": rc.Input((None, 3))}).init(42)
    b = np.random.default_rng(42).standard_normal((1, 5)).astype(np.float32)
    X0 = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]], np.float32)
    X1 = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]], np.float32)
    ref0 = np.tanh(X0 @ p["Wx"] + b)
    ref1 = np.tanh(ref0 @ p["Wy"] + X1 @ p["Wx"] + b)
    np.testing.assert_allclose(Y0, ref0, atol=1e-6)
    np.testing.assert_allclose(Y1, ref1, atol=1e-6)
    m = re.search(r"agree with the manual unroll: max \|diff\| = (\S+)", out)
    assert m and float(m.group(1)) < 1e-5


def test_workflow2():
    out = run_example("workflow2_variable_length.py", "--quiet")
    assert "== dynamic_rnn graph ==" not in out
    outputs = matrix_after(out, "== outputs [4, 2, 5] ==").reshape(4, 2, 5)
    state = matrix_after(out, "== final state [4, 5] ==").reshape(4, 5)
    assert np.all(outputs[1, 1] == 0)
    np.testing.assert_array_equal(state[1], outputs[1, 0])
    np.testing.assert_array_equal(state[[0, 2, 3]], outputs[[0, 2, 3], 1])
    m = re.search(r"static_rnn agrees with dynamic_rnn: max \|diff\| = (\S+)", out)
    assert m and float(m.group(1)) < 1e-6
    full = run_example("workflow2_variable_length.py")
    assert "== dynamic_rnn graph ==" in full and full.count(" = scan[has_length=True") == 1


def test_quickstart():
    out = run_example("quickstart.py", "--seed", "0")
    assert out.startswith("# kernel=rnn/basic_lstm_cell/kernel  bias=rnn/basic_lstm_cell/bias\n"
                          "{ lambda ; X:f32[B,T,3] L:i32[B] kernel:f32[8,20] bias:f32[20]. let")
    assert out.count(" = scan[") == 1
    assert "parameters: rnn/basic_lstm_cell/kernel (8, 20), rnn/basic_lstm_cell/bias (20,)" in out
    assert "outputs: (4, 6, 5) float32" in out
    assert "state.c: (4, 5)  state.h: (4, 5)" in out
    o = re.search(r"outputs\[0, -1, :3\] = \[(.*)\]", out).group(1).split()
    h = re.search(r"state.h\[0, :3\]     = \[(.*)\]", out).group(1).split()
    assert o == h and len(o) == 3  # instance 0 runs all 6 steps: last output == final h
    assert all(abs(float(v)) < 1 for v in o)
    assert "final state h equals the output at each instance's last valid step" in out
