"""The structure's rules (DESIGN.md): data flows one way between the stages, so no two parts of the package import
each other, even inside a function; evaluation reads tables and never a network; scale calls the library."""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "openfootprints"


def part_of(path: Path) -> str:
    """The part of the package a file belongs to: its sub-package, or the module itself (``api``, ``cli``, …)."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def imported_parts(path: Path) -> set[str]:
    """The other parts of the package that a file imports anywhere in it (top level or inside functions)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "openfootprints"]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            pieces = name.split(".")
            if pieces[0] == "openfootprints" and len(pieces) > 1 and pieces[1] != part_of(path):
                if (PACKAGE / pieces[1]).is_dir() or (PACKAGE / f"{pieces[1]}.py").exists():
                    parts.add(pieces[1])
    return parts


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        graph[part_of(path)] |= imported_parts(path)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (each as the path that closes it)."""
    found, state = [], {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            walk(start, [start])
    return found


def test_no_two_parts_of_the_package_import_each_other():
    graph = import_graph()
    assert {"pipeline", "model", "predict", "scale", "api"} <= set(graph)  # the walk saw the package
    assert cycles(graph) == []


def test_evaluation_reads_tables_never_networks_and_scale_calls_the_library():
    graph = import_graph()
    assert "model" not in graph["evaluation"] and "predict" not in graph["evaluation"]
    assert "api" not in graph["scale"] and "scale" in graph["api"]


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
