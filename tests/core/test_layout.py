"""The house rules of the tree (docs/how_it_works.md): imports point one way down the pipeline,
no cycles, Numba only inside the backends, no prototypes in the product.

The import graph is read from the source with `ast` (every import statement, including the ones
inside functions: a lazy import is still a dependency), so it needs no backend installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"rnncomp": ROOT / "rnncomp", "rnncomp.backends": ROOT / "backends"}

# subpackage -> the subpackages it may import (besides itself); "backends" are the drivers
ALLOWED = {
    "ir": set(),
    "frontend": {"ir"},
    "transforms": {"ir"},
    "runtime": {"ir", "frontend", "transforms"},
    "backends": {"ir", "frontend", "transforms", "runtime"},
    "train": {"ir", "frontend", "transforms", "runtime"},
    "tools": {"ir", "frontend", "transforms", "runtime", "train", "backends"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, d in PACKAGES.items():
        for f in d.rglob("*.py"):
            rel = f.relative_to(d).with_suffix("").parts
            if pkg == "rnncomp" and rel and rel[0] == "backends":
                continue
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            mods[".".join((pkg,) + parts)] = f
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours that `name` imports (resolved to the longest known module)."""
    is_pkg = path.name == "__init__.py"
    pkg = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                full = f"{mod}.{a.name}"
                add(full if full in known else mod)
    return out


def _external(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def _graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    for name, path in mods.items():
        g.add_node(name, path=path)
        for t in _imports(name, path, set(mods)):
            g.add_edge(name, t)
    return g


def _stage(name: str) -> str | None:
    if name.startswith("rnncomp.backends"):
        return "backends"
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_the_graph_is_read():
    g = _graph()
    # a sanity check of the reader itself: known edges must be there
    assert g.has_edge("rnncomp.runtime.model", "rnncomp.runtime.interp")
    assert g.has_edge("rnncomp.backends.cpu.driver", "rnncomp.runtime.kernel_cache")
    assert g.has_edge("rnncomp.backends.cuda.compile", "rnncomp.runtime.kernel_cache")
    assert len(g) > 40


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(_graph()))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + c[:1]) for c in cycles)


def test_imports_point_down_the_pipeline():
    bad = []
    for a, b in _graph().edges:
        sa, sb = _stage(a), _stage(b)
        if sa and sb and sa != sb and sb not in ALLOWED[sa]:
            bad.append(f"{a} ({sa}) imports {b} ({sb})")
        if sa and sb is None and b == "rnncomp":
            bad.append(f"{a} imports the rnncomp package itself (its __init__ imports everything)")
    assert not bad, "\n".join(bad)


def test_numba_only_in_backends():
    bad = [f"{n}: {sorted(_external(d['path']) & {'numba', 'llvmlite'})}"
           for n, d in _graph().nodes(data=True)
           if not n.startswith("rnncomp.backends")
           and _external(d["path"]) & {"numba", "llvmlite"}]
    assert not bad, "modules of rnncomp's core that import numba/llvmlite:\n" + "\n".join(bad)


@pytest.mark.parametrize("folder", ["rnncomp", "backends", "bench", "examples", "tests"])
def test_no_prototypes_in_the_product(folder):
    protos = [str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("proto*")
              if "__pycache__" not in p.parts]
    assert not protos, f"prototype files (move findings to docs/design-*.md): {protos}"


def test_every_module_has_a_docstring():
    missing = [n for n, d in _graph().nodes(data=True)
               if not ast.get_docstring(ast.parse(d["path"].read_text()))
               and d["path"].stat().st_size > 0]
    assert not missing, f"modules without a docstring saying what they own: {missing}"
