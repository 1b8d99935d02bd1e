"""Pictures at real size: the layer-norm LSTM's optimized backward graph (examples/models.py
custom_cell, 4 units) with fused bodies collapsed is a bounded number of boxes and a bounded
picture; placeholders say what they bind; --expand-fused draws the fused ops."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from rnncomp import viz
from rnncomp.ir import Op

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ln_lstm_backward():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import models
    finally:
        sys.path.remove(str(REPO / "examples"))
    from rnncomp.tools.cli import Stages

    return Stages(models.custom_cell().graph).get("backward-optimized")


def boxes(dot: str) -> list[str]:
    return re.findall(r'^\s*n[\d_]+ \[label="([^"]*)"', dot, re.M)


def test_collapsed_fusion_bounds_the_boxes(ln_lstm_backward):
    g = ln_lstm_backward
    fused = [n for n in g.all_nodes() if n.op is Op.FUSED]
    assert len(fused) >= 10
    inside = sum(len(n.attr("body").nodes) for n in fused)
    collapsed = viz.to_dot(g)
    expanded = viz.to_dot(g, expand_fused=True)
    assert collapsed == viz.to_dot(g)  # deterministic
    n_col, n_exp = len(boxes(collapsed)), len(boxes(expanded))
    assert n_col <= 220, n_col
    assert n_exp >= n_col + inside // 2
    # collapsed: no cluster for a fused body, one box per fused node with a summary of its ops
    assert "subgraph cluster_" in collapsed
    assert all("fused body" not in ln for ln in collapsed.splitlines())
    assert "fused body of" in expanded
    summaries = [b for b in boxes(collapsed) if " = fused" in b or b.startswith("fused")]
    assert len(summaries) == len(fused)
    assert all(re.search(r"\d+ ops: \d+ \w+", b) for b in summaries), summaries[:3]
    # big graph: the types are on the boxes, not on every edge
    assert 'label="f32[' not in collapsed.split("->", 1)[1]


def test_placeholders_are_named(ln_lstm_backward):
    labels = boxes(viz.to_dot(ln_lstm_backward))
    ph = [b for b in labels if re.match(r"\w+ = (step t|carry|x_t|invariant|residual|"
                                        r"cotangent|in)\b", b)]
    assert len(ph) > 30
    assert not any(b.startswith("placeholder") for b in labels)
    assert all(" <- " in b for b in ph if "step t" not in b), [b for b in ph if " <- " not in b]
    assert any(re.match(r"\w+ = invariant <- ln_c_gain\\n", b) for b in labels)
    assert any(re.match(r"\w+ = residual <- \w+\\n", b) for b in labels)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_picture_size(ln_lstm_backward, tmp_path):
    """Measured: 7220 x 3605 px (4928 x 3681 before the layer norms' means read their divisor at
    run time: 10 size reads and the 15 loop invariants they feed are drawn now; it was 14335 x
    4556 with every fused op, literal and scan result drawn, and the bodies side by side)."""
    path = viz.render(ln_lstm_backward, tmp_path / "g.png", format="png")
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", head[16:24])
    assert w <= 7600 and h <= 4500, (w, h)
    proc = subprocess.run(["dot", "-Tcanon"], input=viz.to_dot(ln_lstm_backward).encode(),
                          capture_output=True, check=True)
    assert proc.stderr == b""  # Graphviz accepts the text without warnings
