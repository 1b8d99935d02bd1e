"""`rnncomp inspect` at real size: every stage listed (backward passes too) and accepted, a diff
of two stages shows only what the pass changed, --source-lines points into the model file, and
pictures collapse fused bodies unless --expand-fused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = "examples/models.py"


def ok(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RNNCOMP_PRINT_AFTER", None)
    r = subprocess.run([sys.executable, "-m", "rnncomp.tools.cli", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"rnncomp {' '.join(args)} failed:\n{r.stderr}"
    return r.stdout


def test_list_stages_is_complete():
    from rnncomp.tools.cli import Stages, load_model
    from rnncomp.transforms.passes import PIPELINE

    names = ok("inspect", f"{MODELS}:lstm", "--list-stages").split()
    passes = [p[0] for p in PIPELINE]
    assert names == (["traced"] + passes + ["optimized", "backward"]
                     + [f"backward:{p}" for p in passes] + ["backward-optimized"])
    # every listed stage is a stage (one pipeline run per direction gives them all)
    stages = Stages(load_model(f"{REPO / MODELS}:lstm", {}).graph)
    graphs = {n: stages.get(n) for n in names}
    assert graphs["backward:fuse_elementwise"] is graphs["backward-optimized"]
    assert graphs["fuse_elementwise"] is graphs["optimized"]


def test_diff_of_a_backward_pass_shows_only_the_change():
    out = ok("inspect", f"{MODELS}:lstm", "--diff", "backward:licm", "backward:hoist",
             "--context", "0")
    body = [ln for ln in out.splitlines()
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    total = len(ok("inspect", f"{MODELS}:lstm", "--stage", "backward:hoist").splitlines())
    assert body and len(body) < total // 3, (len(body), total)


def test_diff_moving_the_input_projection():
    """licm -> hoist moves x_t @ W_x out of the loop: the diff is the moved matmul, the new
    scan operand and binder, h @ W_h and the add that joins them, nothing of the gates."""
    out = ok("inspect", f"{MODELS}:lstm", "--diff", "licm", "hoist", "--context", "0")
    body = [ln for ln in out.splitlines()
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert len(body) <= 12, out
    assert not any(op in ln for ln in body for op in (" = sigmoid", " = tanh", " = mul"))


def test_source_lines():
    out = ok("inspect", f"{MODELS}:custom_cell", "--source-lines")
    src = (REPO / MODELS).read_text().splitlines()
    eqns = [ln for ln in out.splitlines() if " = " in ln and "lambda" not in ln]
    assert eqns and all(re.search(r"  # examples/models\.py:\d+$", ln) for ln in eqns), eqns[:3]
    sqrt = [ln for ln in eqns if " = sqrt " in ln]
    assert sqrt
    for ln in sqrt:  # rc.sqrt is called in layer_norm()
        line = int(ln.rsplit(":", 1)[1])
        assert "rc.sqrt(" in src[line - 1]
    # the same text without the comments is the plain print
    plain = ok("inspect", f"{MODELS}:custom_cell")
    assert re.sub(r"  # \S+$", "", out, flags=re.M) == plain


def test_dot_collapses_fusion_unless_asked():
    collapsed = ok("inspect", f"{MODELS}:lstm", "--stage", "optimized", "--format", "dot")
    expanded = ok("inspect", f"{MODELS}:lstm", "--stage", "optimized", "--format", "dot",
                  "--expand-fused")
    assert "fused body of" not in collapsed and "fused body of" in expanded
    assert re.search(r'label="\w+ \w+ = fused\\n\d+ ops: ', collapsed)
    def boxes(dot):
        return len(re.findall(r"^\s*n[\d_]+ \[label=", dot, re.M))

    assert boxes(collapsed) + 10 < boxes(expanded)
