"""The IR: what every other stage reads and writes.

Owns the node and graph types (graph.py), dtypes (dtypes.py), the op registry in which each op
declares its shape/dtype rule, NumPy implementation, VJP rule and scalar rendering (ops.py), the
jaxpr-style text form (printer.py) and the verifier (verify.py). It imports nothing else of
rnncomp: every other subpackage may import it.
"""

from .dtypes import DType, as_dtype
from .graph import (
    Dim,
    Graph,
    GroupOp,
    Node,
    Op,
    Shape,
    fresh_id,
    intern,
    raw_node,
    shape_str,
    substitute,
    toposort,
    users,
)
from .printer import pformat

Graph.formatter = staticmethod(pformat)

__all__ = ["DType", "as_dtype", "Dim", "Graph", "GroupOp", "Node", "Op", "Shape", "fresh_id",
           "intern", "raw_node", "shape_str", "substitute", "toposort", "users", "pformat"]
