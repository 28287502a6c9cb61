"""The house's floors, checked from the code: imports point down only, and nothing forms a cycle.

Floors, bottom to top: platform -> tenancy -> integrations -> domains (inventory, channels, orders,
shipping) -> dashboard, workers, ops -> app. A package may import its own floor's neighbours only where
ALLOWED says so (domains may use each other; nothing else sideways).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "rappit"
DOMAINS = {"inventory", "channels", "orders", "shipping"}
FLOOR = {
    "platform": 0,
    "tenancy": 1,
    "integrations": 2,
    **dict.fromkeys(DOMAINS, 3),
    "dashboard": 4,
    "workers": 4,
    "ops": 4,
    "app": 5,
}


def imports_by_package(root: Path = ROOT) -> dict[str, set[str]]:
    """package -> the rappit packages its modules import (function-level imports included)."""
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            continue  # rappit/__init__.py
        package = parts[0]
        edges = graph.setdefault(package, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                bits = name.split(".")
                if bits[0] == "rappit" and len(bits) > 1 and bits[1] != package:
                    edges.add(bits[1])
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's members, found by depth-first search from each node."""
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                found.append([*path, start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for package, targets in graph.items():
        for target in targets:
            if package not in FLOOR or target not in FLOOR:
                wrong.append(f"{package} -> {target}: a package with no floor (add it to FLOOR)")
            elif FLOOR[target] > FLOOR[package] or (
                FLOOR[target] == FLOOR[package] and package not in DOMAINS
            ):
                wrong.append(f"{package} -> {target}")
    return sorted(wrong)


def test_no_cycles_between_packages() -> None:
    assert cycles(imports_by_package()) == []


def test_imports_point_down_only() -> None:
    assert upward(imports_by_package()) == []


def test_no_domain_imports_the_app_or_the_workers() -> None:
    graph = imports_by_package()
    offenders = {p: t & {"app", "workers"} for p, t in graph.items() if p in DOMAINS | {"integrations"}}
    assert {p: t for p, t in offenders.items() if t} == {}


@pytest.mark.parametrize(
    ("graph", "expected_cycles", "expected_upward"),
    [
        ({"platform": {"tenancy"}, "tenancy": {"platform"}}, 1, ["platform -> tenancy"]),
        ({"orders": {"workers"}, "workers": {"orders"}}, 1, ["orders -> workers"]),
        ({"orders": {"channels"}, "channels": {"inventory"}}, 0, []),
        ({"workers": {"dashboard"}}, 0, ["workers -> dashboard"]),
    ],
)
def test_the_checks_catch_what_they_name(
    graph: dict[str, set[str]], expected_cycles: int, expected_upward: list[str]
) -> None:
    assert len(cycles(graph)) == expected_cycles
    assert upward(graph) == expected_upward
