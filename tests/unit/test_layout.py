"""The package's layering, checked from the source: no import cycle, dependencies point down.

Every ``import`` counts, the lazy ones inside functions too: a cycle hidden behind a lazy
import is still a cycle for a reader and for the next refactor.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "nbcontainer"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in its source)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target != "nbcontainer":
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_anywhere() -> None:
    assert _cycles(import_graph()) == []


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else module


#: What each part may import (besides the pure bottom: errors, spec, options, capnames, paths,
#: _libc, protocol). Front ends -> building -> runtime -> {cgroups, images, child}.
ALLOWED = {
    "notebook": {"runtime", "cgroups", "images", "building", "cli", "child", "kernel",
                 "registry"},
    "kernel": {"runtime", "cgroups", "images", "notebook", "child", "registry"},
    "cli": {"runtime", "cgroups", "images", "building", "doctor", "kernel", "child", "net",
            "registry"},
    "building": {"runtime", "images", "cgroups", "child", "registry"},
    "runtime": {"cgroups", "images", "child", "net", "registry"},
    "registry": {"images"},
    "net": set(),
    "child": {"cgroups"},  # a spare's helper leaves its cgroup (lazily, forked by the zygote)
    "cgroups": set(),
    "images": set(),
    "doctor": {"cgroups", "images", "child", "runtime", "net"},
}
BOTTOM = {"errors", "_records", "spec", "options", "capnames", "paths", "_libc", "protocol",
          "__main__", "reference",
          "seccomp_profile", "_netlink", "progress"}


def test_dependencies_point_down() -> None:
    wrong = []
    for module, targets in import_graph().items():
        layer = _layer(module)
        if module in ("nbcontainer", "nbcontainer.__main__"):
            continue  # the public facade and ``python -m nbcontainer`` sit on top of it all
        for target in targets:
            other = _layer(target)
            if other == layer or other in BOTTOM:
                continue
            if other not in ALLOWED.get(layer, set()):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_container_side_imports_only_the_bottom() -> None:
    """The helper runs before every container: it must not load the supervisor's modules."""
    graph = import_graph()
    for module in (m for m in graph if m.startswith("nbcontainer.child")):
        reach = {t for t in graph[module] if not t.startswith("nbcontainer.child")}
        assert reach <= {"nbcontainer._libc", "nbcontainer.protocol", "nbcontainer.capnames",
                         "nbcontainer.cgroups", "nbcontainer._netlink"}, (module, reach)
