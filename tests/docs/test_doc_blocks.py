"""Runnable code blocks of the docs (README.md and docs/*.md) must run.

A block is runnable when its fence's info string is `python run`:

    ```python run
    import rnncomp as rc
    ```

Plain `python` blocks are illustrations and are not run. The runnable blocks of one file run in
order in one fresh subprocess, sharing a namespace (a later block may use names from an earlier
one), with the working directory a temporary folder and the kernel cache in it. A failure names
the file and the line where the failing block starts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")

DRIVER = r"""
import json, sys, traceback
blocks = json.loads(sys.stdin.read())
ns = {"__name__": "__main__"}
for path, line, code in blocks:
    try:
        exec(compile(code, f"{path}:{line}", "exec"), ns)
    except BaseException:
        print(f"\n=== runnable block at {path}:{line} failed ===", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def doc_files() -> list[Path]:
    files = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
    return [f for f in files if f.exists()]


def blocks(path: Path) -> list[tuple[int, str, str]]:
    """(first code line number, info string, code) for every fenced block of a Markdown file."""
    out = []
    lines = path.read_text().splitlines()
    k = 0
    while k < len(lines):
        m = FENCE.match(lines[k])
        if not m:
            k += 1
            continue
        fence, info, start = m["fence"], m["info"].strip(), k + 1
        body = []
        k += 1
        while k < len(lines) and not (lines[k].strip().startswith(fence[0] * len(fence))
                                      and lines[k].strip().strip(fence[0]) == ""):
            body.append(lines[k])
            k += 1
        if k == len(lines):
            raise AssertionError(f"{path}:{start}: code fence {fence}{info} is never closed")
        out.append((start + 1, info, "\n".join(body) + "\n"))
        k += 1
    return out


def runnable(path: Path) -> list[tuple[int, str]]:
    return [(line, code) for line, info, code in blocks(path) if info.split() == ["python", "run"]]


FILES = [f for f in doc_files() if runnable(f)]


def test_fences_are_closed_and_info_strings_known():
    for f in doc_files():
        for line, info, _ in blocks(f):
            words = info.split()
            if words and words[0] == "python" and len(words) > 1:
                assert words == ["python", "run"], (
                    f"{f.relative_to(REPO)}:{line}: unknown info string {info!r} (runnable "
                    f"blocks use exactly 'python run')")


def test_docs_have_runnable_blocks():
    names = {f.name for f in FILES}
    for want in ("quickstart.md", "dsl.md", "custom_cell_tutorial.md"):
        if (REPO / "docs" / want).exists():
            assert want in names, f"docs/{want} has no ```python run block"


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(REPO)) for f in FILES])
def test_runnable_blocks(path: Path, tmp_path: Path):
    rel = str(path.relative_to(REPO))
    payload = json.dumps([(rel, line, code) for line, code in runnable(path)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "examples")]),
           "RNNCOMP_CACHE_DIR": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    env.pop("RNNCOMP_PRINT_AFTER", None)
    r = subprocess.run([sys.executable, "-c", DRIVER], input=payload, text=True, cwd=tmp_path,
                       env=env, capture_output=True, timeout=600)
    assert r.returncode == 0, f"{rel}:\n{r.stderr[-4000:]}"
