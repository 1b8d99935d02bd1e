"""Where IR values come from: creation order and the user's source line, kept beside the nodes.

Nodes are interned and immutable: two structurally equal expressions are one object, shared by
every model (and every trace) that builds them. So where a node came from cannot be part of the
node: the same `tanh(x)` object may have been written on line 12 of one file and line 40 of
another. It is kept in a side table instead, a `Provenance`, one per *family* of graphs:

- the tracer (`rnncomp.runtime.model.trace`) makes a fresh Provenance for each trace and records,
  for every node the traced function makes (`ops.make` calls `note`), its creation serial and the
  user's `file:line` (the innermost stack frame outside the rnncomp package and the standard
  library). When the trace ends, `rnncomp.ir.printer.adopt` numbers the graph's values 0, 1,
  2, ... in the order the text lists them (a, b, c, ... as before) and attaches the table to
  the graph (`family(graph)`).
- the pass pipeline (`optimize`) and autodiff run under a `child` of the input graph's table:
  a node a pass *rebuilds* from another (`ops.remake`, a rewrite rule's replacement) inherits
  that node's serial and location (`inherit`), so it keeps its printed name; a node a pass
  *creates* gets the next serial of the run and the location of its first input that has one.
  Each run has its own child, started from the parent's counter: running the pipeline twice on
  one graph numbers its nodes the same way, whatever the first run left alive.

A table maps nodes weakly (it keeps no node alive) and is per family, so the same interned node
can have one serial in one model and another in a second model without either seeing the other.
The printer (`rnncomp.ir.printer`) names values from the serials (a, b, ..., z, ba, ...), so a
value keeps its name from stage to stage and `rnncomp inspect --diff` shows only what a pass
changed; `pformat(graph, source_lines=True)` prints the locations. Nothing here changes what a
graph computes, and a graph without a table prints with names in print order.
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from .graph import Graph, Node

__all__ = ["Origin", "Provenance", "family", "attach", "recording", "note", "inherit", "mark",
           "location_str"]


@dataclass(frozen=True)
class Origin:
    """A node's creation serial in its family and the user's source location (file, line)."""

    serial: int
    loc: tuple[str, int] | None = None


class Provenance:
    """The side table of one family of graphs (a trace and the graphs derived from it)."""

    __slots__ = ("origins", "next", "parent", "__weakref__")

    def __init__(self, parent: Provenance | None = None):
        self.origins: weakref.WeakKeyDictionary[Node, Origin] = weakref.WeakKeyDictionary()
        self.parent = parent
        self.next = parent.next if parent is not None else 0

    def get(self, node: Node) -> Origin | None:
        p: Provenance | None = self
        while p is not None:
            o = p.origins.get(node)
            if o is not None:
                return o
            p = p.parent
        return None

    def location(self, node: Node) -> tuple[str, int] | None:
        """The node's source location, or else the first one found through its inputs (a
        placeholder or slice a pass made reads a value the user wrote)."""
        stack, seen = [node], set()
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            o = self.get(n)
            if o is not None and o.loc is not None:
                return o.loc
            stack.extend(reversed(n.inputs))
        return None

    def child(self) -> Provenance:
        """A table for one derivation (a pass pipeline run, autodiff): reads fall back to this
        one, writes stay in the child, serials continue from this table's counter."""
        return Provenance(self)

    def record(self, node: Node, loc: tuple[str, int] | None) -> Origin:
        o = Origin(self.next, loc)
        self.next += 1
        self.origins[node] = o
        return o


# ---------------------------------------------------------------------------------------------
# graph -> family
# ---------------------------------------------------------------------------------------------
_FAMILY: weakref.WeakKeyDictionary[Graph, Provenance] = weakref.WeakKeyDictionary()


def family(graph: Graph) -> Provenance | None:
    """The provenance table attached to a (top-level) graph, or None."""
    return _FAMILY.get(graph)


def attach(graph: Graph, prov: Provenance) -> Graph:
    """Attach `prov` to `graph` unless it already has one (a pass that changes nothing returns
    its input graph, which keeps its own table). Returns the graph."""
    if graph not in _FAMILY:
        _FAMILY[graph] = prov
    return graph


# ---------------------------------------------------------------------------------------------
# recording
# ---------------------------------------------------------------------------------------------
_ACTIVE: list[tuple[Provenance, bool]] = []  # (table, tracing: record the user's source line)
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_SKIP_DIRS = tuple({_PKG_DIR, os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep})


@contextlib.contextmanager
def recording(prov: Provenance, *, tracing: bool = False) -> Iterator[Provenance]:
    """Record the nodes made in this block into `prov` (with source lines when tracing)."""
    _ACTIVE.append((prov, tracing))
    try:
        yield prov
    finally:
        _ACTIVE.pop()


def _user_location() -> tuple[str, int] | None:
    f = sys._getframe(2)
    while f is not None:
        name = f.f_code.co_filename
        if not (name.startswith(_SKIP_DIRS) or name.startswith("<")):
            return name, f.f_lineno
        f = f.f_back
    return None


def note(node: Node) -> Node:
    """Called by `ops.make` for every node: record it in the active table if it is new there."""
    if not _ACTIVE:
        return node
    prov, tracing = _ACTIVE[-1]
    if prov.get(node) is None:
        if tracing:
            loc = _user_location()
        else:
            loc = None
            for i in node.inputs:
                o = prov.get(i)
                if o is not None and o.loc is not None:
                    loc = o.loc
                    break
        prov.record(node, loc)
    return node


def mark() -> int:
    """The active table's counter: nodes recorded after this have serials >= it."""
    return _ACTIVE[-1][0].next if _ACTIVE else -1


def inherit(new: Node, old: Node, since: int) -> Node:
    """`new` replaces `old` (a rebuild with new inputs, a rewrite's result): if `new` was first
    recorded after `since` (it is new in this run), it takes `old`'s serial and location, so it
    prints under the old name. Returns `new`."""
    if not _ACTIVE or new is old:
        return new
    prov = _ACTIVE[-1][0]
    o_new = prov.origins.get(new)
    if o_new is None or o_new.serial < since:
        return new
    o_old = prov.get(old)
    if o_old is not None:
        prov.origins[new] = o_old
        if o_new.serial == prov.next - 1:  # give the serial back: names stay compact
            prov.next -= 1
    return new


def location_str(loc: tuple[str, int] | None) -> str:
    """file:line, the file relative to the working directory when it lies under it."""
    if loc is None:
        return ""
    path, line = loc
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            path = rel
    except ValueError:  # another drive on Windows
        pass
    return f"{path}:{line}"
