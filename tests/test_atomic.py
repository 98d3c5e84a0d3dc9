"""Atomic outputs: an exception in the middle of a write leaves no temporary file or folder and
the older output untouched; a finished write replaces it; a killed run's leftover is replaced.
Each real writer is interrupted through its own input (a frame source that fails, a missing
file), not by patching the writer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trimesh

from tasks.formats.atomic import (
    STALE_AFTER_S,
    atomic_dir,
    atomic_file,
    partial_path,
    write_json,
)
from tasks.formats.exr import read_exr, write_exr
from tasks.formats.ply import read_ply_vertices, write_ply
from tasks.formats.video import write_video

ROOT = Path(__file__).resolve().parents[1]


class Interrupted(RuntimeError):
    """The failure the tests raise mid-write."""


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_dir_failure_keeps_the_old_folder(tmp_path: Path) -> None:
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(Interrupted), atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("half")
        raise Interrupted
    assert leftovers(tmp_path) == []
    assert [p.name for p in final.iterdir()] == ["old.txt"]


def test_atomic_dir_replaces_and_clears_a_killed_runs_leftover(tmp_path: Path) -> None:
    final = tmp_path / "out"
    stale = tmp_path / ".out.partial"
    stale.mkdir()
    (stale / "stale.txt").write_text("from a killed run")
    with atomic_dir(final) as tmp:
        assert list(tmp.iterdir()) == []
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert leftovers(tmp_path) == []


def test_atomic_file_failure_keeps_the_old_file(tmp_path: Path) -> None:
    final = tmp_path / "table.json"
    write_json(final, {"v": 1})
    with pytest.raises(Interrupted), atomic_file(final) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == tmp_path
        tmp.write_text("{half")
        raise Interrupted
    assert final.read_text() == '{\n "v": 1\n}'
    assert leftovers(tmp_path) == []


def test_video_interrupted_mid_stream_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cam.mp4"

    def frames() -> Iterator[np.ndarray]:
        for k in range(3):
            yield np.full((32, 32, 3), 40 * k, dtype=np.uint8)
        raise Interrupted

    with pytest.raises(Interrupted):
        write_video(path, frames(), fps=10)
    assert list(tmp_path.iterdir()) == []
    assert write_video(path, (np.zeros((32, 32, 3), np.uint8) for _ in range(2)), fps=10) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["cam.mp4"]


def test_exr_bad_channel_leaves_the_old_map(tmp_path: Path) -> None:
    path = tmp_path / "maps.exr"
    write_exr(path, {"depth": np.ones((4, 5), np.float32)})
    with pytest.raises(ValueError, match="differ in size"):
        write_exr(path, {"depth": np.zeros((4, 5)), "mask": np.zeros((3, 5))})
    assert read_exr(path)["depth"].tolist() == np.ones((4, 5)).tolist()
    assert leftovers(tmp_path) == []


def test_ply_round_trip_with_faces(tmp_path: Path) -> None:
    xyz = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.25]])
    path = write_ply(
        tmp_path / "m.ply",
        {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": np.array([1, 2, 3], np.uint8)},
        faces=np.array([[0, 1, 2]]),
    )
    vertices = read_ply_vertices(path)
    assert vertices.dtype.names == ("x", "y", "z", "red")
    assert vertices["x"].dtype == np.float64 and vertices["red"].tolist() == [1, 2, 3]
    assert np.array_equal(np.stack([vertices[a] for a in "xyz"], 1), xyz)
    mesh = trimesh.load(path, process=False)
    assert mesh.faces.tolist() == [[0, 1, 2]]


def test_no_module_renames_outputs_by_itself() -> None:
    """One home for atomic writing: no production module calls os.replace or makes its own
    temporary sibling, except flame_tracking (which may not import tasks)."""
    pattern = re.compile(r"os\.replace\(|\.partial|\.tmp\b")
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ("tasks", "pipeline")
        for p in (ROOT / pkg).rglob("*.py")
        if p.name != "atomic.py" and pattern.search(p.read_text())
    ]
    assert offenders == []


WRITER = """
import sys
from pathlib import Path
from tasks.formats.atomic import atomic_dir, write_json

root, name, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(root / f"ready-{name}").touch()
while not all((root / f"ready-{w}").exists() for w in ("a", "b")):
    pass
for k in range(rounds):
    with atomic_dir(root / "out") as tmp:
        for i in range(20):
            (tmp / f"{i}.txt").write_text(f"{name}{k}" * 100)
    write_json(root / "table.json", {"writer": name, "round": k, "pad": "x" * 10000})
"""


def test_two_processes_writing_one_output_never_clobber(tmp_path: Path) -> None:
    """Two processes replace the same folder and file 150 times each at once: both finish,
    a reader never finds the output missing or half written once it exists, the last
    complete write is what stays, and no temporary sibling is left."""
    rounds = 150
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, str(rounds)], cwd=ROOT)
        for name in ("a", "b")
    ]
    seen, missing, torn = set(), 0, 0
    while any(w.poll() is None for w in writers):
        if not (tmp_path / "table.json").exists():
            continue
        try:
            table = json.loads((tmp_path / "table.json").read_text())
            seen.add(table["writer"])
            # by path, as a reader of one output does (a listing that began in the old
            # folder goes on in it while that is removed)
            texts = [(tmp_path / "out" / f"{i}.txt").read_text() for i in range(20)]
        except FileNotFoundError:
            missing += 1
            continue
        except json.JSONDecodeError:
            torn += 1
            continue
        torn += any(len(text) < 200 for text in texts)
    assert [w.returncode for w in writers] == [0, 0]
    assert missing == 0 and torn == 0
    assert seen == {"a", "b"}  # the writers really overlapped
    last = (tmp_path / "out" / "0.txt").read_text()
    assert last in {f"a{rounds - 1}" * 100, f"b{rounds - 1}" * 100}
    assert len({(tmp_path / "out" / f"{i}.txt").read_text() for i in range(20)}) == 1
    assert leftovers(tmp_path) == []


def test_a_live_writers_sibling_is_kept_a_dead_ones_removed(tmp_path: Path) -> None:
    final = tmp_path / "out.json"
    live = partial_path(final)  # this process: alive
    dead = partial_path(final, owner=f"{live.name.split('.')[2].split('_')[0]}_999999999_ab")
    other_host_new = partial_path(final, owner="elsewhere_1_cd")
    other_host_old = partial_path(final, owner="elsewhere_2_ef")
    for path in (live, dead, other_host_new, other_host_old):
        path.write_text("unfinished")
    day_ago = time.time() - STALE_AFTER_S - 60
    os.utime(other_host_old, (day_ago, day_ago))
    write_json(final, {"v": 1})
    assert set(leftovers(tmp_path)) == {live.name, other_host_new.name}
