"""The module paths of the flat layout (rnncomp.passes, rnncomp.compiler, ...) still import and
run, as aliases of the modules that moved (rnncomp/__init__.py, _MOVED); `import rnncomp` loads
none of them, nor Numba."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import rnncomp

OLD_TO_NEW = dict(rnncomp._MOVED)


@pytest.mark.parametrize("old", sorted(OLD_TO_NEW))
def test_old_path_is_the_new_module(old):
    mod = importlib.import_module(f"rnncomp.{old}")
    new = importlib.import_module(f"rnncomp.{OLD_TO_NEW[old]}")
    assert mod is new
    assert getattr(rnncomp, old) is new
    assert new.__spec__.name == new.__name__  # the alias did not take over its spec


def test_from_import_and_documented_names():
    from rnncomp.compiler import compile_graph
    from rnncomp.passes import optimize
    from rnncomp.train import Trainer

    from rnncomp.runtime.compiler import compile_graph as cg2
    assert compile_graph is cg2 and callable(optimize) and Trainer.__module__.startswith(
        "rnncomp.train")


def test_import_rnncomp_is_lean():
    code = ("import sys, rnncomp; heavy = [m for m in ('numba', 'llvmlite', 'rnncomp.tools.cli', "
            "'rnncomp.transforms.autodiff', 'rnncomp.train.trainer') if m in sys.modules]; "
            "print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("mod", ["rnncomp", "rnncomp.cli", "rnncomp.tools.cli"])
def test_python_dash_m(mod):
    r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage: rnncomp")
