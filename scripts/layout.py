"""The package's layout, measured and checked: its import graph (modules, levels, imports,
cycles) and the rules the layout keeps.

    python scripts/layout.py [REPO]   # exit status 1 if a rule is broken
    python scripts/layout.py --by-folder [REPO]   # each subpackage counted as one node

The rules: imports point down the layers of LAYERS and form no cycle; at most MAX_AT_ROOT
modules sit directly in src/mnist_gluon/; no function is longer than MAX_FUNCTION lines and no
module longer than MAX_MODULE. A level is a module's place on the longest chain of imports
below it (a module that imports nothing of the package is on level 1).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# The package's layers, bottom up: the core at the package root, then each subpackage. A module
# imports its own layer or one below.
LAYERS = ("", "kernels", "compression", "privacy", "explain", "pretraining", "inference",
          "training", "serving", "sweep", "distributed", "cli", "__main__")
MAX_AT_ROOT, MAX_FUNCTION, MAX_MODULE = 13, 60, 450


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, at its top or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from . import a, b` imports modules a and b; `from .m import f`, module m.
            targets = [f"{base}.{alias.name}" for alias in node.names
                       if f"{base}.{alias.name}" in known] or [base]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or (
        len(parts) == 2 and parts[1] in LAYERS) else 0


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done, stack = [], set(), []

    def visit(node: str) -> None:
        if node in stack:
            found.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        stack.append(node)
        for target in sorted(graph[node]):
            visit(target)
        stack.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    return found


def levels(graph: dict[str, set[str]]) -> dict[str, int]:
    memo: dict[str, int] = {}

    def level(node: str, seen: frozenset) -> int:
        if node not in memo:
            below = [level(t, seen | {node}) for t in graph[node] if t not in seen]
            memo[node] = 1 + max(below, default=0)
        return memo[node]

    return {node: level(node, frozenset()) for node in graph}


def long_definitions(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    found = [f"{path}: {len(lines)} lines"] if len(lines) > MAX_MODULE else []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION:
                found.append(f"{path}:{node.lineno}: {node.name} is {length} lines")
    return found


def by_folder(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph with each subpackage drawn as one node, as a folder is seen from outside."""
    def unit(name: str) -> str:
        return ".".join(name.split(".")[:2])

    folded: dict[str, set[str]] = {}
    for name, targets in graph.items():
        folded.setdefault(unit(name), set()).update(unit(t) for t in targets)
    return {name: targets - {name} for name, targets in folded.items()}


def main() -> int:
    args = sys.argv[1:]
    folders = "--by-folder" in args
    args = [a for a in args if a != "--by-folder"]
    repo = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    package = repo / "src" / "mnist_gluon"
    known = modules(package)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    if folders:
        folded = by_folder(graph)
        print(f"{len(folded)} modules and folders, {max(levels(folded).values())} levels, "
              f"{sum(map(len, folded.values()))} imports, {len(cycles(folded))} cycles")
        return 0
    at_root = [name for name, path in known.items() if path.parent == package]
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in sorted(targets)
              if layer(b) > layer(a)]
    loops = cycles(graph)
    print(f"{len(known)} modules, {max(levels(graph).values())} levels, "
          f"{sum(map(len, graph.values()))} imports, {len(upward)} upward, {len(loops)} cycles; "
          f"{len(at_root)} modules directly in src/mnist_gluon/")
    broken = [f"upward import: {edge}" for edge in upward]
    broken += [f"cycle: {' -> '.join(loop)}" for loop in loops]
    if len(at_root) > MAX_AT_ROOT:
        broken.append(f"{len(at_root)} modules at the package root (at most {MAX_AT_ROOT})")
    for path in known.values():
        broken += long_definitions(path)
    for problem in broken:
        print(problem)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
