"""Every output carries the identity of the settings and inputs that shaped it: a change
gives new names exactly downstream of it, and nowhere else (nothing stale, nothing rebuilt
for nothing). Read from the tasks' outputs over a subject folder in NeRSemble's layout; the
rebuild itself is run end to end in tests/test_pipeline.py."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import SEQUENCES

from flame_tracking.energies import EnergyWeights
from pipeline import (
    BuildDataset,
    BuildSubject,
    Canonicalize,
    ExtractFrames,
    ExtractSignals,
    InspectSubject,
    Reconstruct,
    ReconstructSubject,
    SelectFrames,
    TrackSubject,
    WriteShards,
)
from pipeline.common import IdentityTarget, upstream_tag
from tasks.canonical import CanonicalConfig
from tasks.mvs import MvsConfig

FRONTAL = "222200037"
DOWNSTREAM_OF_TRACKING = {"TrackSubject", "Canonicalize", "WriteShards", "BuildSubject"}
DATASET = {"BuildDataset"}


def identities(root: Path, subject: str = "043") -> dict[str, str]:
    """Task name -> the identity of its output (path name, or recorded identity)."""
    step = {"subject": subject, "sequence": SEQUENCES[1], "frame": 7}
    tasks = [
        InspectSubject(subject=subject),
        ExtractSignals(subject=subject, sequence=SEQUENCES[0]),
        SelectFrames(subject=subject),
        ExtractFrames(**step),
        Reconstruct(**step),
        ReconstructSubject(subject=subject),
        TrackSubject(subject=subject),
        Canonicalize(**step),
        WriteShards(subject=subject),
        BuildSubject(subject=subject),
        BuildDataset(manifest=root / "manifest.json"),
    ]
    return {type(t).__name__: upstream_tag(t.output()) for t in tasks}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


def touch(path: Path, content: bytes) -> None:
    """Replace a file's content and move its time on (a later edit, as a user makes it)."""
    path.write_bytes(content)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_identities_are_stable(settings, tmp_path: Path) -> None:
    first = identities(tmp_path)
    assert identities(tmp_path) == first
    assert len(set(first.values())) == len(first)


def test_subject_43_is_043(settings, tmp_path: Path) -> None:
    assert identities(tmp_path, "43") == identities(tmp_path, "043")
    assert InspectSubject(subject="43").output().path == InspectSubject(subject="043").output().path


def test_selection_count_rebuilds_from_selection_on(settings, tmp_path: Path) -> None:
    before = identities(tmp_path)
    settings.set("selection", "blendshape_count", "39")
    after = changed(before, identities(tmp_path))
    assert after == {"SelectFrames", "ReconstructSubject"} | DOWNSTREAM_OF_TRACKING | DATASET


def test_tracking_weight_rebuilds_from_tracking_on(settings, tmp_path: Path) -> None:
    before = identities(tmp_path)
    settings.set("tracking", "point_weight", str(2 * EnergyWeights.point))
    assert changed(before, identities(tmp_path)) == DOWNSTREAM_OF_TRACKING | DATASET


def test_canonical_limit_rebuilds_canonical_maps_and_shard(settings, tmp_path: Path) -> None:
    before = identities(tmp_path)
    settings.set("canonical", "max_distance", str(2 * CanonicalConfig.max_distance))
    after = changed(before, identities(tmp_path))
    assert after == {"Canonicalize", "WriteShards", "BuildSubject"} | DATASET


def test_mvs_window_rebuilds_reconstruction_not_frames(settings, tmp_path: Path) -> None:
    before = identities(tmp_path)
    settings.set("mvs", "window_radius", str(MvsConfig.window_radius + 1))
    after = changed(before, identities(tmp_path))
    assert after == {"Reconstruct", "ReconstructSubject"} | DOWNSTREAM_OF_TRACKING | DATASET


def test_calibration_file_rebuilds_frames_on_not_signals(settings, tmp_path: Path) -> None:
    before = identities(tmp_path)
    touch(tmp_path / "data" / "043" / "calibration" / "camera_params.json", b'{"new": 1}')
    after = changed(before, identities(tmp_path))
    assert (
        after
        == {
            "InspectSubject",
            "ExtractFrames",
            "Reconstruct",
            "ReconstructSubject",
        }
        | DOWNSTREAM_OF_TRACKING
        | DATASET
    )


def test_frontal_video_rebuilds_its_signals_and_everything_after(settings, tmp_path: Path) -> None:
    before = identities(tmp_path)
    video = tmp_path / "data" / "043" / "sequences" / SEQUENCES[0] / "images"
    touch(video / f"cam_{FRONTAL}.mp4", b"re-encoded")
    after = changed(before, identities(tmp_path))
    # The timestep in the other sequence keeps its frames and reconstruction.
    first = {"InspectSubject", "ExtractSignals", "SelectFrames", "ReconstructSubject"}
    assert after == first | DOWNSTREAM_OF_TRACKING | DATASET


def test_flame_file_rebuilds_tracking_on(settings, tmp_path: Path) -> None:
    model, embedding = tmp_path / "flame2023.pkl", tmp_path / "embedding.npz"
    model.write_bytes(b"model")
    embedding.write_bytes(b"embedding")
    settings.set("faceanything", "flame_model", str(model))
    settings.set("faceanything", "flame_landmark_embedding", str(embedding))
    before = identities(tmp_path)
    touch(model, b"another model")
    assert changed(before, identities(tmp_path)) == DOWNSTREAM_OF_TRACKING | DATASET


def test_fixed_place_output_is_replaced_under_a_new_identity(tmp_path: Path) -> None:
    old = IdentityTarget(tmp_path / "report.json", identity="old")
    old.write({"views": 1})
    new = IdentityTarget(tmp_path / "report.json", identity="new")
    assert old.exists() and not new.exists()
    new.write({"views": 2})  # a rebuild replaces the file in place
    assert new.exists() and not old.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
