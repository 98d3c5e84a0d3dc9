"""Frames extraction and SfM on the synthetic sample subject, scored against its ground truth.

One small sample (one timestep, 550x802 videos, working size 275x401) is made once per
session; broken variants (a missing video, a blank camera, only background) are copies of it
with videos replaced. At 275x401 SfM's camera centres land ~1.4 mm from the calibration (the
image size sets that floor); the 1 mm check runs at the paper's 550x802 working size, shrunk
from larger videos as in the real pipeline, in the slow test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest

from tasks.formats.cameras import FRONTAL_SERIAL, SERIALS, project
from tasks.formats.colmap_cameras import serial_of
from tasks.formats.exr import read_exr
from tasks.formats.nersemble import Subject, load_subject, read_background, read_frames, video_path
from tasks.formats.video import write_video
from tasks.frames import (
    FramesConfig,
    TimestepFrames,
    extract_frames,
    image_path,
    read_cameras_json,
    read_frames_summary,
)
from tasks.sample.subject import SampleSubjectConfig, generate_sample_subject
from tasks.sample.world import ground_truth_map_path
from tasks.sfm import SUMMARY_FILE, SfmConfig, SfmError, SfmResult, SfmTimings, run_sfm

SEQUENCE = "EXP-1-head"
FRAME = 0
WORKING = 2
"""Working downsample of the sample's 550x802 videos (its ground truth is at this size)."""
FAST_MEDIAN_MM = 2.5
"""Camera-centre residual bound at 275x401, where ~1.4 mm is measured (3.4 mm without the
robust bundle adjustment)."""


def read_sfm_summary(directory: Path) -> SfmResult:
    """The result of an earlier `run_sfm` into `directory`, from its sfm.json."""
    path = Path(directory) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text())
        data.pop("config")
        data["timings"] = SfmTimings(**data["timings"])
        return SfmResult(**data, directory=Path(directory))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a readable SfM summary ({e})") from e


@pytest.fixture(scope="session", autouse=True)
def quiet_colmap() -> None:
    pycolmap.logging.minloglevel = 2


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(subject folder, ground truth folder) of a one-timestep sample subject."""
    config = SampleSubjectConfig(
        subject="901", frames_per_sequence=1, sequences=(SEQUENCE,), downsample=WORKING
    )
    result = generate_sample_subject(config=config, root=tmp_path_factory.mktemp("sample"))
    return result.subject_dir, result.ground_truth_dir


@pytest.fixture(scope="session")
def subject(sample: tuple[Path, Path]) -> Subject:
    return load_subject(sample[0])


@pytest.fixture(scope="session")
def frames(subject: Subject, tmp_path_factory: pytest.TempPathFactory) -> TimestepFrames:
    return frames_of(subject, tmp_path_factory.mktemp("timestep") / "frames")


@pytest.fixture(scope="session")
def mapped(frames: TimestepFrames) -> SfmResult:
    return run_sfm(frames_dir=frames.directory, output=frames.directory.parent / "mapping")


@pytest.fixture(scope="session")
def calibrated(frames: TimestepFrames) -> SfmResult:
    return run_sfm(
        frames_dir=frames.directory,
        output=frames.directory.parent / "calibrated",
        config=SfmConfig(mode="calibrated"),
    )


def broken_subject(source: Path, target: Path, videos: dict[str, np.ndarray | None]) -> Subject:
    """A copy of the subject whose videos of `videos` are deleted (None) or hold one image."""
    shutil.copytree(source, target)
    for serial, image in videos.items():
        path = video_path(target, sequence=SEQUENCE, serial=serial)
        path.unlink()
        if image is not None:
            write_video(path, [image])
    return load_subject(target)


def frames_of(subject: Subject, output: Path) -> TimestepFrames:
    return extract_frames(
        subject=subject,
        sequence=SEQUENCE,
        frame=FRAME,
        output=output,
        config=FramesConfig(downsample=WORKING),
    )


# ---------------------------------------------------------------- frames


def test_frames_are_the_decoded_views_losslessly(frames: TimestepFrames, subject: Subject) -> None:
    assert frames.status == "ok" and frames.reason == ""
    assert [v.serial for v in frames.views] == list(SERIALS)
    decoded = read_frames(
        subject, sequence=SEQUENCE, serial=FRONTAL_SERIAL, frames=[FRAME], downsample=WORKING
    )
    written = cv2.cvtColor(cv2.imread(str(frames.image_path(FRONTAL_SERIAL))), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(written, decoded.images[FRAME])
    assert written.shape == (401, 275, 3)
    assert read_frames_summary(frames.directory) == frames
    assert not list(frames.directory.parent.glob(".*partial"))


def test_frames_cameras_are_the_working_size_cameras(
    frames: TimestepFrames, subject: Subject
) -> None:
    cameras = read_cameras_json(frames.directory / "cameras.json")
    assert list(cameras) == list(SERIALS)
    for serial, camera in cameras.items():
        expected = subject.camera(serial, downsample=WORKING)
        np.testing.assert_allclose(camera.K, expected.K)
        np.testing.assert_allclose(camera.world_2_cam, expected.world_2_cam)
        assert (camera.width, camera.height) == (expected.width, expected.height)


def test_missing_and_blank_views_drop_the_timestep(subject: Subject, tmp_path: Path) -> None:
    gone, dead = SERIALS[3], SERIALS[9]
    grey = np.full((subject.cameras[dead].height, subject.cameras[dead].width, 3), 7, np.uint8)
    broken = broken_subject(subject.directory, tmp_path / "subject", {gone: None, dead: grey})
    result = frames_of(broken, tmp_path / "frames")
    states = {v.serial: v.state for v in result.views}
    assert states[gone] == "missing" and states[dead] == "blank"
    assert sum(s == "ok" for s in states.values()) == 14
    assert result.status == "dropped"
    assert f"camera {gone} missing" in result.reason and f"camera {dead} blank" in result.reason
    assert not image_path(result.directory, gone).exists()
    assert not image_path(result.directory, dead).exists()  # COLMAP must not see it


# ---------------------------------------------------------------- mapping


def test_all_views_register_and_align_to_the_calibration(mapped: SfmResult) -> None:
    assert mapped.status == "ok", mapped.reason
    assert mapped.registered == mapped.expected == 16
    assert list(mapped.residuals_mm) == list(SERIALS)
    assert mapped.median_residual_mm is not None
    assert mapped.median_residual_mm < FAST_MEDIAN_MM
    assert mapped.num_points3d > 300
    assert read_sfm_summary(mapped.directory) == mapped


def test_aligned_model_is_in_the_calibrated_world(
    mapped: SfmResult, frames: TimestepFrames
) -> None:
    cameras = read_cameras_json(frames.directory / "cameras.json")
    model = pycolmap.Reconstruction(mapped.sparse_dir)
    assert model.num_reg_images() == 16
    angles, residuals = [], {}
    for image in model.images.values():
        serial = serial_of(image.name)
        rotation = image.cam_from_world().rotation.matrix()
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        error = rotation @ cameras[serial].world_2_cam[:3, :3].T
        angles.append(np.degrees(np.arccos(np.clip((np.trace(error) - 1) / 2, -1, 1))))
        residuals[serial] = 1000 * np.linalg.norm(
            image.projection_center() - cameras[serial].center
        )
    assert np.median(angles) < 0.5 and max(angles) < 1.5
    assert residuals == pytest.approx(mapped.residuals_mm)
    assert (mapped.directory / "database.db").is_file()


def test_mapping_repeats_exactly(mapped: SfmResult, frames: TimestepFrames) -> None:
    again = run_sfm(frames_dir=frames.directory, output=frames.directory.parent / "again")
    assert again.residuals_mm == mapped.residuals_mm
    assert again.num_points3d == mapped.num_points3d


# ---------------------------------------------------------------- calibrated mode


def test_calibrated_mode_triangulates_on_the_true_surface(
    calibrated: SfmResult, frames: TimestepFrames, sample: tuple[Path, Path]
) -> None:
    assert calibrated.status == "ok", calibrated.reason
    assert calibrated.median_residual_mm < 1e-6  # the calibrated poses themselves
    cameras = read_cameras_json(frames.directory / "cameras.json")
    model = pycolmap.Reconstruction(calibrated.sparse_dir)
    points = {i: p.xyz for i, p in model.points3D.items()}
    errors = []
    for image in model.images.values():
        serial = serial_of(image.name)
        depth = read_exr(
            ground_truth_map_path(sample[1], sequence=SEQUENCE, frame=FRAME, serial=serial)
        )["depth"]
        ids = [p.point3D_id for p in image.points2D if p.has_point3D()]
        uv, z = project(np.array([points[i] for i in ids]), cameras[serial])
        u, v = np.round(uv).astype(int).T
        errors.append(np.abs(z - depth[v, u]))
    errors = np.concatenate(errors) * 1000
    assert np.isfinite(errors).mean() > 0.95  # observed points lie on the head
    assert np.nanmedian(errors) < 1.0
    assert np.nanpercentile(errors, 80) < 3.0


# ---------------------------------------------------------------- expected failures


def test_blank_view_is_dropped_naming_the_camera(subject: Subject, tmp_path: Path) -> None:
    dead = SERIALS[5]
    grey = np.full((subject.cameras[dead].height, subject.cameras[dead].width, 3), 0, np.uint8)
    broken = broken_subject(subject.directory, tmp_path / "s", {dead: grey})
    frames = frames_of(broken, tmp_path / "frames")
    result = run_sfm(frames_dir=frames.directory, output=tmp_path / "sfm")
    assert result.status == "dropped"
    assert result.registered == 15
    assert result.reason.startswith("registered 15/16")
    assert f"camera {dead} blank" in result.reason
    assert not result.sparse_dir.exists()
    assert read_sfm_summary(result.directory) == result


def test_removed_view_is_dropped(subject: Subject, tmp_path: Path) -> None:
    gone = FRONTAL_SERIAL
    broken = broken_subject(subject.directory, tmp_path / "s", {gone: None})
    frames = frames_of(broken, tmp_path / "frames")
    result = run_sfm(frames_dir=frames.directory, output=tmp_path / "sfm")
    assert result.status == "dropped"
    assert "registered 15/16" in result.reason and f"not registered: {gone}" in result.reason


def test_three_views_are_dropped(subject: Subject, tmp_path: Path) -> None:
    kept = {"222200036", "220700191", FRONTAL_SERIAL}
    videos = {s: None for s in SERIALS if s not in kept}
    frames = frames_of(broken_subject(subject.directory, tmp_path / "s", videos), tmp_path / "f")
    result = run_sfm(frames_dir=frames.directory, output=tmp_path / "sfm")
    assert result.status == "dropped"
    assert result.registered <= 3
    assert result.reason.startswith(f"registered {result.registered}/16")


def test_textureless_views_are_dropped(subject: Subject, tmp_path: Path) -> None:
    """Background plates only: smooth gradients, not blank, but nothing to match."""
    plates = {s: read_background(subject.directory, serial=s) for s in SERIALS}
    frames = frames_of(broken_subject(subject.directory, tmp_path / "s", plates), tmp_path / "f")
    assert frames.status == "ok"
    result = run_sfm(frames_dir=frames.directory, output=tmp_path / "sfm")
    assert result.status == "dropped"
    assert result.registered == 0
    assert result.reason.startswith("registered 0/16")
    assert "too few matches" in result.reason


def test_unreadable_frames_folder_names_it(tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    with pytest.raises(ValueError, match="frames"):
        run_sfm(frames_dir=tmp_path / "frames", output=tmp_path / "sfm")


def test_sfm_error_names_the_folder(frames: TimestepFrames, tmp_path: Path) -> None:
    config = SfmConfig(max_num_features=-5)  # pycolmap refuses it: an unexpected failure
    with pytest.raises(SfmError, match=str(frames.directory)):
        run_sfm(frames_dir=frames.directory, output=tmp_path / "sfm", config=config)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cameras_align_within_a_millimetre_at_550x802(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The paper's working size, 550x802, shrunk 2x from 1100x1604 videos as the real pipeline
    shrinks its 4x larger ones (which averages compression noise away): the median over
    timesteps of each timestep's median camera-centre residual (measured 0.38 mm; 0.71 mm
    without the robust bundle adjustment)."""
    config = SampleSubjectConfig(
        subject="900", scale=2, frames_per_sequence=2, sequences=(SEQUENCE,), downsample=2
    )
    root = tmp_path_factory.mktemp("sample_550")
    subject = load_subject(generate_sample_subject(config=config, root=root).subject_dir)
    medians = []
    for frame in range(2):
        frames = extract_frames(
            subject=subject,
            sequence=SEQUENCE,
            frame=frame,
            output=root / f"frames_{frame}",
            config=FramesConfig(downsample=2),
        )
        result = run_sfm(frames_dir=frames.directory, output=root / f"sfm_{frame}")
        assert result.status == "ok", result.reason
        medians.append(result.median_residual_mm)
    assert np.median(medians) < 1.0, medians
