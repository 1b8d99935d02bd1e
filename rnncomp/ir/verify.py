"""The verifier: checks that a graph is well formed. Tests run it after every pass."""

from __future__ import annotations

from .graph import Graph, Node, Op, shape_str
from .ops import REGISTRY, ShapeError


class VerifyError(ValueError):
    """A graph is malformed; the message says which node and why."""


def verify(graph: Graph, *, top: bool = True) -> Graph:
    """Raise VerifyError if the graph is malformed; return it otherwise.

    Checks: every node's recorded shape/dtype equals its op's rule applied to its inputs; every
    leaf the outputs depend on is one of the graph's inputs (graphs and scan bodies are closed);
    input names are unique; top-level inputs are INPUT/PARAM and body inputs PLACEHOLDER; ITEM
    only reads multi-result nodes; scan bodies verify recursively.
    """
    where = "graph" if top else "scan body"
    ids = set()
    names = set()
    for n in graph.inputs:
        if not isinstance(n, Node):
            raise VerifyError(f"{where}: input {n!r} is not an IR node")
        if id(n) in ids:
            raise VerifyError(f"{where}: input {n!r} is listed twice")
        ids.add(id(n))
        allowed = (Op.INPUT, Op.PARAM) if top else (Op.PLACEHOLDER,)
        if n.op not in allowed:
            raise VerifyError(f"{where}: input {n!r} must be one of "
                              f"{', '.join(a.value for a in allowed)}")
        if n.name is not None:
            if n.name in names:
                raise VerifyError(f"{where}: two inputs are named {n.name!r}")
            names.add(n.name)
    for n in graph.nodes:
        if n.op not in REGISTRY:
            raise VerifyError(f"{where}: unknown op {n.op!r}")
        if n.op in (Op.INPUT, Op.PARAM, Op.PLACEHOLDER):
            if id(n) not in ids:
                raise VerifyError(
                    f"{where}: {n!r} is used but is not an input of this graph (free variable)")
            continue
        if n.op is Op.ITEM and (not n.inputs or n.inputs[0].op not in (Op.SCAN, Op.FUSED)):
            raise VerifyError(f"{where}: item reads {n.inputs[0]!r}, which has a single result")
        # before the rule: rules assume array inputs and would crash on a result tuple
        for i in n.inputs:
            if i.op in (Op.SCAN, Op.FUSED) and n.op is not Op.ITEM:
                raise VerifyError(f"{where}: {n.op.value} uses a scan's result tuple directly; "
                                  f"read it through item")
        try:
            shape, dtype = REGISTRY[n.op].rule(n.inputs, dict(n.attrs))
        except ShapeError as e:
            raise VerifyError(f"{where}: {n.op.value} node is ill-typed: {e}") from e
        if shape != n.shape or dtype != n.dtype:
            raise VerifyError(
                f"{where}: {n.op.value} node records {n.dtype}[{shape_str(n.shape)}] but its "
                f"rule gives {dtype}[{shape_str(shape) if shape and shape[0] != 'tuple' else shape}]")  # noqa: E501
        body = n.attr("body")
        if isinstance(body, Graph):
            verify(body, top=False)
            if n.op is Op.FUSED:
                if len(body.inputs) != len(n.inputs):
                    raise VerifyError(f"{where}: fused node has {len(n.inputs)} inputs but its "
                                      f"body takes {len(body.inputs)}")
    for o in graph.outputs:
        if o.op in (Op.SCAN, Op.FUSED):
            raise VerifyError(f"{where}: an output is a scan's result tuple; use item")
    return graph
