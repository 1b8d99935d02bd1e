"""The `rnncomp` command line, run as a user runs it: in a subprocess, on examples/models.py.

`python -m rnncomp.tools.cli` is used so the tests work without the console script; one test runs the
installed `rnncomp` script (wherever rnncomp is pip-installed). Golden IR text lives in
tests/cli/golden/ (tests/helpers.py `golden`: regenerate it with RNNCOMP_UPDATE_GOLDEN=1).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import golden

REPO = Path(__file__).resolve().parents[2]
MODELS = "examples/models.py"
GOLDEN = Path(__file__).resolve().parent / "golden"

HAS_DOT = shutil.which("dot") is not None


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO,
        timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("RNNCOMP_PRINT_AFTER", None)  # keep stdout to what the command prints
    return subprocess.run([sys.executable, "-m", "rnncomp.tools.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def ok(*args: str, **kw) -> str:
    r = cli(*args, **kw)
    assert r.returncode == 0, f"rnncomp {' '.join(args)} failed ({r.returncode}):\n{r.stderr}"
    return r.stdout


def fails(*args: str, code: int | None = None, **kw) -> str:
    """Run a command that must fail cleanly: non-zero exit, one-line message, no traceback."""
    r = cli(*args, **kw)
    assert r.returncode != 0, f"expected failure, got:\n{r.stdout}"
    if code is not None:
        assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{r.stderr}"
    assert lines[0].startswith("rnncomp: "), lines[0]
    return lines[0]


# --- help ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sub", [[], ["inspect"], ["run"], ["bench"], ["cache"]])
def test_help(sub):
    out = ok(*sub, "--help")
    assert "usage: rnncomp" in out


def test_no_command_prints_help():
    r = cli()
    assert r.returncode != 0
    assert "inspect" in r.stdout and "run" in r.stdout


# --- inspect: text ---------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["lstm", "gru", "peephole", "varlen_lstm", "static_rnn",
                                   "custom_cell"])
def test_inspect_traced_golden(model):
    out = ok("inspect", f"{MODELS}:{model}", "--stage", "traced")
    assert re.search(r"^\{ lambda ; X\w*:f32\[", out, re.M)  # inputs print by name
    golden(GOLDEN / f"{model}_traced.txt", out)


def test_inspect_default_stage_is_traced():
    assert ok("inspect", f"{MODELS}:lstm") == ok("inspect", f"{MODELS}:lstm", "--stage", "traced")


def test_inspect_module_path_and_graph_and_kwargs(tmp_path):
    # package.module:function form (examples/ on PYTHONPATH), a function returning a Graph,
    # and keyword arguments from -k
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'examples'}"}
    by_module = ok("inspect", "models:lstm", env=env)
    assert by_module == ok("inspect", f"{MODELS}:lstm_graph")
    wide = ok("inspect", f"{MODELS}:lstm", "-k", "units=6")
    assert "f32[B,6]" in wide and "f32[9,24]" in wide


def test_inspect_output_file(tmp_path):
    out = tmp_path / "lstm.txt"
    r = cli("inspect", f"{MODELS}:lstm", "-o", str(out))
    assert r.returncode == 0 and r.stdout == ""
    assert out.read_text() == ok("inspect", f"{MODELS}:lstm")


def test_inspect_backward():
    out = ok("inspect", f"{MODELS}:lstm", "--stage", "backward")
    # the VJP graph takes one cotangent per float output and has a reverse scan (BPTT)
    assert "@ct/0" in out
    assert "reverse=True" in out and "reverse=False" in out
    loss = ok("inspect", f"{MODELS}:lstm_loss", "--stage", "backward")
    assert "@ct/" not in loss and "reverse=True" in loss


def test_list_stages():
    names = ok("inspect", f"{MODELS}:lstm", "--list-stages").split()
    assert names[0] == "traced"
    assert {"optimized", "backward"} <= set(names)
    from rnncomp.transforms.passes import PIPELINE

    pipeline = [p[0] if isinstance(p, tuple) else p.name for p in PIPELINE]
    assert names[1:1 + len(pipeline)] == pipeline


def test_inspect_optimized_and_pass_stages():
    names = ok("inspect", f"{MODELS}:lstm", "--list-stages").split()
    traced = ok("inspect", f"{MODELS}:lstm")
    opt = ok("inspect", f"{MODELS}:lstm", "--stage", "optimized")
    assert opt.startswith("# kernel=") and opt != traced and "scan[" in opt
    first_pass = names[1]
    assert ok("inspect", f"{MODELS}:lstm", "--stage", first_pass).startswith("# kernel=")
    r = cli("inspect", f"{MODELS}:lstm", "--stage", "optimized", "--timings")
    assert r.returncode == 0 and first_pass in r.stderr


def test_diff_traced_optimized():
    out = ok("inspect", f"{MODELS}:lstm", "--diff", "traced", "optimized")
    lines = out.splitlines()
    assert lines[0] == "--- traced" and lines[1] == "+++ optimized"
    assert any(ln.startswith("@@") for ln in lines)
    assert any(ln[:1] in "+-" for ln in lines[2:])
    same = ok("inspect", f"{MODELS}:lstm", "--diff", "traced", "traced")
    assert "no differences" in same


def test_diff_consecutive_passes():
    """--diff A B prints exactly the unified diff of what --stage A and --stage B print: for a
    pair of consecutive passes that changes the graph, and "no differences" only for a pair
    that does not."""
    import difflib

    from rnncomp.ir.printer import pformat
    from rnncomp.tools.cli import Stages, load_model

    names = ok("inspect", f"{MODELS}:lstm", "--list-stages").split()
    stages = Stages(load_model(f"{REPO / MODELS}:lstm", {}).graph)
    texts = [pformat(stages.get(n)) for n in names]
    pairs = list(zip(names[1:-1], names[2:], texts[1:-1], texts[2:], strict=True))
    changed = next(p for p in pairs if p[2] != p[3])
    same = next((p for p in pairs if p[2] == p[3]), None)
    for a, b, ta, tb in [changed] + ([same] if same else []):
        out = ok("inspect", f"{MODELS}:lstm", "--diff", a, b)
        sa = ok("inspect", f"{MODELS}:lstm", "--stage", a)
        sb = ok("inspect", f"{MODELS}:lstm", "--stage", b)
        want = list(difflib.unified_diff(sa.splitlines(), sb.splitlines(), fromfile=a, tofile=b,
                                         lineterm=""))
        if ta != tb:
            assert want and out.splitlines() == want, out
        else:
            assert sa == sb and out.strip() == f"(no differences between {a} and {b})"


# --- inspect: DOT, SVG, PNG ------------------------------------------------------------------
def test_inspect_dot():
    out = ok("inspect", f"{MODELS}:lstm", "--format", "dot")
    assert out.lstrip().startswith("digraph")
    assert out.rstrip().endswith("}")
    assert out.count("{") == out.count("}")
    assert "subgraph cluster_" in out  # the scan body is a cluster
    assert "->" in out and "matmul" in out and "scan" in out


def test_inspect_dot_by_suffix(tmp_path):
    out = tmp_path / "g.dot"
    ok("inspect", f"{MODELS}:gru", "-o", str(out))
    assert out.read_text().startswith("digraph")


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` not installed")
def test_inspect_svg_stdout_and_file(tmp_path):
    out = ok("inspect", f"{MODELS}:lstm", "--format", "svg")
    assert "<svg" in out and "</svg>" in out
    for word in ("matmul", "scan", "sigmoid", "tanh", "rnn/basic_lstm_cell/kernel"):
        assert word in out, word
    path = tmp_path / "lstm.svg"
    ok("inspect", f"{MODELS}:lstm", "--format", "svg", "-o", str(path))
    assert "<svg" in path.read_text()


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` not installed")
def test_inspect_png(tmp_path):
    path = tmp_path / "lstm.png"
    ok("inspect", f"{MODELS}:lstm", "--format", "png", "-o", str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_png_needs_output_file():
    msg = fails("inspect", f"{MODELS}:lstm", "--format", "png")
    assert "-o" in msg


def test_svg_without_graphviz_is_a_clear_error(tmp_path):
    # a PATH without `dot` (python itself is run by absolute path)
    msg = fails("inspect", f"{MODELS}:lstm", "--format", "svg", env={"PATH": str(tmp_path)})
    assert "Graphviz" in msg and "--format dot" in msg


# --- inspect: generated source ---------------------------------------------------------------
def test_inspect_source_cpu():
    r = cli("inspect", f"{MODELS}:lstm", "--source", "cpu")
    assert r.returncode == 0, r.stderr
    assert "def " in r.stdout
    # the kernel is shape-generic: the listing says what its sizes are for this model
    assert re.search(r"^# this graph's sizes: z<k> = sz\[k\], sz = \[\d+, ", r.stdout, re.M)


# --- run -------------------------------------------------------------------------------------
def test_run_prints_shapes_and_time():
    out = ok("run", f"{MODELS}:lstm", "--repeat", "2")
    assert "X: float32 (4, 10, 3)" in out
    assert "[0]: float32 (4, 10, 4)" in out
    assert "[1].c: float32 (4, 4)" in out and "[1].h: float32 (4, 4)" in out
    assert re.search(r"time: median [\d.]+ (us|ms|s) over 2 runs", out), out


def test_run_batch_time_and_lengths():
    out = ok("run", f"{MODELS}:varlen_lstm", "--batch", "3", "--time", "7", "--repeat", "1")
    assert "X: float32 (3, 7, 3)" in out and "L: int32 (3,)" in out
    assert "[0]: float32 (3, 7, 4)" in out


def test_run_graph_and_static_and_training():
    assert "[0]: float32 (2, 5, 4)" in ok("run", f"{MODELS}:lstm_graph", "--batch", "2",
                                          "--time", "5", "--repeat", "1")
    out = ok("run", f"{MODELS}:static_rnn", "--repeat", "1")
    assert "X0: float32 (4, 3)" in out and "[0][1]: float32 (4, 5)" in out
    assert "training" in ok("run", f"{MODELS}:deep", "--training", "--repeat", "1")


def test_run_inputs_npz_and_save(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    np.savez(tmp_path / "in.npz", X=x)
    out = ok("run", f"{MODELS}:gru", "--inputs", str(tmp_path / "in.npz"), "--repeat", "1",
             "--save", str(tmp_path / "out.npz"))
    assert "X: float32 (2, 6, 3)" in out and "[0]: float32 (2, 6, 4)" in out
    with np.load(tmp_path / "out.npz") as saved:
        assert saved["[0]"].shape == (2, 6, 4)
    np.savez(tmp_path / "wrong.npz", Y=x)
    assert "lacks input(s) X" in fails("run", f"{MODELS}:gru", "--inputs",
                                       str(tmp_path / "wrong.npz"))


def test_run_cpu_backend():
    r = cli("run", f"{MODELS}:lstm", "--backend", "cpu", "--repeat", "2")
    assert r.returncode == 0, r.stderr
    assert "[0]: float32 (4, 10, 4)" in r.stdout and "compile:" in r.stdout


# --- errors ----------------------------------------------------------------------------------
def test_unknown_stage():
    msg = fails("inspect", f"{MODELS}:lstm", "--stage", "nonsense")
    assert "unknown stage 'nonsense'" in msg
    assert "traced" in msg and "optimized" in msg and "backward" in msg
    assert "unknown stage" in fails("inspect", f"{MODELS}:lstm", "--diff", "traced", "nope")


@pytest.mark.parametrize("spec, words", [
    ("examples/nope.py:lstm", ["not found"]),
    (f"{MODELS}:no_such_function", ["no function 'no_such_function'", "lstm"]),
    ("no_such_package.mod:f", ["no module named 'no_such_package.mod'"]),
    ("json:dumps", ["raised TypeError"]),
    ("os:getcwd", ["returned str", "rnncomp.Model"]),
    ("os:sep", ["is a str"]),
    (MODELS, ["expected FILE.py:FUNCTION"]),
])
def test_bad_model(spec, words):
    msg = fails("inspect", spec)
    for w in words:
        assert w in msg, msg


def test_model_file_errors(tmp_path):
    (tmp_path / "broken.py").write_text("import rnncomp\nraise RuntimeError('boom')\n")
    assert "RuntimeError: boom" in fails("inspect", f"{tmp_path / 'broken.py'}:f")
    (tmp_path / "bad.py").write_text(
        "import rnncomp as rc\n"
        "def m():\n"
        "    return rc.Model(lambda X: rc.dynamic_rnn(rc.GRUCell(3, False), X),\n"
        "                    {'X': rc.Input((None, None, 2))})\n")
    msg = fails("inspect", f"{tmp_path / 'bad.py'}:m")
    assert "m() raised ValueError" in msg and "reset_after" in msg


def test_debug_shows_traceback():
    r = cli("--debug", "inspect", f"{MODELS}:lstm", "--stage", "nonsense")
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = cli("inspect", f"{MODELS}:lstm", "--stage", "nonsense", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_bad_kwarg():
    assert "NAME=VALUE" in fails("inspect", f"{MODELS}:lstm", "-k", "units")


# --- bench -----------------------------------------------------------------------------------
def test_bench():
    assert (REPO / "bench" / "bench_cpu.py").exists()
    r = cli("bench", "--", "--help", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()


# --- cache -----------------------------------------------------------------------------------
def test_cache_info_and_clear(tmp_path):
    d = tmp_path / "kernels"
    env = {"RNNCOMP_CACHE_DIR": str(d)}
    out = ok("cache", "info", env=env)
    assert str(d) in out and "entries: 0" in out and "does not exist" in out
    d.mkdir()
    (d / "rnncomp_k_0123.py").write_text("x" * 100)
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "rnncomp_k_0123.kernel-1.py311.nbi").write_bytes(b"y" * 2000)
    (d / "notes.txt").write_text("the user's own file")  # not rnncomp's: never touched
    out = ok("cache", "info", env=env)
    assert "entries: 1 kernel modules (2 files)" in out and "2100 bytes" in out
    out = ok("cache", "clear", env=env)
    assert "removed 2 files" in out
    assert sorted(p.name for p in d.rglob("*")) == ["__pycache__", "notes.txt"]
    assert "entries: 0" in ok("cache", "info", env=env)


def test_cache_default_dir(tmp_path):
    out = ok("cache", "info", env={"HOME": str(tmp_path), "RNNCOMP_CACHE_DIR": ""})
    assert str(tmp_path / ".cache" / "rnncomp") in out


def test_cache_clear_touches_only_rnncomp_files(tmp_path):
    """RNNCOMP_CACHE_DIR pointing at a folder of other files (here: HOME) loses none of them."""
    (tmp_path / "thesis.tex").write_text("years of work")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)")
    out = ok("cache", "clear", env={"HOME": str(tmp_path), "RNNCOMP_CACHE_DIR": str(tmp_path)})
    assert "removed 0 files" in out
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    assert (tmp_path / "src" / "main.py").exists()


def test_cache_dir_tilde_is_expanded_like_the_compiler(tmp_path):
    out = ok("cache", "info", env={"HOME": str(tmp_path), "RNNCOMP_CACHE_DIR": "~/kc"})
    assert str(tmp_path / "kc") in out


# --- the installed console script ------------------------------------------------------------
def _pip_installed() -> bool:
    try:
        importlib.metadata.distribution("rnncomp")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _pip_installed(), reason="rnncomp is not pip-installed (no console script)")
def test_installed_script():
    """The `rnncomp` console script (PATH first, else next to this Python: .ci/run puts its venv's
    bin on PATH) prints what `python -m rnncomp.tools.cli` prints."""
    script = shutil.which("rnncomp", path=os.pathsep.join([os.environ.get("PATH", ""),
                                                          str(Path(sys.executable).parent)]))
    assert script, "rnncomp is installed but its console script is not found"
    r = subprocess.run([script, "inspect", f"{MODELS}:lstm"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ok("inspect", f"{MODELS}:lstm")
