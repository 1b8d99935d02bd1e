"""Printed IR: golden text for small LSTM and GRU dynamic_rnn graphs (regenerate with
RNNCOMP_UPDATE_GOLDEN=1), determinism within and across processes, and the one-scan shape of a
dynamic unroll."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import TESTS_DIR, golden

import rnncomp as rc

REPO = Path(__file__).resolve().parents[2]


def lstm_model(X, L):
    return rc.dynamic_rnn(rc.BasicLSTMCell(4), X, sequence_length=L)


def gru_model(X):
    return rc.dynamic_rnn(rc.GRUCell(3, reset_after=False), X)


GRAPHS = {
    "lstm_dynamic_rnn": lambda: rc.Model(lstm_model, {"X": rc.Input((None, None, 2)),
                                                      "L": rc.Input((None,), "i32")}).graph,
    "gru_dynamic_rnn": lambda: rc.Model(gru_model, {"X": rc.Input((None, None, 2))}).graph,
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_golden(name):
    g = GRAPHS[name]()
    rc.verify(g)
    golden(TESTS_DIR / "golden" / f"{name}.txt", str(g))


@pytest.mark.parametrize("name", list(GRAPHS))
def test_deterministic_within_process(name):
    assert str(GRAPHS[name]()) == str(GRAPHS[name]())


def test_deterministic_across_processes():
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, "tests"); sys.path.insert(0, "tests/core")
        import test_printer as t
        print(str(t.GRAPHS["lstm_dynamic_rnn"]()))
        print("=====")
        print(str(t.GRAPHS["gru_dynamic_rnn"]()))
    """)
    runs = [subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": str(seed),
                                                       "PATH": "/usr/bin:/bin"}).stdout
            for seed in (1, 2)]
    assert runs[0] == runs[1]
    here = str(GRAPHS["lstm_dynamic_rnn"]()) + "\n=====\n" + str(GRAPHS["gru_dynamic_rnn"]()) + "\n"
    assert runs[0] == here


def test_lstm_prints_one_scan_with_cell_inside():
    text = str(GRAPHS["lstm_dynamic_rnn"]())
    lines = text.splitlines()
    scan_lines = [k for k, ln in enumerate(lines) if " = scan[" in ln]
    assert len(scan_lines) == 1
    k = scan_lines[0]
    # the body opens on the next line, indented deeper than the scan equation
    assert lines[k + 1].lstrip().startswith("{ lambda ;")
    indent = len(lines[k]) - len(lines[k].lstrip())
    body = []
    for ln in lines[k + 2:]:
        if ln.strip().startswith("in ("):
            break
        body.append(ln)
    assert all(len(b) - len(b.lstrip()) > indent for b in body)
    ops = [b.split(" = ")[1].split()[0].split("[")[0] for b in body]
    # the LSTM cell: one matmul, the four gates (3 sigmoid + candidate tanh), tanh(c')
    assert ops.count("matmul") == 1
    assert ops.count("sigmoid") == 3
    assert ops.count("tanh") == 2
    assert ops.count("where") == 3  # sequence_length masking of c, h and the output
    outside = [ln for ln in lines[:k] + lines[k + 2 + len(body):]]
    assert not any(" = matmul" in ln or " = sigmoid" in ln for ln in outside)
    assert lines[0] == "# kernel=rnn/basic_lstm_cell/kernel  bias=rnn/basic_lstm_cell/bias"
    assert lines[1].startswith("{ lambda ; X:f32[B,T,2] L:i32[B] kernel:f32[6,16] bias:f32[16]. ")


def test_printer_names_and_literals():
    def fn(X):
        return rc.tanh(X * 2.0 + 1.0)

    g = rc.trace(fn, {"X": rc.Input((None, 3))}).graph
    assert str(g) == textwrap.dedent("""\
        { lambda ; X:f32[B,3]. let
            a:f32[B,3] = mul X 2.0:f32
            b:f32[B,3] = add a 1.0:f32
            c:f32[B,3] = tanh b
          in (c) }""")


def test_printer_name_encoding():
    from rnncomp.ir.printer import _encode

    assert [_encode(k) for k in (0, 1, 25, 26, 27, 51, 52)] == \
        ["a", "b", "z", "ba", "bb", "bz", "ca"]
