"""Deterministic jaxpr-style text form of a graph.

    # kernel=rnn/basic_lstm_cell/kernel  bias=rnn/basic_lstm_cell/bias
    { lambda ; X:f32[B,T,3] kernel:f32[7,16] bias:f32[16]. let
        a:f32[B,4] = full[value=0.0]
        ...

Inputs and parameters print under their own names (the last part of a scoped parameter name,
with the scope part that tells two apart when they share it; the header line maps each short
name that differs to the full one). Every other value is named a, b, ..., z, ba, bb, ... from its
*creation order* (`rnncomp.ir.provenance`), not from its position in the text: a value keeps its
name from one compiler stage to the next, so a diff of two stages shows only the lines a pass
changed. A graph without provenance (built by hand) numbers its values in print order. A name
that is already taken in the text gets a suffix (`q_1`); scan results nobody reads print as `_`.

Attrs are sorted, types inline (`d:f32[B,20] = matmul a b`), literals inline (`1.0:f32`), scan and
fused bodies inline and indented. `source_lines=True` ends each equation with the user's
`# file:line`. The text (without source lines) is the golden form in tests and part of the
compiled-kernel cache key: for one program it is the same in every process.
"""

from __future__ import annotations

import re
import weakref
from typing import Any

from . import provenance
from .graph import Graph, Node, Op, shape_str

_HIDDEN_ATTRS = {"body", "id", "role", "name", "shape", "dtype"}
_LEAVES = (Op.INPUT, Op.PARAM)


def _encode(n: int) -> str:
    # jaxpr-style: a..z, ba..bz, ca.. (the leading letter is never 'a' for multi-letter names)
    s = ""
    while True:
        s = chr(ord("a") + n % 26) + s
        n //= 26
        if n == 0:
            return s


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


def _ident(s: str) -> str:
    s = re.sub(r"\W+", "_", s).strip("_")
    return s if s and not s[0].isdigit() else f"v_{s}"


def leaf_names(names: list[str]) -> dict[str, str]:
    """Short printable names for input/parameter names: the last scope component
    ("rnn/basic_lstm_cell/kernel" -> "kernel"); names that share it are told apart by their
    first differing component ("cell_0_kernel", "cell_1_kernel"); "@ct/0" -> "ct_0"."""
    parts = {n: [p for p in n.lstrip("@").split("/") if p] or [n] for n in names}
    short = {n: _ident(p[-1]) if not p[-1][:1].isdigit() else _ident("_".join(p))
             for n, p in parts.items()}
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(short[n], []).append(n)
    for s, members in groups.items():
        if len(members) < 2:
            continue
        for n in members:
            p = parts[n][:-1]
            others = [parts[m][:-1] for m in members if m != n]
            diff = next((c for k, c in enumerate(p)
                         if any(k >= len(o) or o[k] != c for o in others)), None)
            if diff is not None:
                short[n] = _ident(f"{diff}_{s}")
    out: dict[str, str] = {}
    used: set[str] = set()
    for n in names:  # anything still shared gets a numeric suffix, in order
        s, k = short[n], 1
        while s in used:
            s, k = f"{short[n]}_{k}", k + 1
        used.add(s)
        out[n] = s
    return out


class _Printer:
    def __init__(self, graph: Graph, source_lines: bool = False, stable_names: bool = True):
        self.prov = provenance.family(graph) if stable_names else None
        self.source_lines = source_lines
        self.lines: list[str] = []
        self.used: set[str] = set()
        self.fallback: dict[int, int] = {}  # id(node) -> serial for nodes without provenance
        self.by_graph: dict[int, dict[int, str]] = {}  # id(graph) -> id(node) -> printed name
        leaves: dict[int, Node] = {}
        self.next_fallback = max((self._known(n) for n in graph.all_nodes()), default=-1) + 1
        for n in list(graph.inputs) + list(graph.all_nodes()):
            if n.op in _LEAVES and n.name is not None:
                leaves.setdefault(id(n), n)
        by_name = leaf_names([n.name for n in leaves.values()])
        self.leaf = {k: by_name[n.name] for k, n in leaves.items()}
        self.used.update(self.leaf.values())

    def _known(self, n: Node) -> int:
        if self.prov is None or n.op in _LEAVES or n.op is Op.CONST:
            return -1
        o = self.prov.get(n)
        return o.serial if o is not None else -1

    def serial(self, n: Node) -> int:
        s = self._known(n)
        if s >= 0:
            return s
        if id(n) not in self.fallback:
            self.fallback[id(n)] = self.next_fallback
            self.next_fallback += 1
        return self.fallback[id(n)]

    def bind(self, n: Node, names: dict[int, str]) -> str:
        if n.op in _LEAVES and id(n) in self.leaf:
            nm = self.leaf[id(n)]
        else:
            base = _encode(self.serial(n))
            nm, k = base, 1
            while nm in self.used:
                nm, k = f"{base}_{k}", k + 1
            self.used.add(nm)
        names[id(n)] = nm
        return nm

    def typed(self, name: str, n: Node) -> str:
        return f"{name}:{n.dtype}[{shape_str(n.shape)}]"

    def where(self, n: Node) -> str:
        if not self.source_lines or self.prov is None:
            return ""
        loc = provenance.location_str(self.prov.location(n))
        return f"  # {loc}" if loc else ""

    def graph(self, g: Graph, indent: int, header: bool = False) -> None:
        names: dict[int, str] = {}
        self.by_graph[id(g)] = names
        pad = " " * indent
        binders = [self.typed(self.bind(n, names), n) for n in g.inputs]
        if header:
            named = [(names[id(n)], n.name) for n in g.inputs
                     if n.name is not None and names[id(n)] != n.name]
            if named:
                self.lines.append(pad + "# " + "  ".join(f"{a}={b}" for a, b in named))
        self.lines.append(pad + "{ lambda ; " + " ".join(binders) + ". let")
        users_of_scan: dict[int, list[Node]] = {}
        for n in g.nodes:
            if n.op is Op.ITEM:  # results of scan/fused print as binders of that equation
                users_of_scan.setdefault(id(n.inputs[0]), []).append(n)
        for n in g.nodes:
            if id(n) in names or n.op is Op.CONST or n.op is Op.ITEM:
                continue
            self.eqn(n, names, indent + 4, users_of_scan.get(id(n), []))
        outs = ", ".join(self.ref(o, names) for o in g.outputs)
        self.lines.append(pad + f"  in ({outs}) }}")

    def ref(self, n: Node, names: dict[int, str]) -> str:
        if n.op is Op.CONST:
            return f"{_fmt_value(n.attr('value'))}:{n.dtype}"
        return names[id(n)]

    def eqn(self, n: Node, names: dict[int, str], indent: int, items: list[Node]) -> None:
        pad = " " * indent
        params = [(k, v) for k, v in n.attrs if k not in _HIDDEN_ATTRS or
                  (k in ("shape", "dtype") and n.op in (Op.CAST, Op.RESHAPE, Op.BROADCAST,
                                                        Op.ONE_HOT, Op.DIMSIZE))]
        if n.op is Op.FULL:
            params = [(k, v) for k, v in n.attrs if k == "value"]
        pstr = ""
        if params:
            pstr = "[" + " ".join(f"{k}={_fmt_value(v)}" for k, v in params) + "]"
        args = " ".join(self.ref(i, names) for i in n.inputs)
        if n.op is Op.SCAN or n.op is Op.FUSED:
            by_index = {it.attr("index"): it for it in items}
            outs = []
            for k, (shape, dtype) in enumerate(n.shape[1]):
                nm = self.bind(by_index[k], names) if k in by_index else "_"
                outs.append(f"{nm}:{dtype}[{shape_str(shape)}]")
            lhs = " ".join(outs)
            self.lines.append(f"{pad}{lhs} = {n.op.value}{pstr} {args}".rstrip() + self.where(n))
            self.graph(n.attr("body"), indent + 2)
            return
        nm = self.bind(n, names)
        self.lines.append(f"{pad}{self.typed(nm, n)} = {n.op.value}{pstr} {args}".rstrip()
                          + self.where(n))


def pformat(graph: Graph, source_lines: bool = False, stable_names: bool = True) -> str:
    """The graph as jaxpr-like text (deterministic; used in golden tests and cache keys).
    source_lines: end each equation with `# file:line`, where the user's code made it.
    stable_names=False: name values in print order, ignoring provenance (two graphs print the
    same exactly when they are the same computation)."""
    p = _Printer(graph, source_lines, stable_names)
    p.graph(graph, 0, header=True)
    return "\n".join(p.lines)


def value_names(graph: Graph) -> dict[tuple[int, int], str]:
    """The printed name of every value: (id(graph or body), id(node)) -> name, for tools that
    label pictures with the names of the text form."""
    p = _Printer(graph)
    p.graph(graph, 0, header=True)
    return {(g, n): nm for g, names in p.by_graph.items() for n, nm in names.items()}


def adopt(graph: Graph, prov: provenance.Provenance) -> Graph:
    """Attach a freshly traced graph's provenance table: its values are numbered 0, 1, ... in
    print order (so the traced text reads a, b, c, ...), keeping the source lines recorded while
    tracing; nodes the trace made but the graph does not use leave the table."""
    p = _Printer(graph)  # no table attached yet: print order
    p.graph(graph, 0, header=True)
    table: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    for n in graph.all_nodes():
        o = prov.origins.get(n)
        s = p.fallback.get(id(n), -1)
        if s >= 0 or (o is not None and o.loc is not None):
            table[n] = provenance.Origin(s, o.loc if o is not None else None)
    prov.origins = table
    prov.next = p.next_fallback
    return provenance.attach(graph, prov)


def ensure_family(graph: Graph) -> provenance.Provenance:
    """The graph's provenance table; a graph without one (built by hand, or by autodiff outside
    any table) gets one that numbers its values in print order, so its text does not change."""
    prov = provenance.family(graph)
    if prov is None:
        prov = provenance.Provenance()
        adopt(graph, prov)
    return prov
