"""The on-disk kernel cache: a second process finds the compiled kernel (no Numba compile), a
changed model gets a different key and file, and an unwritable cache directory falls back to a
temporary one with a RuntimeWarning.

The child processes run from the repository root (like pytest itself), with their own
RNNCOMP_CACHE_DIR; each reports Numba's dispatcher statistics (CompiledGraph.fn is the njit
dispatcher: `stats.cache_hits` / `stats.cache_misses` per signature).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.runtime.compiler import cache_dir, compile_graph

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import rnncomp as rc

def f(X):
    out, st = rc.dynamic_rnn(rc.BasicRNNCell(3), X)
    return out

m = rc.Model(f, {"X": rc.Input((None, None, 2))})
p = m.init(0)
x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 3, 2)
t1 = time.perf_counter()
cg = m.compile("cpu")
y = cg(*m.arguments(p, {"X": x}))
t2 = time.perf_counter()
st = cg.fn.stats
print("RESULT " + json.dumps({
    "path": str(cg.path), "key": cg.key,
    "hits": sum(st.cache_hits.values()), "misses": sum(st.cache_misses.values()),
    "first_call_s": t2 - t1, "total_s": t2 - t0, "y": np.asarray(y[0]).tolist(),
    "ref": np.asarray(m(p, X=x)).tolist()}))
"""


def _child(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNCOMP_")}
    env["RNNCOMP_CACHE_DIR"] = str(cache)
    r = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_second_process_hits_the_cache(tmp_path, capsys):
    cache = tmp_path / "cache"
    first = _child(cache)
    assert first["misses"] == 1 and first["hits"] == 0, first
    np.testing.assert_allclose(first["y"], first["ref"], rtol=1e-5, atol=1e-6)
    second = _child(cache)
    assert second["path"] == first["path"] and second["key"] == first["key"]
    assert second["hits"] == 1 and second["misses"] == 0, \
        f"the second process compiled again: {second}"
    assert second["y"] == first["y"]
    assert Path(first["path"]).parent == cache
    assert list((cache / "__pycache__").glob(Path(first["path"]).stem + ".*.nbi"))
    with capsys.disabled():
        print(f"\n[test_cache] first call: {first['first_call_s']:.2f} s (compile), "
              f"second process: {second['first_call_s']:.3f} s (cache hit)")


def _model(H=3, act="tanh", dtype="f32"):
    def f(X):
        out, st = rc.dynamic_rnn(rc.BasicRNNCell(H, activation=act), X)
        return out

    return rc.Model(f, {"X": rc.Input((None, None, 2))}, dtype=dtype)


def test_editing_the_model_changes_the_key(tmp_path):
    # compile_graph writes and imports the module; Numba compiles only on the first call
    base = compile_graph(_model().graph, cache=tmp_path)
    same = compile_graph(_model().graph, cache=tmp_path)
    assert same.key == base.key and same.path == base.path
    # kernels are shape-generic (sizes are run-time arguments): another hidden size is the
    # same kernel (tests/cpu/test_shape_generic.py runs one with two sizes)
    other_size = compile_graph(_model(H=4).graph, cache=tmp_path)
    assert other_size.key == base.key and other_size.path == base.path
    assert list(other_size.sizes) != list(base.sizes)
    variants = {"activation": _model(act="relu"), "dtype": _model(dtype="f64")}
    paths = {base.path}
    for what, m in variants.items():
        cg = compile_graph(m.graph, cache=tmp_path)
        assert cg.key != base.key, f"changing the {what} kept the cache key"
        assert cg.path != base.path and cg.path.exists()
        paths.add(cg.path)
    assert len(paths) == 1 + len(variants)


def _tanh2(x):
    return rc.tanh(x * 2.0)


def test_same_graph_other_cache_dir_reports_the_real_file(tmp_path):
    """Within one process a kernel module is imported once; compiling the same graph with
    another cache directory reuses it, and `path` names the file it was imported from."""
    a = compile_graph(_model(act=_tanh2).graph, cache=tmp_path / "a")
    b = compile_graph(_model(act=_tanh2).graph, cache=tmp_path / "b")
    assert b.fn is a.fn
    for cg in (a, b):
        assert cg.path.exists() and cg.path.read_text() == cg.source


def _check_fallback(bad: Path, dtype: str):
    with pytest.warns(RuntimeWarning, match="not writable"):
        d = cache_dir(bad)
    assert d != bad and os.access(d, os.W_OK)
    with pytest.warns(RuntimeWarning, match="not writable"):
        # (a model no other test of this process compiled: its module is not imported yet;
        # kernels are shape-generic, so models of this file differ in more than a size)
        cg = compile_graph(_model(act="sigmoid", dtype=dtype).graph, cache=bad)
    assert cg.path.parent == d and cg.path.exists()
    assert not bad.exists() or not any(bad.iterdir())


def test_read_only_cache_dir_falls_back(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        probe = ro / "probe"
        try:
            probe.write_text("")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("running as a user who can write to a 0o555 directory (root)")
        _check_fallback(ro, "f32")
    finally:
        ro.chmod(0o755)


def test_uncreatable_cache_dir_falls_back(tmp_path):
    # works for root too: the cache directory cannot be created under a regular file
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _check_fallback(blocker / "cache", "f64")


def test_env_var_selects_the_cache_dir(cpu_cache_dir):
    assert cache_dir() == cpu_cache_dir
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cg = compile_graph(_model(act="relu", dtype="f64").graph)
    assert cg.path.parent == cpu_cache_dir


def test_changing_a_helper_file_recompiles(tmp_path, monkeypatch):
    """The key covers the backend's helper modules (backends/cpu/fastmath.py, runtime.py): a
    changed helper gives a new key and a new module file, so kernels compiled with the old helper
    code are never reused (a user upgrading rnncomp in place included)."""
    from rnncomp.backends.cpu import driver

    copies = []
    for f in driver.CODE_FILES:
        c = tmp_path / "helpers" / Path(f).name
        c.parent.mkdir(exist_ok=True)
        c.write_bytes(Path(f).read_bytes())
        copies.append(c)
    monkeypatch.setattr(driver, "CODE_FILES", tuple(copies))
    base = compile_graph(_model(H=5).graph, cache=tmp_path)
    keys = {base.key}
    for c in copies:
        original = c.read_bytes()
        c.write_bytes(original + b"\n# changed\n")
        cg = compile_graph(_model(H=5).graph, cache=tmp_path)
        assert cg.key not in keys, f"changing {c.name} kept the cache key"
        assert cg.path != base.path and cg.path.exists() and cg.source == base.source
        keys.add(cg.key)
        c.write_bytes(original)  # the same contents again: the first key
        again = compile_graph(_model(H=5).graph, cache=tmp_path)
        assert again.key == base.key and again.path == base.path


def test_generated_imports_are_covered_by_the_key():
    """Every rnncomp module the generated source imports is in driver.CODE_FILES (else a change
    to it would not change the key)."""
    import importlib
    import re

    from rnncomp.backends.cpu import driver

    cg = compile_graph(_model(H=5).graph)
    covered = {Path(f).resolve() for f in driver.CODE_FILES}
    imported = []
    for line in cg.source.splitlines():
        m = re.match(r"\s*from (rnncomp[\w.]*) import (\w+)", line)
        if m:
            mod = importlib.import_module(f"{m.group(1)}.{m.group(2)}")
        else:
            m = re.match(r"\s*import (rnncomp[\w.]*)", line)
            if not m:
                continue
            mod = importlib.import_module(m.group(1))
        imported.append(mod.__name__)
        assert Path(mod.__file__).resolve() in covered, \
            f"the kernel imports {mod.__name__} ({mod.__file__}), which the cache key ignores"
    assert imported, "the generated source imports no rnncomp helper module (parser outdated?)"
