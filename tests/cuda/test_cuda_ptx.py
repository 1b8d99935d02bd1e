"""Every kernel the CUDA backend generates for the built-in cells (forward and backward graphs,
float32) compiles to sm_90 PTX on a machine without a GPU, and ptxas (where a new enough one is
installed) reports no register spills. Skipped without numba-cuda + NVVM, so CI without the
cuda extra passes."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import nvrtc_missing

ROOT = Path(__file__).resolve().parents[2]

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("PTX generation is not available under the CUDA simulator",
                allow_module_level=True)
if nvrtc_missing():  # only what is really absent skips; an import error of the backend fails
    pytest.skip(nvrtc_missing(), allow_module_level=True)

from rnncomp.backends.cuda import compat  # noqa: E402

import rnncomp as rc  # noqa: E402
from rnncomp.transforms.autodiff import grad_graph  # noqa: E402
from rnncomp.ir.dtypes import DType  # noqa: E402
from rnncomp.transforms.passes import optimize  # noqa: E402

from rnncomp.backends.cuda import codegen  # noqa: E402

H, I, T = 64, 32, 5
CC = (9, 0)

CELLS = {
    "basic_rnn": lambda: rc.BasicRNNCell(H),
    "basic_lstm": lambda: rc.BasicLSTMCell(H),
    "lstm_peepholes": lambda: rc.LSTMCell(H, use_peepholes=True),
    "gru_reset_before": lambda: rc.GRUCell(H, reset_after=False),
    "gru_reset_after": lambda: rc.GRUCell(H, reset_after=True),
    "dropout": lambda: rc.DropoutWrapper(rc.BasicLSTMCell(H), 0.6, 0.7, 0.8),
}


def _nbtype(dt: DType):
    from numba import types

    return {DType.f32: types.float32, DType.f64: types.float64, DType.i32: types.int32,
            DType.i64: types.int64, DType.bool: types.boolean}[dt]


def _module_and_specs(name: str, tmp: Path):
    def fn(X, L):
        out, state = rc.dynamic_rnn(CELLS[name](), X, sequence_length=L)
        return rc.sum(out * out), out, state

    m = rc.Model(fn, {"X": rc.Input((None, T, I)), "L": rc.Input((None,), "i32")})
    out = []
    for tag, g in (("fwd", m.graph), ("bwd", grad_graph(m.graph))):
        og = optimize(g).graph
        host: set = set()
        codegen.classify(og, host, codegen.mirrored_inputs(og))
        src, specs = codegen.render(og, host)
        path = tmp / f"gen_{name}_{tag}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for s in specs.values():
            out.append((f"{name}/{tag}/{s.name}", getattr(mod, s.name).py_func, s))
    return out


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    ks = []
    for name in CELLS:
        ks += _module_and_specs(name, tmp)
    return ks


def _sig(spec):
    from numba import types

    args = []
    for dt, nd in spec.arg_dtypes:
        t = _nbtype(dt)
        args.append(t if nd == 0 else types.Array(t, nd, "C"))
    return types.void(*args)


def test_every_generated_kernel_compiles_to_sm90_without_spills(kernels, tmp_path):
    assert len(kernels) >= 2 * len(CELLS)
    ptxas = compat.find_ptxas()
    report = []
    for label, fn, spec in kernels:
        ptx, _ = compat.compile_ptx_nogpu(fn, _sig(spec), cc=CC)
        assert ".target sm_90" in ptx and ".entry" in ptx, label
        # float32 graphs: no double arithmetic from untyped constants or promotions
        assert not re.search(r"\b(add|mul|fma|sub|div)\.(rn\.)?f64\b", ptx), label
        if ptxas is None:
            continue
        src = tmp_path / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([ptxas, f"-arch=sm_{CC[0]}{CC[1]}", "-v", "-c", str(src), "-o",
                            str(tmp_path / "k.o")], capture_output=True, text=True)
        if r.returncode != 0 and "Unsupported .version" in r.stderr:
            ptxas = None
            continue
        assert r.returncode == 0, (label, r.stderr)
        text = r.stdout + r.stderr
        spills = [int(a) + int(b) for a, b in
                  re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)]
        regs = max(int(x) for x in re.findall(r"Used (\d+) registers", text))
        report.append(f"{label}: {regs} regs, spills {max(spills or [0])}")
        assert max(spills or [0]) == 0, (label, text)
        assert regs <= 255
    print("\n" + "\n".join(report))
