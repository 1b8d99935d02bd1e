"""Compile the persistent LSTM kernels to sm_90 PTX without a GPU, and check ptxas's report.

Needs numba-cuda with NVVM (pip: ``numba-cuda[cu13]``); skipped otherwise.  The ptxas part needs
a ptxas at least as new as NVVM (pip: ``nvidia-cuda-nvcc`` of the same CUDA minor as
``nvidia-nvvm``; an older ptxas rejects the PTX's ``.version``) and is skipped otherwise.
Register counts are printed (``pytest -s``) and recorded in docs/design-cuda-kernels.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import nvrtc_missing

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("PTX generation is not available under the CUDA simulator",
                allow_module_level=True)

if nvrtc_missing():  # only what is really absent skips; an import error of the backend fails
    pytest.skip(nvrtc_missing(), allow_module_level=True)

from rnncomp.backends.cuda import compat  # noqa: E402

from rnncomp.backends.cuda import persistent as pk  # noqa: E402

CC = (9, 0)
NT = 256
REGS_PER_SM = 65536

_ptx_cache: dict = {}


def _kernels():
    """(label, python function, signature) for every persistent kernel."""
    sigs = pk.signatures()
    out = []
    for B in (1, 8):
        _, f = pk.make_persistent_fwd(B, NT, use_shfl=True)
        out.append((f"lstm_fwd_persistent_B{B}", f, sigs["lstm_fwd_persistent"]))
        _, b = pk.make_persistent_bwd(B, NT, use_shfl=True)
        out.append((f"lstm_bwd_persistent_B{B}", b, sigs["lstm_bwd_persistent"]))
    return out


KERNELS = _kernels()
IDS = [k[0] for k in KERNELS]


def _ptx(label, fn, sig):
    if label not in _ptx_cache:
        ptx, _ = compat.compile_ptx_nogpu(fn, sig, cc=CC)
        _ptx_cache[label] = ptx
    return _ptx_cache[label]


@pytest.mark.parametrize("label,fn,sig", KERNELS, ids=IDS)
def test_compiles_to_sm90_ptx(label, fn, sig):
    ptx = _ptx(label, fn, sig)
    assert ".target sm_90" in ptx
    assert ".entry" in ptx
    # float32 throughout: no double-precision arithmetic slipped in through untyped constants
    assert not re.search(r"\b(add|mul|fma|sub|div)\.(rn\.)?f64\b", ptx), label
    assert "cvt.f64.f32" not in ptx and "cvt.rn.f32.f64" not in ptx, label
    assert "cudaCGSynchronize" in ptx  # grid.sync() between steps
    assert "shfl.sync" in ptx  # warp-shuffle reductions on hardware


def _ptxas_report(ptx: str, tmp_path: Path):
    ptxas = compat.find_ptxas()
    if ptxas is None:
        pytest.skip("ptxas not found")
    src = tmp_path / "k.ptx"
    src.write_text(ptx)
    # -c: relocatable (the grid-sync entry points live in libcudadevrt, linked at load time)
    r = subprocess.run([ptxas, f"-arch=sm_{CC[0]}{CC[1]}", "-v", "-c", str(src), "-o",
                        str(tmp_path / "k.o")], capture_output=True, text=True)
    if r.returncode != 0 and "Unsupported .version" in r.stderr:
        pytest.skip(f"{ptxas} is older than NVVM: {r.stderr.strip()[:120]}")
    assert r.returncode == 0, r.stderr
    text = r.stderr + r.stdout
    regs = [int(x) for x in re.findall(r"Used (\d+) registers", text)]
    stack = [int(x) for x in re.findall(r"(\d+) bytes stack frame", text)]
    spills = [int(a) + int(b) for a, b in
              re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)]
    smem = [int(x) for x in re.findall(r"(\d+) bytes smem", text)]
    return dict(regs=max(regs), stack=max(stack or [0]), spills=max(spills or [0]),
                smem=max(smem or [0]), text=text)


@pytest.mark.parametrize("label,fn,sig", KERNELS, ids=IDS)
def test_ptxas_registers_and_no_spills(label, fn, sig, tmp_path):
    rep = _ptxas_report(_ptx(label, fn, sig), tmp_path)
    print(f"\n{label}: {rep['regs']} registers, stack {rep['stack']} B, spills {rep['spills']} B,"
          f" static smem {rep['smem']} B")
    assert rep["regs"] <= 255
    assert rep["spills"] == 0, rep["text"]
    assert rep["stack"] == 0, rep["text"]  # acc[B] promoted to registers, no local memory
    # one NT-thread block must fit an SM's register file (persistent grid: 1 block per SM)
    assert rep["regs"] * NT <= REGS_PER_SM


def test_row_stack_shim_makes_compile_work_on_numpy_without_row_stack():
    """Simulate NumPy 2.5 (np.row_stack removed) in a fresh interpreter: without the shim the
    first CUDA compile raises AttributeError in numba-cuda; with it, PTX comes out."""
    code = textwrap.dedent(
        """
        import sys, numpy as np
        sys.path.insert(0, %r)
        if hasattr(np, "row_stack"):
            try:
                del np.row_stack
            except AttributeError:
                pass
        shim = sys.argv[1] == "shim"
        if shim:
            from rnncomp.backends.cuda import compat
            compat.ensure_numpy_compat(); compat.ensure_numpy_compat()  # idempotent
            assert np.row_stack is np.vstack
        from numba import cuda, float32
        def k(a):
            i = cuda.grid(1)
            if i < a.size:
                a[i] = a[i] * float32(2.0)
        try:
            cuda.compile_ptx(k, "void(float32[::1])", cc=(9, 0))
            print("COMPILED")
        except AttributeError as e:
            print("ATTRIBUTEERROR", e)
        """ % str(ROOT)
    )
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    res = {}
    for mode in ("noshim", "shim"):
        r = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                           env=env, timeout=300)
        res[mode] = r.stdout + r.stderr[-2000:]
    assert "COMPILED" in res["shim"], res["shim"]
    # numba-cuda versions that guard row_stack themselves compile either way; 0.30.x does not
    assert "COMPILED" in res["noshim"] or "row_stack" in res["noshim"], res["noshim"]


def test_shim_is_idempotent_and_keeps_existing_attributes():
    import numpy as np

    before = np.__dict__.get("row_stack")
    compat.ensure_numpy_compat()
    compat.ensure_numpy_compat()
    if before is not None:
        assert np.row_stack is before  # never replaces what NumPy has
    else:
        assert np.row_stack is np.vstack
