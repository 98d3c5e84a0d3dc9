"""The import direction of DESIGN.md, read from the source: pipeline -> tasks -> flame_tracking;
faceanything -> the shard format and flame_tracking; the shard format imports no stage and
nothing heavy (a training machine reads shards without PyAV, pycolmap or MediaPipe). Inside
faceanything, rooms by paper part stand on a floor of shared modules (its `__init__`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "tasks", "flame_tracking", "faceanything")
SHARD_FORMAT = "tasks.formats.shards"
HEAVY = ("av", "pycolmap", "mediapipe")
FACEANYTHING_FORMATS = (
    SHARD_FORMAT,
    "tasks.formats.atomic",
    "tasks.formats.exr",
    "tasks.formats.ply",
    "tasks.formats.cameras",
    "tasks.formats.names",
    "tasks.formats.video",
)
FA_FLOOR = ("geometry", "checkpoint", "correspondence", "metrics", "outputs")
"""faceanything's top-level modules: shared by the rooms above them."""
FA_MIDDLE = ("data", "model")
"""Rooms the top rooms stand on; neither imports the other."""
FA_TOP = ("train", "evaluate", "predict")
"""Rooms that import none of one another."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module an import statement in `path` names (absolute imports; the project has
    no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def project_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    sources = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in sources} for name, path in sources.items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in graph[todo.pop()] - seen:
            seen.add(m)
            todo.append(m)
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return project_graph()


def test_graph_sees_known_imports(graph: dict[str, set[str]]) -> None:
    """The reader finds real edges (a reader that saw none would pass every rule)."""
    assert "tasks.formats.exr" in graph[SHARD_FORMAT]
    assert "tasks.frames" in graph["tasks.sfm"]
    assert "flame_tracking.lbs" in graph["flame_tracking.tracker"]


def test_nothing_imports_pipeline(graph: dict[str, set[str]]) -> None:
    bad = {m: deps for m, deps in graph.items() if not m.startswith("pipeline")}
    assert {m for m, deps in bad.items() if any(d.startswith("pipeline") for d in deps)} == set()


def test_flame_tracking_imports_nothing_of_tasks(graph: dict[str, set[str]]) -> None:
    tracking = {m: d for m, d in graph.items() if m.startswith("flame_tracking")}
    assert {m for m, d in tracking.items() if any(x.startswith("tasks") for x in d)} == set()


def test_shard_format_imports_no_stage(graph: dict[str, set[str]]) -> None:
    used = {m for m in reachable(graph, SHARD_FORMAT) if m.startswith("tasks")}
    assert all(m.startswith("tasks.formats") or m == "tasks.progress" for m in used), used
    assert "tasks.formats.nersemble" not in used and "tasks.formats.video" not in used


def test_faceanything_reads_only_formats(graph: dict[str, set[str]]) -> None:
    """faceanything reaches tasks only through the light formats: the shard format and the
    writers it is built on (atomic, EXR, PLY, cameras, names), and video for predict's input
    and track videos; never a stage, the NeRSemble reader or the sample."""
    package = {m: d for m, d in graph.items() if m.startswith("faceanything")}
    used = {x for d in package.values() for x in d if x.startswith("tasks")}
    assert SHARD_FORMAT in used
    assert used <= set(FACEANYTHING_FORMATS) | {"tasks", "tasks.formats"}, used
    reached = set().union(*(reachable(graph, m) for m in used if m in graph))
    assert all(m.startswith("tasks.formats") or m == "tasks.progress" for m in reached), reached


def _fa_part(module: str) -> str | None:
    """The floor module or room of a faceanything module; None outside the package."""
    parts = module.split(".")
    return parts[1] if parts[0] == "faceanything" and len(parts) > 1 else None


def _fa_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importing part, imported part) between different parts of faceanything."""
    edges = set()
    for module, deps in graph.items():
        for dep in deps:
            here, there = _fa_part(module), _fa_part(dep)
            if here and there and here != there:
                edges.add((here, there))
    return edges


def test_faceanything_parts_are_known(graph: dict[str, set[str]]) -> None:
    """Every module of the package is in a floor module or a named room, and the reader
    sees real edges between rooms (a reader that saw none would pass every rule)."""
    parts = {_fa_part(m) for m in graph if m.startswith("faceanything.")}
    assert parts == set(FA_FLOOR) | set(FA_MIDDLE) | set(FA_TOP)
    assert {("train", "data"), ("evaluate", "model"), ("model", "geometry")} <= _fa_edges(graph)


def test_faceanything_floor_imports_no_room(graph: dict[str, set[str]]) -> None:
    """cameras, rays, checkpoints, eq. 2, metrics and writers stand below every room."""
    rooms = set(FA_MIDDLE) | set(FA_TOP)
    assert {(a, b) for a, b in _fa_edges(graph) if a in FA_FLOOR and b in rooms} == set()


def test_faceanything_rooms_import_downwards(graph: dict[str, set[str]]) -> None:
    """data and model import neither each other nor a top room; train, evaluate and predict
    import none of one another (what evaluation and inference share, running the network
    over frames, lives in model)."""
    edges = _fa_edges(graph)
    middle = {(a, b) for a, b in edges if a in FA_MIDDLE and b in set(FA_MIDDLE) | set(FA_TOP)}
    top = {(a, b) for a, b in edges if a in FA_TOP and b in FA_TOP}
    assert middle == set() and top == set()


def test_production_config_does_not_import_the_sample(graph: dict[str, set[str]]) -> None:
    assert not any(m.startswith("tasks.sample") for m in reachable(graph, "pipeline.config"))


@pytest.mark.parametrize(
    "module", [SHARD_FORMAT, "faceanything.correspondence", "faceanything.train.cli"]
)
def test_reading_shards_and_training_import_nothing_heavy(module: str) -> None:
    """A training machine needs no PyAV, pycolmap or MediaPipe."""
    code = f"import sys, {module}; print(sorted(set(sys.modules) & {set(HEAVY)!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
