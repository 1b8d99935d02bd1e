"""Faults in the on-disk kernel cache (rnncomp/runtime/kernel_cache.py).

A cache entry is the generated `<name>.py` plus Numba's `__pycache__/<name>.kernel-*.nbi/.nbc`
(and a `.pyc` if Python wrote one). A truncated, garbage or half-written entry is detected,
cleared and recompiled with a RuntimeWarning; two processes compiling the same graph at once
both succeed and leave a cache the next process loads without compiling; an unwritable cache
directory falls back to a temporary one with a warning.

Every test uses one tiny graph (about a second to compile) in a private cache directory; the
module name of a cache entry is content-addressed, so the tests drop it from sys.modules to make
the next compile_graph behave like a fresh process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import is_root_like, subprocess_env

import rnncomp as rc
from rnncomp.runtime.compiler import cache_dir, compile_graph

X = np.arange(6, dtype=np.float32).reshape(2, 3) / 4


def tiny_model():
    return rc.Model(lambda X: rc.tanh(rc.matmul(X, rc.param("w", (3, 2)))) * 2.0,
                    {"X": rc.Input((None, 3))}, name="tiny")


TINY = tiny_model()
W = TINY.init(0)["w"]
EXPECTED = np.tanh(X.astype(np.float64) @ W) * 2.0

# run in subprocesses: compile the tiny graph in the cache directory argv[1], print its result
# and Numba's cache statistics (hits, misses) for the kernel
SCRIPT = """
import sys
import numpy as np
from test_cache_faults import TINY, W, X
from rnncomp.runtime.compiler import compile_graph
cg = compile_graph(TINY.graph, cache=sys.argv[1])
out = cg(X, W)[0]
st = cg.fn.stats
print(repr(out.tobytes().hex()), sum(st.cache_hits.values()), sum(st.cache_misses.values()))
"""


def forget(path: Path) -> None:
    """Forget the imported module of a cache entry (as if this were a new process)."""
    sys.modules.pop(path.stem, None)


def compile_fresh(d: Path):
    """compile_graph in directory d as a new process would, plus the warnings it gave."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for name in [n for n in sys.modules if n.startswith("rnncomp_k_")]:
            if Path(getattr(sys.modules[name], "__file__", "") or "").parent != d:
                sys.modules.pop(name)
        cg = compile_graph(TINY.graph, cache=d)
        out = cg(X, W)[0]
    np.testing.assert_allclose(out, EXPECTED, rtol=1e-5, atol=1e-6)
    return cg, [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]


def numba_files(cg, suffix: str) -> list[Path]:
    return sorted((cg.path.parent / "__pycache__").glob(f"{cg.path.stem}.*{suffix}"))


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    """A private cache directory holding a valid entry for the tiny graph."""
    d = tmp_path_factory.mktemp("kcache")
    cg, warned = compile_fresh(d)
    assert warned == []
    assert cg.path.parent == d and cg.path.read_text() == cg.source
    assert numba_files(cg, ".nbi") and numba_files(cg, ".nbc")
    return d


def assert_cache_hit(d: Path) -> None:
    """The entry in d is valid: a fresh import loads Numba's code without compiling."""
    cg, warned = compile_fresh(d)
    forget(cg.path)
    cg, warned = compile_fresh(d)
    assert warned == []
    assert sum(cg.fn.stats.cache_hits.values()) == 1, cg.fn.stats
    assert sum(cg.fn.stats.cache_misses.values()) == 0, cg.fn.stats


SOURCE_FAULTS = {
    "truncated": lambda b: b[: len(b) // 2],
    "empty": lambda b: b"",
    "garbage_bytes": lambda b: bytes(range(256)) * 4,  # not even UTF-8
    "edited": lambda b: b.replace(b"return", b"return  ", 1),
}


@pytest.mark.parametrize("fault", list(SOURCE_FAULTS))
def test_corrupt_source_is_detected_and_recompiled(entry, fault):
    cg0, _ = compile_fresh(entry)
    forget(cg0.path)
    cg0.path.write_bytes(SOURCE_FAULTS[fault](cg0.path.read_bytes()))
    cg, warned = compile_fresh(entry)
    assert any("is corrupt (its source differs from the rendered graph)" in w and
               "recompiling" in w for w in warned), warned
    assert cg.path.read_text() == cg.source
    assert_cache_hit(entry)


NUMBA_FAULTS = {
    "nbi_garbage": (".nbi", lambda b: b"\x80\x04garbage" * 20),
    "nbi_truncated": (".nbi", lambda b: b[: len(b) - 20]),
    "nbc_truncated": (".nbc", lambda b: b[: len(b) // 2]),
    "nbc_garbage": (".nbc", lambda b: b"\x80\x04K\x01" + os.urandom(64)),
}


@pytest.mark.parametrize("fault", list(NUMBA_FAULTS))
def test_corrupt_numba_cache_is_cleared_and_recompiled(entry, fault):
    suffix, corrupt = NUMBA_FAULTS[fault]
    cg0, _ = compile_fresh(entry)
    assert_cache_hit(entry)  # the entry is valid before the fault
    forget(cg0.path)
    for f in numba_files(cg0, suffix):
        f.write_bytes(corrupt(f.read_bytes()))
    cg, warned = compile_fresh(entry)
    assert any("loading Numba's cached code failed" in w for w in warned), warned
    assert sum(cg.fn.stats.cache_misses.values()) == 1  # recompiled
    assert_cache_hit(entry)


def test_corrupt_pyc_is_never_read(entry):
    """Only the rendered source runs (test_cache_security plants a working .pyc): a corrupt one
    next to the entry changes nothing."""
    cg0, _ = compile_fresh(entry)
    forget(cg0.path)
    pyc = Path(importlib.util.cache_from_source(str(cg0.path)))
    st = cg0.path.stat()
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little") + \
        (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + \
        (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(header + b"\xff garbage, not marshal data")  # header valid, body not
    cg, warned = compile_fresh(entry)
    assert warned == []
    assert_cache_hit(entry)


def test_leftover_temp_files_are_ignored(entry):
    cg0, _ = compile_fresh(entry)
    junk = cg0.path.with_name(cg0.path.name + ".k3j4h5.tmp")  # a writer died before rename
    junk.write_bytes(b"def kernel(:\n")
    junk2 = cg0.path.parent / "__pycache__" / (numba_files(cg0, ".nbi")[0].name + ".tmp.ab12")
    junk2.write_bytes(b"\x00\x01")
    forget(cg0.path)
    assert_cache_hit(entry)


def test_two_processes_compiling_at_once(tmp_path):
    """Both succeed with the same result; afterwards a third process loads from the cache."""
    d = tmp_path / "shared-cache"
    cmd = [sys.executable, "-c", SCRIPT, str(d)]
    env = subprocess_env()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert "corrupt" not in err, err
    outs = [r[0].split()[0] for r in results]
    assert outs[0] == outs[1]
    assert len(list(d.glob("rnncomp_k_*.py"))) == 1
    assert not list(d.glob("*.tmp")) and not list((d / "__pycache__").glob("*.tmp*"))
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert third.returncode == 0, third.stderr
    value, hits, misses = third.stdout.split()
    assert value == outs[0] and (hits, misses) == ("1", "0"), third.stdout


def _unwritable(tmp_path: Path, how: str) -> Path:
    if how == "under_a_file":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        return blocker / "cache"  # cannot be created by anyone, root included
    d = tmp_path / "read-only"
    d.mkdir()
    if is_root_like(d):
        pytest.skip("running as root: permission bits do not stop writes (under_a_file covers it)")
    d.chmod(0o500)
    return d


@pytest.mark.parametrize("how", ["under_a_file", "chmod_0500"])
@pytest.mark.parametrize("via", ["argument", "RNNCOMP_CACHE_DIR"])
def test_unwritable_cache_dir_falls_back_to_a_temporary_one(tmp_path, monkeypatch, how, via):
    bad = _unwritable(tmp_path, how)
    try:
        if via == "argument":
            with pytest.warns(RuntimeWarning, match=r"not using the kernel cache directory .*: "
                                                    r"it is not writable .*rnncomp-cache"):
                d = cache_dir(bad)
        else:
            monkeypatch.setenv("RNNCOMP_CACHE_DIR", str(bad))
            with pytest.warns(RuntimeWarning, match=str(bad)):
                d = cache_dir()
        assert d != bad and d.is_dir() and os.access(d, os.W_OK)
        if via == "argument" and how == "under_a_file":  # compile once through the fallback
            forget_all = [n for n in sys.modules if n.startswith("rnncomp_k_")]
            for n in forget_all:
                sys.modules.pop(n)
            with pytest.warns(RuntimeWarning, match="not writable"):
                cg = compile_graph(TINY.graph, cache=bad)
            assert cg.path.parent == d
            np.testing.assert_allclose(cg(X, W)[0], EXPECTED, rtol=1e-5, atol=1e-6)
    finally:
        if bad.parent.name == "read-only" or bad.name == "read-only":
            bad.chmod(0o700)
