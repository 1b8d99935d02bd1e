"""Deterministic jaxpr-style text form of a graph.

Names a, b, ..., z, ba, bb, ... are assigned in topological order at print time; attrs are
sorted; types are inline (`d:f32[B,20] = matmul a b`); literals print inline (`1.0:f32`);
scan bodies print inline and indented. The same text is the golden form in tests and part of
the compiled-kernel cache key.
"""

from __future__ import annotations

from typing import Any

from .graph import Graph, Node, Op, shape_str

_HIDDEN_ATTRS = {"body", "id", "role", "name", "shape", "dtype"}


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


class _Printer:
    def __init__(self):
        self.count = 0
        self.lines: list[str] = []

    def fresh(self) -> str:
        s = _encode(self.count)
        self.count += 1
        return s

    def typed(self, name: str, n: Node) -> str:
        return f"{name}:{n.dtype}[{shape_str(n.shape)}]"

    def graph(self, g: Graph, indent: int, names: dict[int, str] | None = None,
              header: bool = False) -> None:
        names = dict(names or {})
        pad = " " * indent
        binders = []
        for n in g.inputs:
            nm = self.fresh()
            names[id(n)] = nm
            binders.append(self.typed(nm, n))
        if header:
            named = [(names[id(n)], n.name) for n in g.inputs if n.name is not None]
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
                nm = self.fresh()
                if k in by_index:
                    names[id(by_index[k])] = nm
                outs.append(f"{nm}:{dtype}[{shape_str(shape)}]")
            lhs = " ".join(outs)
            self.lines.append(f"{pad}{lhs} = {n.op.value}{pstr} {args}".rstrip())
            self.graph(n.attr("body"), indent + 2)
            return
        nm = self.fresh()
        names[id(n)] = nm
        self.lines.append(f"{pad}{self.typed(nm, n)} = {n.op.value}{pstr} {args}".rstrip())


def pformat(graph: Graph) -> str:
    """The graph as jaxpr-like text (deterministic; used in golden tests and cache keys)."""
    p = _Printer()
    p.graph(graph, 0, header=True)
    return "\n".join(p.lines)
