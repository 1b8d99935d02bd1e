"""Visualization adapters over the IR: networkx graphs, Graphviz DOT text, rendered images.

This module is an adapter, never a dependency of the IR: networkx is imported only when
`to_networkx` is called, and the Graphviz `dot` program only when `render` is called.
`to_dot` is plain text and needs neither.

Node ids are stable and deterministic: top-level nodes are "n0", "n1", ... in the graph's
topological order (`Graph.nodes`); the nodes of a scan (or fused) body are
"<scan id>.0", "<scan id>.1", ... in the body's order, so the same graph always gives the same
ids and the same DOT text.

    from rnncomp import viz
    g = viz.to_networkx(model.graph)      # nx.DiGraph, attrs op/shape/dtype/label/group/parent
    print(viz.to_dot(model.graph))        # DOT text; scan bodies are `subgraph cluster_*`
    viz.render(model.graph, "lstm.svg")   # needs Graphviz's `dot` program
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ir.graph import Graph, GroupOp, Node, Op, shape_str

__all__ = ["GROUP_COLORS", "op_group", "type_str", "to_networkx", "to_dot", "render"]

# Fill colours by op kind (one per ir.GroupOp group; "other" for ops in none of them).
GROUP_COLORS: dict[str, str] = {
    "leaf": "#e0e0e0",
    "elementwise": "#b3e5fc",
    "contraction": "#ffcc80",
    "movement": "#c8e6c9",
    "reduce": "#e1bee7",
    "control": "#fff59d",
    "random": "#f8bbd0",
    "other": "#ffffff",
}

_GROUPS: tuple[tuple[str, frozenset], ...] = (
    ("leaf", GroupOp.Leaf | {Op.FULL}),
    ("elementwise", GroupOp.Elementwise),
    ("contraction", GroupOp.Contraction),
    ("movement", GroupOp.Movement),
    ("reduce", GroupOp.Reduce),
    ("control", GroupOp.Control),
    ("random", GroupOp.Random),
)

_HIDDEN_ATTRS = {"body", "id", "role", "name", "shape", "dtype", "value"}
_FORMATS = ("svg", "png")


def op_group(op: Op) -> str:
    """The kind of an op, from ir.GroupOp: leaf, elementwise, contraction, movement, reduce,
    control, random (or "other" for indexing ops such as take/one_hot)."""
    for name, ops in _GROUPS:
        if op in ops:
            return name
    return "other"


def type_str(node: Node) -> str:
    """The node's type as printed in the IR text: f32[B,20]; a scan's result tuple as
    (f32[B,5], f32[T,B,5])."""
    if node.shape is not None and len(node.shape) == 2 and node.shape[0] == "tuple":
        return "(" + ", ".join(f"{dt}[{shape_str(s)}]" for s, dt in node.shape[1]) + ")"
    return f"{node.dtype}[{shape_str(node.shape)}]"


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ",".join(_fmt(x) for x in v) + ")"
    return str(v)


def _label(node: Node) -> str:
    if node.op is Op.CONST:
        return f"{node.attr('value')!r}:{node.dtype}"
    if node.op in (Op.INPUT, Op.PARAM):
        head = f"{node.op.value} {node.name}"
    elif node.op is Op.PLACEHOLDER:
        head = f"placeholder {node.attr('role') or ''}".rstrip()
    else:
        params = [f"{k}={_fmt(v)}" for k, v in node.attrs if k not in _HIDDEN_ATTRS]
        if node.op is Op.FULL:
            params = [f"value={node.attr('value')!r}"]
        head = node.op.value + (f"[{' '.join(params)}]" if params else "")
    return f"{head}\n{type_str(node)}"


@dataclass
class _Entry:
    id: str
    node: Node
    parent: str | None
    depth: int
    body_inputs: list[str] = field(default_factory=list)
    body_outputs: list[str] = field(default_factory=list)


def _walk(graph: Graph, prefix: str, parent: str | None, depth: int,
          out: list[_Entry], edges: list[tuple[str, str, dict[str, Any]]]) -> dict[int, str]:
    """Collect nodes (with ids) and edges of graph and, recursively, of its bodies."""
    ids: dict[int, str] = {}
    for k, n in enumerate(graph.nodes):
        nid = f"{prefix}{k}"
        ids[id(n)] = nid
        entry = _Entry(nid, n, parent, depth)
        out.append(entry)
        for pos, i in enumerate(n.inputs):
            src = ids[id(i)]
            # an edge carries the value of its source; an item's edge shows the item's type
            shown = n if n.op is Op.ITEM else i
            edges.append((src, nid, {"index": pos, "label": type_str(shown), "kind": "data"}))
        body = n.attr("body")
        if isinstance(body, Graph):
            inner = _walk(body, f"{nid}.", nid, depth + 1, out, edges)
            entry.body_inputs = [inner[id(b)] for b in body.inputs]
            entry.body_outputs = [inner[id(b)] for b in body.outputs]
    return ids


def _collect(graph: Graph) -> tuple[list[_Entry], list[tuple[str, str, dict[str, Any]]]]:
    entries: list[_Entry] = []
    edges: list[tuple[str, str, dict[str, Any]]] = []
    _walk(graph, "n", None, 0, entries, edges)
    return entries, edges


def to_networkx(graph: Graph):
    """The graph as a networkx.DiGraph, scan bodies included.

    Node attributes: op (str, e.g. "matmul"), shape (tuple, or None for a scan's result tuple),
    dtype (str or None), label (the text drawn in DOT), group (op kind), name (inputs and
    params), parent (the id of the scan whose body holds the node, None at top level).
    Edge attributes: index (operand position), label (the value's type, e.g. "f32[B,20]"),
    kind ("data"; "body_in"/"body_out" link a scan to its body's inputs and outputs). A node
    that uses one value twice (e.g. the zero state as both c and h) has one edge from it.
    Graph attributes: inputs and outputs (lists of top-level node ids).
    """
    try:
        import networkx as nx
    except ImportError as e:  # pragma: no cover - exercised by a test that hides networkx
        raise ImportError(
            "rnncomp.tools.viz.to_networkx needs the optional package networkx, which is not "
            "installed: pip install networkx (or pip install 'rnncomp[viz]')") from e
    entries, edges = _collect(graph)
    g = nx.DiGraph()
    for e in entries:
        n = e.node
        is_tuple = n.shape is not None and len(n.shape) == 2 and n.shape[0] == "tuple"
        g.add_node(e.id, op=n.op.value, shape=None if is_tuple else n.shape,
                   dtype=None if n.dtype is None else str(n.dtype), label=_label(n),
                   group=op_group(n.op), name=n.name, parent=e.parent)
    for src, dst, attrs in edges:
        g.add_edge(src, dst, **attrs)
    for e in entries:
        for k, b in enumerate(e.body_inputs):
            g.add_edge(e.id, b, index=k, label="", kind="body_in")
        for k, b in enumerate(e.body_outputs):
            if not g.has_edge(b, e.id):
                g.add_edge(b, e.id, index=k, label="", kind="body_out")
    top = {id(n): f"n{k}" for k, n in enumerate(graph.nodes)}
    g.graph["inputs"] = [top[id(n)] for n in graph.inputs]
    g.graph["outputs"] = [top[id(n)] for n in graph.outputs]
    return g


def _q(s: str) -> str:
    """A DOT double-quoted string (newlines become DOT line breaks)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_id(nid: str) -> str:
    return nid.replace(".", "_")


def to_dot(graph: Graph, name: str = "rnncomp") -> str:
    """The graph as Graphviz DOT text (deterministic; no Graphviz needed to produce it).

    Ops are coloured by kind (see GROUP_COLORS); scan bodies are `subgraph cluster_*` boxes,
    linked to their scan node by dashed edges; edges are labelled with the value's type.
    """
    entries, edges = _collect(graph)
    children: dict[str | None, list[_Entry]] = {}
    for e in entries:
        children.setdefault(e.parent, []).append(e)
    by_id = {e.id: e for e in entries}
    lines = [f"digraph {_q(name)} {{",
             "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8];']
    outputs = {id(n) for n in graph.outputs}

    def emit(parent: str | None, indent: str) -> Iterator[str]:
        for e in children.get(parent, []):
            n = e.node
            extra = ", penwidth=2" if parent is None and id(n) in outputs else ""
            yield (f"{indent}{_dot_id(e.id)} [label={_q(_label(n))}, "
                   f"fillcolor={_q(GROUP_COLORS[op_group(n.op)])}{extra}];")
            if e.id in children:
                yield f"{indent}subgraph cluster_{_dot_id(e.id)} {{"
                yield f"{indent}  label={_q(n.op.value + ' body of ' + e.id)};"
                yield f'{indent}  style="rounded,dashed"; color="#607d8b";'
                yield from emit(e.id, indent + "  ")
                yield f"{indent}}}"

    lines += list(emit(None, "  "))
    for src, dst, attrs in edges:
        lines.append(f"  {_dot_id(src)} -> {_dot_id(dst)} [label={_q(attrs['label'])}];")
    for e in entries:
        for b in e.body_inputs:
            lines.append(f'  {_dot_id(e.id)} -> {_dot_id(b)} [style=dashed, color="#607d8b"];')
        for b in e.body_outputs:
            if by_id[b].node.op is Op.CONST:
                continue
            lines.append(f'  {_dot_id(b)} -> {_dot_id(e.id)} [style=dashed, color="#607d8b", '
                         f"constraint=false];")
    lines.append("}")
    return "\n".join(lines) + "\n"


class GraphvizNotFoundError(RuntimeError):
    """The Graphviz `dot` program is needed to render a graph and is not installed."""


def render(graph: Graph, path: str | Path, format: str = "svg",  # noqa: A002 - like graphviz
           dot: str = "dot") -> Path:
    """Render the graph to an image file (svg or png) with Graphviz's `dot` program.

    Raises GraphvizNotFoundError, saying how to install Graphviz, when `dot` is missing.
    """
    if format not in _FORMATS:
        raise ValueError(f"render: format must be one of {', '.join(_FORMATS)}, received "
                         f"{format!r}")
    exe = shutil.which(dot)
    if exe is None:
        raise GraphvizNotFoundError(
            f"render: the Graphviz program {dot!r} was not found on PATH; install Graphviz "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz), or write "
            "rnncomp.tools.viz.to_dot(graph) to a .dot file and render it elsewhere")
    path = Path(path)
    proc = subprocess.run([exe, f"-T{format}", "-o", str(path)], input=to_dot(graph).encode(),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"render: {dot} exited with status {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return path
