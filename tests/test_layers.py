"""The architecture, enforced: imports only go down the layers, SQL drivers live in storage only.

Layers, bottom to top (DESIGN.md): domain (the vocabulary: timeframes, regressions, the window range),
config, records → analytics → storage → ingestion → pairs → research →
alerts → service → ui → the entry points: the command lines (``cli/``: the recorder ``cli.record``,
the scanner ``cli.scan``) and the dashboard (app.py, server.py). A module may import its own package and anything
below it, never above; ``if TYPE_CHECKING`` imports count too (an upward one still couples the layers).
No file is exempt: a module's layer is its top-level package (or file).
Tests, benchmarks and the test kit sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Both entry points sit on top. The command lines rank just below the dashboard so that they can
# never import app.py (a Streamlit script that renders when imported); nothing below imports either.
LAYERS = ("domain", "config", "records", "analytics", "storage", "ingestion", "pairs", "research", "alerts", "service",
          "ui", "cli", "app")
DASHBOARD = {"app.py", "server.py"}  # the two top-level files of the dashboard share one layer
DRIVERS = {"sqlite3", "psycopg", "psycopg_pool"}
TOOLING = {"tests", "testkit", "bench"}


def project_modules() -> list[str]:
    """Every application source file, relative to the repository (not tests, benchmarks, the kit, the venv)."""
    skip = {"tests", "bench", "testkit", ".venv", "data", "docs", "artifacts"}
    return sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")
                  if p.relative_to(ROOT).parts[0] not in skip)


def layer_of(relative: str) -> str:
    return "app" if relative in DASHBOARD else relative.split("/")[0].removesuffix(".py")


def imported(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``source``."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module.split(".")[0]))
    return names


def violations(relative: str, source: str) -> list[str]:
    """What is wrong with the imports of the module at ``relative`` whose text is ``source``."""
    layer = layer_of(relative)
    if layer not in LAYERS:
        return [f"{relative} is in no layer"]
    rank = LAYERS.index(layer)
    problems = []
    for line, name in imported(source):
        if name in LAYERS and LAYERS.index(name) > rank:
            problems.append(f"{relative}:{line} ({layer}) imports {name}, a layer above")
        if name in DRIVERS and layer != "storage":
            problems.append(f"{relative}:{line} imports the driver {name} outside storage/")
        if name == "streamlit" and layer not in ("ui", "app"):
            problems.append(f"{relative}:{line} imports streamlit below ui/")
        if name in TOOLING:
            problems.append(f"{relative}:{line} imports {name} (test/bench tooling)")
    return problems


@pytest.mark.parametrize("relative", project_modules())
def test_imports_only_go_down_and_drivers_stay_in_storage(relative: str):
    assert violations(relative, (ROOT / relative).read_text()) == []


def test_no_package_cycles():
    """Follows from the ranks; checked on the graph too so a mistake in LAYERS cannot hide one."""
    edges: dict[str, set[str]] = {}
    for relative in project_modules():
        source = layer_of(relative)
        edges.setdefault(source, set()).update(
            name for _, name in imported((ROOT / relative).read_text()) if name in LAYERS and name != source)

    def reaches(start: str, goal: str, seen: frozenset[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
                   for nxt in edges.get(start, ()))

    assert [package for package in edges if reaches(package, package, frozenset({package}))] == []


def test_benchmarks_never_import_the_tests():
    for path in sorted((ROOT / "bench").glob("*.py")):
        assert "tests" not in {name for _, name in imported(path.read_text())}, path.name


@pytest.mark.parametrize(("relative", "source", "problem"), [
    ("analytics/probe.py", "from alerts.rules import parse_rule\n", "imports alerts, a layer above"),
    ("storage/probe.py", "if TYPE_CHECKING:\n    from ingestion.engine import Engine\n", "imports ingestion"),
    ("ingestion/writer.py", "import sqlite3\n", "driver sqlite3 outside storage"),
    ("pairs/probe.py", "import streamlit as st\n", "streamlit below ui"),
    ("service.py", "from testkit.waiting import eventually\n", "imports testkit"),
    ("tools/probe.py", "import os\n", "in no layer"),
    # The command lines that once lived in lower layers would be caught there now.
    ("ingestion/__main__.py", "from service import Service\n", "imports service, a layer above"),
    ("pairs/scan.py", "from ui.export import to_csv_bytes\n", "imports ui, a layer above"),
    ("cli/probe.py", "import app\n", "imports app, a layer above"),
    ("cli/probe.py", "import streamlit\n", "streamlit below ui"),
])
def test_the_check_catches_what_it_claims(relative: str, source: str, problem: str):
    assert any(problem in found for found in violations(relative, source))
    assert violations("ui/probe.py", "import streamlit\nimport storage\nfrom records import Trade\n") == []
    assert violations("cli/probe.py", "from service import Service\nfrom ui.export import minute_table\n") == []
