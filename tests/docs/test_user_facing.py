"""What a new user reads: README commands are copy-paste safe, docs name nothing users do not
have, every example is listed, .ci/run says what it installs, generated pictures are ignored."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
USER_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _bash_lines(path: Path) -> list[str]:
    lines, inside = [], False
    for ln in path.read_text().splitlines():
        if ln.startswith("```"):
            inside = ln.strip() in ("```bash", "```sh")
            continue
        if inside:
            lines.append(ln)
    return lines


def test_readme_commands_are_copy_paste_safe():
    lines = _bash_lines(REPO / "README.md")
    assert lines
    for ln in lines:
        cmd = ln.split("#")[0].strip()
        # a pipe into rnncomp runs the right-hand command (`cache info | cache clear` cleared)
        assert not re.search(r"\|\s*(\S*/)?rnncomp\b", cmd), ln
        # no reliance on an activated venv: rnncomp / python / pip through .venv/bin/
        first = cmd.split()[0] if cmd else ""
        assert first not in ("rnncomp", "pip", "python"), ln


def test_docs_name_nothing_users_lack():
    for path in USER_DOCS + sorted((REPO / "examples").glob("*.py")):
        text = path.read_text()
        assert "SPEC.md" not in text, path
        assert not re.search(r"\bthe issue\b|\bthe \w+ issue\b", text, re.I), path


def test_examples_md_lists_every_example():
    text = (REPO / "docs" / "examples.md").read_text()
    for py in sorted((REPO / "examples").glob("*.py")):
        if py.name.startswith("_"):
            continue
        assert f"`{py.name}`" in text, f"docs/examples.md does not list {py.name}"


def test_ci_run_says_what_it_installs():
    head = "".join(ln for ln in (REPO / ".ci" / "run").read_text().splitlines(True)[:20]
                   if ln.startswith("#"))
    assert "apt-get" in head and "Graphviz" in head and "pip" in head
    readme = (REPO / "README.md").read_text()
    assert "apt-get install graphviz" in readme


def test_svg_outputs_are_ignored():
    out = subprocess.run(["git", "check-ignore", "-q", "--no-index", "lstm.svg"], cwd=REPO)
    assert out.returncode == 0, "*.svg is not git-ignored"
    out = subprocess.run(["git", "check-ignore", "-q", "--no-index", "docs/img/x.svg"], cwd=REPO)
    assert out.returncode == 1, "docs/img/*.svg must stay trackable"


def test_dsl_lists_the_reserved_inputs():
    text = (REPO / "docs" / "dsl.md").read_text()
    for name in ("@training", "@seed", "@example_offset"):
        assert f"`{name}`" in text
