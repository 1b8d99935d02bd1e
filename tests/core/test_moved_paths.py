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
    before = getattr(rnncomp, old, None)
    mod = importlib.import_module(f"rnncomp.{old}")
    new = importlib.import_module(f"rnncomp.{OLD_TO_NEW[old]}")
    assert mod is new
    if before is None or isinstance(before, type(rnncomp)):
        assert getattr(rnncomp, old) is new
    else:  # rc.verify, rc.trace: the public function keeps its name
        assert getattr(rnncomp, old) is before
    assert new.__spec__.name == new.__name__  # the alias did not take over its spec


def test_public_functions_survive_importing_their_old_module():
    import rnncomp.trace  # noqa: F401
    import rnncomp.verify  # noqa: F401

    assert callable(rnncomp.verify) and callable(rnncomp.trace)
    assert rnncomp.verify.__name__ == "verify" and rnncomp.trace.__name__ == "trace"


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
