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


def _literal(n: Node) -> str:
    return f"{n.attr('value')!r}"


def _fused_summary(body: Graph) -> str:
    """"12 ops: 4 mul, 3 sigmoid, ..." for a fused body (most frequent first)."""
    counts: dict[str, int] = {}
    for n in body.all_nodes():
        if n.op not in (Op.PLACEHOLDER, Op.CONST, Op.ITEM):
            counts[n.op.value] = counts.get(n.op.value, 0) + 1
    parts = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{c} {op}" for op, c in parts[:4]) + (", ..." if len(parts) > 4 else "")
    return f"{sum(counts.values())} ops: {shown}"


_ROLES = {"t": "step t", "carry": "carry", "x": "x_t", "inv": "invariant", "in": "in",
          "res": "residual", "ct": "cotangent"}

# graphs with more drawn nodes than this get no edge labels (the types are on the nodes)
EDGE_LABEL_LIMIT = 60


def to_dot(graph: Graph, name: str = "rnncomp", *, expand_fused: bool = False,
           edge_labels: bool | None = None, source_lines: bool = False,
           rankdir: str = "TB", stagger: int = 3, max_inches: float = 80) -> str:
    """The graph as Graphviz DOT text (deterministic; no Graphviz needed to produce it).

    Each box is one value, labelled as in the text form (`rnncomp.ir.printer`): its name, op and
    attributes, literal operands inline (`p = add(·, 1.0)`), then its type. Ops are coloured by
    kind (GROUP_COLORS). Scan bodies are `subgraph cluster_*` boxes linked to their scan by
    dashed edges; a body's inputs say what they bind (`g = carry 0 <- a`,
    `j = invariant <- kernel`). Fused nodes are one box with a summary of their ops unless
    `expand_fused`; a scan's or fused node's results are its out-edges (labelled with the
    result's name), not boxes of their own. Edges carry the value's type when `edge_labels`
    (default: graphs of at most EDGE_LABEL_LIMIT boxes). `source_lines` adds the user's
    file:line as each box's tooltip (shown by SVG viewers).

    Layout for large graphs (an optimized backward graph has hundreds of values): a scan's body
    sits below the scan and above the users of its results, so the picture reads top-down in
    program order; edges out of sources and into sinks are staggered over `stagger` ranks (as
    Graphviz's `unflatten` does), so a row of parameters or weight gradients does not make
    the picture thousands of pixels wide; `max_inches` caps the drawing (Graphviz scales a
    larger one down to fit).
    """
    from ..ir import provenance
    from ..ir.printer import value_names

    names = value_names(graph)
    prov = provenance.family(graph)
    entries, _ = _collect(graph)
    by_node = {}
    children: dict[str | None, list[_Entry]] = {}
    graph_of: dict[str | None, Graph] = {None: graph}
    for e in entries:
        body = e.node.attr("body")
        if isinstance(body, Graph):
            graph_of[e.id] = body
    hidden: set[str] = set()  # entries inside collapsed fused bodies
    for e in entries:
        if e.parent in hidden or (e.parent is not None and not expand_fused
                                  and by_node[e.parent].node.op is Op.FUSED):
            hidden.add(e.id)
        by_node[e.id] = e
        children.setdefault(e.parent, []).append(e)
    outputs = {id(n) for n in graph.outputs}

    def vname(e: _Entry) -> str:
        return names.get((id(graph_of[e.parent]), id(e.node)), "?")

    def drawn(e: _Entry) -> bool:
        return e.id not in hidden and e.node.op not in (Op.CONST, Op.ITEM)

    # id of the entry an edge from `e` starts at: an item's edge starts at its scan/fused node
    ids_in: dict[str | None, dict[int, str]] = {}
    for e in entries:
        ids_in.setdefault(e.parent, {})[id(e.node)] = e.id

    def source_of(e: _Entry) -> _Entry:
        return by_node[ids_in[e.parent][id(e.node.inputs[0])]] if e.node.op is Op.ITEM else e

    def label(e: _Entry) -> str:
        n = e.node
        nm = vname(e)
        if n.op in (Op.INPUT, Op.PARAM):
            head = f"{n.op.value} {n.name}" if nm == n.name else f"{nm} = {n.op.value} {n.name}"
        elif n.op is Op.PLACEHOLDER:
            owner = by_node[e.parent]
            k = owner.body_inputs.index(e.id) if e.id in owner.body_inputs else -1
            role = n.attr("role") or ""
            head = f"{nm} = {_ROLES.get(role, role or 'placeholder')}"
            if owner.node.op is Op.SCAN:
                info = (owner.node.attr("n_carry"), owner.node.attr("n_xs"))
                outer_k = k - 1
                if role == "carry":
                    head += f" {outer_k}"
                elif role == "x":
                    head += f" {outer_k - info[0]}"
            else:
                outer_k = k
            if 0 <= outer_k < len(owner.node.inputs):
                src = owner.node.inputs[outer_k]
                if src.op is Op.CONST:
                    head += f" <- {_literal(src)}"
                else:
                    head += f" <- {names.get((id(graph_of[owner.parent]), id(src)), '?')}"
        else:
            params = [f"{k}={_fmt(v)}" for k, v in n.attrs if k not in _HIDDEN_ATTRS]
            if n.op is Op.FULL:
                params = [f"value={n.attr('value')!r}"]
            op = n.op.value + (f"[{' '.join(params)}]" if params else "")
            if n.op in (Op.SCAN, Op.FUSED):
                by_index = {c.node.attr("index"): vname(c) for c in children.get(e.parent, [])
                            if c.node.op is Op.ITEM and c.node.inputs[0] is n}
                results = [by_index.get(k, "_") for k in range(len(n.shape[1]))]
                if len(results) <= 4:
                    head = f"{' '.join(results)} = {op}"
                else:  # the results are named on the out-edges
                    head = f"{op}\n{len(results)} results: {results[0]} .. {results[-1]}"
                if n.op is Op.FUSED and not expand_fused:
                    head += "\n" + _fused_summary(n.attr("body"))
                if len(results) > 4:
                    return head
            else:
                lits = [_literal(i) if i.op is Op.CONST else "·" for i in n.inputs]
                head = f"{nm} = {op}" + (f"({', '.join(lits)})"
                                         if any(i.op is Op.CONST for i in n.inputs) else "")
        return f"{head}\n{type_str(n)}"

    shown = [e for e in entries if drawn(e)]
    if edge_labels is None:
        edge_labels = len(shown) <= EDGE_LABEL_LIMIT
    lines = [f"digraph {_q(name)} {{",
             f"  rankdir={rankdir}; compound=true; nodesep=0.2; ranksep=0.3; "
             f'size="{max_inches:g},{max_inches:g}";',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, '
             'margin="0.06,0.03", height=0.3];',
             '  edge [fontname="Helvetica", fontsize=8, arrowsize=0.6];']

    def emit(parent: str | None, indent: str):
        for e in children.get(parent, []):
            if not drawn(e):
                continue
            n = e.node
            is_out = id(n) in outputs if parent is None else any(
                source_of(by_node[b]) is e for b in by_node[parent].body_outputs)
            extra = ", penwidth=2" if is_out else ""
            if source_lines and prov is not None:
                loc = provenance.location_str(prov.location(n))
                if loc:
                    extra += f", tooltip={_q(loc)}"
            yield (f"{indent}{_dot_id(e.id)} [label={_q(label(e))}, "
                   f"fillcolor={_q(GROUP_COLORS[op_group(n.op)])}{extra}];")
            if e.id in children and any(drawn(c) for c in children[e.id]):
                yield f"{indent}subgraph cluster_{_dot_id(e.id)} {{"
                yield f"{indent}  label={_q(n.op.value + ' body of ' + e.id)};"
                yield f'{indent}  style="rounded,dashed"; color="#607d8b";'
                yield from emit(e.id, indent + "  ")
                yield f"{indent}}}"

    lines += list(emit(None, "  "))
    edges: dict[tuple[str, str], str] = {}  # (source id, user id) -> label
    for e in entries:
        if not drawn(e):
            continue
        for i in e.node.inputs:
            if i.op is Op.CONST:
                continue
            src = by_node[ids_in[e.parent][id(i)]]
            if i.op is Op.ITEM:
                text = vname(src) + (f": {type_str(i)}" if edge_labels else "")
            else:
                text = type_str(i) if edge_labels else ""
            edges.setdefault((source_of(src).id, e.id), text)
    # Stagger the edges out of sources and into sinks over `stagger` ranks (what Graphviz's
    # `unflatten` does): a row of 16 parameters feeding one scan becomes three short rows.
    indeg: dict[str, int] = {}
    outdeg: dict[str, int] = {}
    for u, v in edges:
        outdeg[u] = outdeg.get(u, 0) + 1
        indeg[v] = indeg.get(v, 0) + 1
    def end_of(u: str, v: str) -> str | None:
        return v if indeg.get(u, 0) == 0 and outdeg[u] == 1 else \
            u if outdeg.get(v, 0) == 0 and indeg[v] == 1 else None

    group: dict[str, int] = {}  # how many staggerable edges meet at each node
    for u, v in edges:
        end = end_of(u, v)
        if end is not None:
            group[end] = group.get(end, 0) + 1
    turn: dict[str, int] = {}
    for (u, v), text in edges.items():
        attrs = [f"label={_q(text)}"] if text else []
        end = end_of(u, v)
        if stagger > 1 and end is not None and group[end] > stagger:
            k = turn.get(end, 0)
            turn[end] = k + 1
            if k % stagger:
                attrs.append(f"minlen={1 + k % stagger}")
        lines.append(f"  {_dot_id(u)} -> {_dot_id(v)}" + (f" [{', '.join(attrs)}]" if attrs
                                                          else "") + ";")
    for e in entries:  # one dashed edge from a scan (or expanded fused node) to its body
        inside = [c for c in children.get(e.id, []) if drawn(c)]
        if drawn(e) and inside:
            lines.append(f"  {_dot_id(e.id)} -> {_dot_id(inside[0].id)} [style=dashed, "
                         f'color="#607d8b", lhead=cluster_{_dot_id(e.id)}];')
            # the body goes below its scan, and the users of the scan's results below the body
            # (program order, not side by side)
            inner = {c.id for c in inside}
            tops = [c for c in inside[1:] if not any(v == c.id and w in inner for w, v in edges)]
            for c in tops:
                lines.append(f"  {_dot_id(e.id)} -> {_dot_id(c.id)} [style=invis];")
            ends = dict.fromkeys(source_of(by_node[b]).id for b in e.body_outputs)
            ends = [b for b in ends if b in inner]
            users = list(dict.fromkeys(v for (w, v) in edges if w == e.id))
            for k, u in enumerate(users):
                minlen = f", minlen={1 + k % stagger}" \
                    if stagger > 1 and len(users) > stagger and k % stagger else ""
                for b in ends:
                    lines.append(f"  {_dot_id(b)} -> {_dot_id(u)} [style=invis{minlen}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


class GraphvizNotFoundError(RuntimeError):
    """The Graphviz `dot` program is needed to render a graph and is not installed."""


def render(graph: Graph, path: str | Path, format: str = "svg",  # noqa: A002 - like graphviz
           dot: str = "dot", **options: Any) -> Path:
    """Render the graph to an image file (svg or png) with Graphviz's `dot` program; `options`
    go to `to_dot` (name, expand_fused, edge_labels, source_lines, rankdir).

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
    proc = subprocess.run([exe, f"-T{format}", "-o", str(path)], input=to_dot(graph, **options).encode(),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"render: {dot} exited with status {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return path
