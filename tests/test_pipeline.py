"""The whole chain through Luigi (`python -m pipeline`) on small sample subjects.

Subjects have 2 sequences x 2 frames and select 2 + 1 timesteps. Subject 902 is 900 with one
camera's videos blanked, so every timestep fails to register 16/16: the dataset must go on
without it. The slow cases build with two workers against one `luigid` and compare with a
single worker, and kill a run with SIGKILL half-way and resume it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipeline
from tasks.formats import shards, video
from tasks.sample.subject import SampleSubjectConfig, generate_sample_subject

BLANKED = "222200049"
FRONTAL = "222200037"
FRAMES = 2
SETTINGS = """[faceanything]
data_root = {data}
output_root = {out}
profile = sample
[sample]
frames_per_sequence = {frames}
blendshape_count = 2
pose_count = 1
"""
KEEP_ALIVE = """[worker]
keep_alive = true
"""
"""For workers sharing luigid: wait for tasks another worker holds instead of ending early."""
RUN_TIMEOUT_S = 1200


def _workspace(root: Path, data: Path, name: str, subjects: list[str], *, extra: str = "") -> Path:
    """A folder with its own luigi.cfg (shared data, own outputs) and a manifest."""
    folder = root / name
    folder.mkdir(exist_ok=True)
    text = SETTINGS.format(data=data, out=folder / "out", frames=FRAMES) + extra
    (folder / "luigi.cfg").write_text(text)
    (folder / "manifest.json").write_text(json.dumps({"subjects": subjects}))
    return folder


def _command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "--manifest", "manifest.json", *extra]


def _run(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        _command(*extra), cwd=folder, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    (folder / "run.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _report(folder: Path, subject: str) -> dict:
    return json.loads((folder / "out" / "subjects" / subject / "report.json").read_text())


def _files(shard: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file of a shard."""
    return {
        p.relative_to(shard).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(shard.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample root with subject 900, 902 (900 with camera BLANKED grey in every video) and 903
    (900 whose frontal videos do not decode)."""
    root = tmp_path_factory.mktemp("pipeline_data")
    generate_sample_subject(
        config=SampleSubjectConfig(subject="900", frames_per_sequence=FRAMES), root=root
    )
    shutil.copytree(root / "900", root / "902")
    for path in sorted((root / "902" / "sequences").glob(f"*/images/cam_{BLANKED}.mp4")):
        count = video.count_frames(path)
        height, width = video.decode_frames(path, [0]).frames[0].shape[:2]
        video.write_video(path, [np.full((height, width, 3), 90, np.uint8)] * count)
    shutil.copytree(root / "900", root / "903")
    for path in sorted((root / "903" / "sequences").glob(f"*/images/cam_{FRONTAL}.mp4")):
        path.write_bytes(b"not a video")
    return root


@pytest.fixture(scope="module")
def single(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One worker, local scheduler: the dropped subject first, then 900."""
    folder = _workspace(tmp_path_factory.mktemp("single"), data, "single", ["902", "903", "900"])
    _run(folder, "--workers", "1")
    return folder


def test_all_dropped_subject_is_reported_and_the_dataset_goes_on(single: Path) -> None:
    dropped = _report(single, "902")
    assert dropped["selected"] == 3
    assert dropped["reconstructed"] == dropped["tracked"] == dropped["shard_views"] == 0
    assert len(dropped["dropped"]["reconstruction"]) == 3
    assert all(BLANKED in why for why in dropped["dropped"]["reconstruction"])
    assert any("no timestep kept" in line for line in dropped["summary"])
    table = pd.read_parquet(single / "out" / "subjects" / "902" / "report.parquet")
    assert list(table.dropped_at) == ["reconstruction"] * 3
    assert not table.kept.any()

    unusable = _report(single, "903")
    assert unusable["selected"] == unusable["shard_views"] == 0
    reasons = [line for line in unusable["summary"] if FRONTAL in line]
    assert len(reasons) == 2 and all("unusable" in line for line in reasons), unusable["summary"]
    assert any("no frame with a face" in line for line in unusable["summary"])

    built = _report(single, "900")
    assert built["reconstructed"] == 3 and built["tracked"] >= 2
    assert built["shard_views"] == 16 * built["tracked"]
    assert built["seconds"]["depth"] > 0 and built["seconds"]["tracking_fit"] > 0
    canonical = built["canonical"]  # the hair, up to 3.5 cm out, is transferred
    assert canonical["transferred_pixels"] > 0.99 * canonical["depth_pixels"] > 0, canonical
    assert (
        canonical["pixels_10_20mm"] + canonical["pixels_20_30mm"] > 0.05 * canonical["depth_pixels"]
    )
    assert any(line.startswith("canonical maps: ") for line in built["summary"])
    assert not any("colour" in line for line in built["summary"])  # the sample has one
    subject = single / "out" / "subjects" / "900"
    assert len(list(subject.glob("timesteps/*/recon-*/depth.png"))) == 3
    assert (subject / "shard.png").stat().st_size > 50_000

    dataset = single / "out" / "shards"
    listed = shards.read_manifest(dataset)
    assert [info.path.name for info in listed] == ["900"]
    assert listed[0].samples == built["shard_views"]
    residual = shards.read_index(dataset / "900").sfm_residual_px
    assert residual.between(0.01, 2.0).all(), residual.describe()  # SfM's pixels, filled
    assert shards.validate(dataset) == []
    assert len(shards.read_index(dataset / "902")) == 0
    assert shards.validate(dataset / "902") == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "luigid exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"luigid did not listen on port {port}")


def _ran(log: str) -> list[str]:
    """Tasks a worker log says it ran ("Worker(...) running   Task(...)")."""
    return re.findall(r"\) running +(\w+\(.*\))$", log, flags=re.MULTILINE)


def _resumes(task: str) -> bool:
    """Whether a logged task yields its dependencies: it runs again once they are done, in
    whichever process is free (with `--assistant`), without redoing work."""
    family = task.split("(", 1)[0]
    return inspect.isgeneratorfunction(getattr(pipeline, family).run)


@pytest.mark.slow
def test_two_workers_against_luigid_equal_one_worker(data: Path, single: Path) -> None:
    subjects = ["900", "901"]  # 901 is made by the pipeline's GenerateSampleSubject
    (single / "manifest.json").write_text(json.dumps({"subjects": subjects}))
    _run(single)  # 900 is complete there: only 901 is built, by one worker
    assert _report(single, "901")["tracked"] >= 2

    multi = _workspace(single.parent, data, "multi", subjects, extra=KEEP_ALIVE)
    port = _free_port()
    state = multi / "luigid"
    state.mkdir()
    luigid = subprocess.Popen(
        [Path(sys.executable).with_name("luigid"), "--address", "127.0.0.1", "--port", str(port)]
        + ["--logdir", str(state), "--state-path", str(state / "state.pickle")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, luigid)
        remote = (
            *("--workers", "1", "--assistant"),
            *("--scheduler-host", "127.0.0.1", "--scheduler-port", str(port)),
        )
        logs = [multi / f"worker{i}.log" for i in range(2)]  # files: a full pipe would block
        outputs = [log.open("w") for log in logs]
        workers = [
            subprocess.Popen(_command(*remote), cwd=multi, stdout=out, stderr=subprocess.STDOUT)
            for out in outputs
        ]
        for out in outputs:
            out.close()  # each worker writes through its own copy
        for worker in workers:
            worker.wait(timeout=RUN_TIMEOUT_S)
    finally:
        luigid.terminate()
        luigid.wait()
    logs = [log.read_text() for log in logs]
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log[-3000:]
    ran = [_ran(log) for log in logs]
    assert all(any(t.startswith("Reconstruct(") for t in r) for r in ran), "work was not split"
    once = Counter(t for r in ran for t in r if not _resumes(t))
    assert max(once.values()) == 1, [t for t, n in once.items() if n > 1]  # no work done twice

    for subject in subjects:
        expected = _files(single / "out" / "shards" / subject)
        assert len(expected) > 1
        assert _files(multi / "out" / "shards" / subject) == expected, subject
    assert shards.validate(multi / "out" / "shards") == []


def _finished(out: Path) -> dict[str, tuple[int, int]]:
    """Outputs of finished per-timestep and subject tasks -> (inode, mtime_ns)."""
    subject = out / "subjects" / "900"
    paths = [*subject.glob("*.parquet"), *subject.glob("tracking-*")]
    paths += [*subject.glob("timesteps/*/*-*"), *subject.glob("signals/*.parquet")]
    return {
        p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in paths
        if not p.name.startswith(".")
    }


@pytest.mark.slow
def test_sigkill_then_resume_redoes_nothing_finished(data: Path, single: Path) -> None:
    folder = _workspace(single.parent, data, "killed", ["900"])
    out = folder / "out"
    process = subprocess.Popen(
        _command(),
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not list(out.glob("subjects/900/timesteps/*/canonical-*")):
        assert process.poll() is None, "the run ended before a timestep was canonicalised"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "shards" / "900").exists()
    before = _finished(out)
    assert any("/canonical-" in name for name in before)

    _run(folder)
    after = _finished(out)
    assert {name: after.get(name) for name in before} == before  # none redone
    assert shards.validate(out / "shards") == []
    assert _files(out / "shards" / "900") == _files(single / "out" / "shards" / "900")


def _ran_kinds(folder: Path) -> Counter[str]:
    """Run the pipeline; how many tasks of each kind it ran (a task that yields tasks is
    logged once per resumption: count those by kind, not number)."""
    done = _run(folder, "--workers", "1")
    return Counter(task.split("(")[0] for task in _ran(done.stdout + done.stderr))


def _selected(folder: Path) -> dict[str, set[tuple[str, int]]]:
    """Selection file name -> its (sequence, frame) timesteps."""
    files = (folder / "out" / "subjects" / "900").glob("selection-*.parquet")
    return {
        p.name: set(pd.read_parquet(p)[["sequence", "frame"]].itertuples(index=False))
        for p in files
    }


YIELDING = {"SelectFrames", "ReconstructSubject", "WriteShards"}
SUBJECT_ON = {"TrackSubject", "Canonicalize", "WriteShards", "BuildSubject", "BuildDataset"}


@pytest.mark.slow
def test_a_change_rebuilds_exactly_what_depends_on_it(
    data: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A selection count, a tracking weight, then the calibration file, changed in turn."""
    own = tmp_path_factory.mktemp("edited_data")
    shutil.copytree(data, own, dirs_exist_ok=True)  # the calibration is edited below
    folder = _workspace(tmp_path_factory.mktemp("edited"), own, "edited", ["900"])
    first = _ran_kinds(folder)
    assert first["Reconstruct"] == 3 and first["ExtractSignals"] == 2
    assert first["ExtractSequenceFrames"] == 2 and "ExtractFrames" not in first
    assert _ran_kinds(folder) == Counter()  # nothing changed: nothing runs
    ((old_name, old),) = _selected(folder).items()

    settings = folder / "luigi.cfg"
    settings.write_text(
        settings.read_text().replace("blendshape_count = 2", "blendshape_count = 1")
    )
    settings.write_text(settings.read_text().replace("pose_count = 1", "pose_count = 3"))
    ran = _ran_kinds(folder)
    (new,) = [steps for name, steps in _selected(folder).items() if name != old_name]
    added = new - old
    kept = _report(folder, "900")["tracked"]
    leaves = {"ExtractSequenceFrames", "Reconstruct"} if added else set()
    assert set(ran) == {"ReconstructSubject", "SelectFrames"} | leaves | SUBJECT_ON
    assert ran["Reconstruct"] == len(added)  # only the newly chosen timesteps
    assert ran["ExtractSequenceFrames"] == len({sequence for sequence, _ in added})
    assert ran["Canonicalize"] == kept

    settings.write_text(settings.read_text() + "[tracking]\npoint_weight = 2.0\n")
    ran = _ran_kinds(folder)
    assert set(ran) == SUBJECT_ON and ran["Canonicalize"] == kept

    calibration = own / "900" / "calibration" / "camera_params.json"
    calibration.write_text(json.dumps(json.loads(calibration.read_text()), indent=2))
    ran = _ran_kinds(folder)
    assert set(ran) == {"InspectSubject", "ExtractSequenceFrames", "Reconstruct"} | (
        {"ReconstructSubject"} | SUBJECT_ON
    )
    assert ran["Reconstruct"] == len(new)
    assert ran["ExtractSequenceFrames"] == len({sequence for sequence, _ in new})
    assert all(
        ran[kind] == 1
        for kind in set(ran)
        - YIELDING
        - {"Canonicalize"}
        - {"ExtractSequenceFrames", "Reconstruct"}
    )


@pytest.mark.slow
def test_same_input_in_another_folder_gives_the_same_shard(
    data: Path, single: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A copy of the data and a build in other folders (as two clones are): same bytes."""
    other = tmp_path_factory.mktemp("elsewhere") / "deeper" / "data"
    shutil.copytree(data, other)
    folder = _workspace(other.parent, other, "build", ["900"])
    _run(folder)
    expected = _files(single / "out" / "shards" / "900")
    assert len(expected) > 1 and _files(folder / "out" / "shards" / "900") == expected
