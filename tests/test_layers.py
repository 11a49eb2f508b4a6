"""The package's structure: imports go one way through the layers, no module imports itself back, only
raytal/distributed imports Ray, and no block of code is repeated.

Layers, lowest first (a module may import its own layer or any lower one, never a higher one):

    core, config  <-  data, model, losses, postprocess, pseudo, eval, video  <-  engine  <-  recipes
                  <-  selftrain  <-  distributed  (<- jobs, outside the package)

Within the pure-algorithm layer the packages are ordered too (``PURE``): model may use losses and
postprocess, pseudo may use postprocess, eval may use core only.
Every import counts, also one inside a function: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raytal"

# package -> rank; an import must go to a rank <= the importer's (same package: anything but a cycle)
RANKS = {
    "core": 0, "config": 0, "cli": 7,
    "data": 1, "losses": 1, "postprocess": 1,
    "model": 2, "pseudo": 2, "eval": 2, "video": 2,
    "engine": 3, "recipes": 4, "selftrain": 5, "distributed": 6,
}
RAY_PACKAGES = {"distributed"}
# cli.py is the jobs' command-line helper: it sits above everything (it chooses the jobs' back-end).


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every raytal module and third-party top-level package ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if node.module.startswith("raytal"):  # from raytal.x import y: y may be a module
                out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name and m != "raytal"}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_layer():
    packages = {_package(m) for m in _graph()} - {""}
    assert packages <= set(RANKS), f"packages without a layer in RANKS: {sorted(packages - set(RANKS))}"


def test_imports_never_go_up_a_layer():
    bad = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps
           if _package(m) and _package(d) and RANKS[_package(d)] > RANKS[_package(m)]]
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = _graph()
    # A package's __init__ imports its own modules (the recipes register themselves): that edge, from a
    # package to its children, is how Python builds the package, not a dependency cycle of code.
    edges = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    color: dict[str, int] = defaultdict(int)
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        color[m] = 1
        stack.append(m)
        for d in sorted(edges[m]):
            if color[d] == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif color[d] == 0:
                visit(d)
        stack.pop()
        color[m] = 2

    for m in sorted(edges):
        if color[m] == 0:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_only_distributed_imports_ray():
    bad = sorted(_module_name(p) for p in PACKAGE.rglob("*.py")
                 if _package(_module_name(p)) not in RAY_PACKAGES
                 and any(i == "ray" or i.startswith("ray.") for i in _imports(p)))
    assert not bad, f"modules outside raytal/distributed importing Ray: {bad}"


def _blocks(path: Path, size: int) -> list[tuple[str, int]]:
    """(normalised text of ``size`` consecutive code lines, first line number); blank lines, comments,
    imports, docstring-only lines and lone brackets do not count."""
    lines = []
    for no, raw in enumerate(path.read_text().splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith(("#", "import ", "from ", '"""', "'''")) or s in (")", "]", "}", "),", "],", "},"):
            continue
        lines.append((s, no))
    return [("\n".join(t for t, _ in lines[i:i + size]), lines[i][1]) for i in range(len(lines) - size + 1)]


@pytest.mark.parametrize("size", [6])
def test_no_block_of_code_is_repeated(size):
    seen: dict[str, str] = {}
    repeats = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for text, line in _blocks(path, size):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if text in seen and not seen[text].startswith(f"{path.relative_to(PACKAGE.parent)}:{line}"):
                repeats.append(f"{where} repeats {seen[text]}")
            seen.setdefault(text, where)
    assert not repeats, f"blocks of {size} lines repeated:\n" + "\n".join(repeats[:20])
