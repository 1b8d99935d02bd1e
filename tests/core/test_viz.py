"""rnncomp.tools.viz: networkx export, DOT text (exact structure, determinism), rendering with dot."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import rnncomp as rc
from rnncomp import viz


def lstm_graph():
    def fn(X, L):
        return rc.dynamic_rnn(rc.BasicLSTMCell(4), X, sequence_length=L)

    return rc.Model(fn, {"X": rc.Input((None, None, 2)), "L": rc.Input((None,), "i32")}).graph


def small_graph():
    def fn(X):
        return rc.tanh(rc.matmul(X, rc.param("w", (3, 2))) + 1.0)

    return rc.trace(fn, {"X": rc.Input((None, 3))}).graph


def test_dot_exact_for_small_graph():
    # boxes are values named as in the text form; literals are inline operands, not boxes
    assert viz.to_dot(small_graph()) == textwrap.dedent("""\
        digraph "rnncomp" {
          rankdir=TB; compound=true; nodesep=0.2; ranksep=0.3; size="80,80";
          node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, margin="0.06,0.03", height=0.3];
          edge [fontname="Helvetica", fontsize=8, arrowsize=0.6];
          n0 [label="input X\\nf32[B,3]", fillcolor="#e0e0e0"];
          n1 [label="param w\\nf32[3,2]", fillcolor="#e0e0e0"];
          n2 [label="a = matmul\\nf32[B,2]", fillcolor="#ffcc80"];
          n4 [label="b = add(·, 1.0)\\nf32[B,2]", fillcolor="#b3e5fc"];
          n5 [label="c = tanh\\nf32[B,2]", fillcolor="#b3e5fc", penwidth=2];
          n0 -> n2 [label="f32[B,3]"];
          n1 -> n2 [label="f32[3,2]"];
          n2 -> n4 [label="f32[B,2]"];
          n4 -> n5 [label="f32[B,2]"];
        }
        """)
    assert str(small_graph()).splitlines()[1:4] == [
        "    a:f32[B,2] = matmul X w", "    b:f32[B,2] = add a 1.0:f32", "    c:f32[B,2] = tanh b"]


def test_dot_scan_cluster_colours_and_edge_labels():
    text = viz.to_dot(lstm_graph())
    assert text == viz.to_dot(lstm_graph())  # deterministic
    clusters = re.findall(r"subgraph (cluster_\w+) \{", text)
    assert len(clusters) == 1
    scan_id = clusters[0][len("cluster_"):]
    # the scan box names its results as the text does (h i j = scan[...]; the batch is sorted
    # by length first: c = argsort L, d = the sorted x, e = the sorted lengths, the rows hint)
    assert re.search(rf"  {scan_id} \[label=\"h i j = scan\[has_length=True n_carry=2 n_xs=1 "
                     rf"reverse=False rows=0\]\\n\(f32\[B,4\], f32\[B,4\], f32\[T,B,4\]\)\", "
                     rf"fillcolor=\"{viz.GROUP_COLORS['control']}\"\];", text)
    body = text.split(f"subgraph cluster_{scan_id} {{")[1].split("\n  }")[0]
    assert len(re.findall(r'label="\w+ = matmul', body)) == 1
    assert len(re.findall(r'label="\w+ = sigmoid', body)) == 3
    assert f'fillcolor="{viz.GROUP_COLORS["contraction"]}"' in body
    assert f'fillcolor="{viz.GROUP_COLORS["elementwise"]}"' in body
    assert f'fillcolor="{viz.GROUP_COLORS["movement"]}"' in body
    assert '[label="f32[B,16]"]' in text  # the gate pre-activations
    assert '[label="f32[T,B,2]"]' in text
    # one dashed edge from the scan to its body; the body's inputs say what they bind
    assert text.count("style=dashed") == 1
    for want in ("step t", "carry 0 <- a", "carry 1 <- a", "x_t 0 <- d", "invariant <- e",
                 "invariant <- kernel", "invariant <- bias"):
        assert f" = {want}\\n" in body, want
    assert "placeholder" not in text


def test_networkx_export():
    pytest.importorskip("networkx")
    g = lstm_graph()
    G = viz.to_networkx(g)
    all_nodes = list(g.all_nodes())
    assert G.number_of_nodes() == len(all_nodes)
    scans = [n for n, d in G.nodes(data=True) if d["op"] == "scan"]
    assert len(scans) == 1
    (s,) = scans
    inside = [n for n, d in G.nodes(data=True) if d["parent"] == s]
    assert len(inside) == len(all_nodes) - len(g.nodes)
    assert all(n.startswith(f"{s}.") for n in inside)
    mm = [n for n in inside if G.nodes[n]["op"] == "matmul"]
    assert len(mm) == 1 and G.nodes[mm[0]]["shape"] == ("B", 16)
    assert G.nodes[mm[0]]["dtype"] == "f32" and G.nodes[mm[0]]["group"] == "contraction"
    assert G.nodes[mm[0]]["label"] == "matmul\nf32[B,16]"
    x = G.graph["inputs"][0]
    assert G.nodes[x]["name"] == "X" and G.nodes[x]["shape"] == ("B", "T", 2)
    assert G.nodes[x]["parent"] is None
    # data edges follow the IR; ids are stable across calls
    data = [(u, v) for u, v, d in G.edges(data=True) if d["kind"] == "data"]
    # a DiGraph keeps one edge per (source, user) pair, e.g. the zero state used as c and h
    n_data = len({(id(i), id(n)) for n in all_nodes for i in n.inputs})
    assert len(data) == n_data
    assert sorted(viz.to_networkx(g).nodes) == sorted(G.nodes)
    import networkx as nx

    data_graph = nx.DiGraph(data)
    assert nx.is_directed_acyclic_graph(data_graph)


def test_networkx_missing_names_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "networkx", None)
    with pytest.raises(ImportError, match=r"needs the optional package networkx.*pip install"):
        viz.to_networkx(small_graph())


def test_op_groups():
    from rnncomp.ir import Op

    assert viz.op_group(Op.MATMUL) == "contraction"
    assert viz.op_group(Op.SCAN) == "control"
    assert viz.op_group(Op.RANDOM_UNIFORM) == "random"
    assert viz.op_group(Op.REDUCE_SUM) == "reduce"
    assert viz.op_group(Op.PARAM) == "leaf"
    assert viz.op_group(Op.TAKE) == "other"


def test_render_without_dot_says_install_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(viz.GraphvizNotFoundError, match=r"install Graphviz.*apt-get install "
                                                        r"graphviz"):
        viz.render(small_graph(), tmp_path / "g.svg")


def test_render_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match=r"format must be one of svg, png, received 'gif'"):
        viz.render(small_graph(), tmp_path / "g.gif", format="gif")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_render(tmp_path, fmt):
    path = viz.render(lstm_graph(), tmp_path / f"g.{fmt}", format=fmt)
    data = path.read_bytes()
    if fmt == "svg":
        assert b"<svg" in data and b"cluster_" in data and b"matmul" in data
    else:
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # dot itself accepts the text without warnings
    proc = subprocess.run(["dot", "-Tcanon"], input=viz.to_dot(lstm_graph()).encode(),
                          capture_output=True, check=True)
    assert proc.stderr == b""
