"""The kernel cache as an attacker or a bad day sees it (rnncomp/runtime/kernel_cache.py).

Code is imported from the cache directory, so: it is created private (0700); a directory owned
by someone else or writable by group/others is refused (a private mkdtemp folder is used, whose
name nobody can predict); only the rendered source runs (a planted `.pyc` never does); modules
are published in sys.modules only when complete (threads racing on a first call); a full disk,
a directory in an entry's place or files deleted under Numba's feet still give a result.

Every test uses the tiny graph of test_cache_faults in its own directory.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_cache_faults import EXPECTED, TINY, W, X

from rnncomp.runtime import kernel_cache
from rnncomp.runtime.compiler import compile_graph


def compile_in(d, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for name in [n for n in sys.modules if n.startswith("rnncomp_k_")]:
            sys.modules.pop(name)
        cg = compile_graph(TINY.graph, cache=d, **kw)
        out = cg(X, W)[0]
    np.testing.assert_allclose(out, EXPECTED, rtol=1e-5, atol=1e-6)
    return cg, [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]


def test_created_private(tmp_path):
    d = tmp_path / "new" / "cache"
    cg, warned = compile_in(d)
    assert warned == [] and cg.path.parent == d
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_group_or_world_writable_dir_is_refused(tmp_path, mode):
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(mode)
    cg, warned = compile_in(d)
    assert any("writable by group or others" in w for w in warned), warned
    assert cg.path.parent != d and not list(d.iterdir())  # nothing written or read there
    fb = cg.path.parent
    assert stat.S_IMODE(fb.stat().st_mode) == 0o700 and fb.name != f"rnncomp-cache-{os.getuid()}"


@pytest.mark.skipif(os.getuid() != 0, reason="making a directory owned by another user needs root")
def test_dir_owned_by_someone_else_is_refused(tmp_path):
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    cg, warned = compile_in(d)
    assert any("owned by uid 65534" in w for w in warned), warned
    assert cg.path.parent != d


def test_symlink_in_place_of_the_dir_is_refused(tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    link = tmp_path / "cache"
    link.symlink_to(real)
    cg, warned = compile_in(link)
    assert any("symbolic link" in w for w in warned), warned
    assert not list(real.iterdir())


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cg, warned = compile_in("~/kc")
    assert warned == [] and cg.path.parent == tmp_path / "kc"
    assert not (Path.cwd() / "~").exists()


def test_planted_pyc_never_runs(tmp_path):
    """A .pyc with a valid header for the entry's source would be run by a normal import."""
    cg, _ = compile_in(tmp_path)
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    st = cg.path.stat()
    os.utime(evil, ns=(st.st_atime_ns, st.st_mtime_ns))
    import py_compile

    pyc = Path(importlib.util.cache_from_source(str(cg.path)))
    pyc.parent.mkdir(exist_ok=True)
    # the same mtime and size header as the real source, the planted code inside
    evil.write_text(evil.read_text().ljust(st.st_size - 1) + "\n")
    os.utime(evil, ns=(st.st_atime_ns, st.st_mtime_ns))
    py_compile.compile(str(evil), cfile=str(pyc), doraise=True)
    compile_in(tmp_path)
    assert not marker.exists()


def test_threads_first_call_at_once(tmp_path):
    for name in [n for n in sys.modules if n.startswith("rnncomp_k_")]:
        sys.modules.pop(name)
    results, errors = [], []
    barrier = threading.Barrier(4)

    def work():
        try:
            barrier.wait()
            cg = compile_graph(TINY.graph, cache=tmp_path, always_compile=False)
            results.append(cg(X, W)[0])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert errors == [] and len(results) == 4
    for r in results:
        np.testing.assert_allclose(r, EXPECTED, rtol=1e-5, atol=1e-6)


def test_disk_full_compiles_in_memory(tmp_path, monkeypatch):
    def full(path, text, replace=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kernel_cache, "atomic_write", full)
    cg, warned = compile_in(tmp_path)
    assert any("compiling in memory" in w and "No space left" in w for w in warned), warned
    assert not any("corrupt" in w for w in warned), warned


def test_directory_in_place_of_an_entry(tmp_path):
    cg, _ = compile_in(tmp_path)
    path = cg.path
    path.unlink()
    path.mkdir()
    (path / "junk").write_text("x")
    cg, warned = compile_in(tmp_path)
    assert any("cannot be read" in w for w in warned), warned
    assert path.is_file() and path.read_text() == cg.source
    cg, warned = compile_in(tmp_path)
    assert warned == []


def test_numba_files_deleted_before_the_first_call(tmp_path):
    import shutil

    for name in [n for n in sys.modules if n.startswith("rnncomp_k_")]:
        sys.modules.pop(name)
    cg = compile_graph(TINY.graph, cache=tmp_path, always_compile=True)
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = cg(X, W)[0]
    np.testing.assert_allclose(out, EXPECTED, rtol=1e-5, atol=1e-6)
