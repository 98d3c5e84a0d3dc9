"""The synthetic sample subject: NeRSemble layout read back, ground truth self-consistent,
MediaPipe finds the face, colour calibration undoes the casts, safe and repeatable writes.

One small subject (scale 4, 3 frames per sequence) is generated once per session."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import trimesh
from scipy import ndimage
from skimage import data

from flame_tracking.loading import load_landmark_embedding
from tasks.face_landmarker import FaceLandmarkerConfig, FaceLandmarkerRunner
from tasks.formats import video
from tasks.formats.cameras import FRONTAL_SERIAL, SERIALS, backproject_depth, project
from tasks.formats.color import apply_color_correction
from tasks.formats.exr import read_exr
from tasks.formats.nersemble import list_sequences, load_subject, read_frames, video_path
from tasks.sample.appearance import PHOTO_KEYPOINTS, bake_texture
from tasks.sample.hair import subdivide
from tasks.sample.landmark_embedding import EMBEDDING_FILE
from tasks.sample.scene import RIG, build_rig, record
from tasks.sample.subject import (
    SampleSubjectConfig,
    generate_sample_subject,
    ground_truth_dir,
    ground_truth_map_path,
)
from tasks.sample.world import (
    SampleWorld,
    build_world,
    ground_truth_view,
    render_linear,
    render_view,
)

FRAMES = 3
CONFIG = SampleSubjectConfig(subject="900", frames_per_sequence=FRAMES)
TINY = SampleSubjectConfig(
    subject="901", frames_per_sequence=1, sequences=("EXP-1-head",), texture_size=256
)
NEIGHBOUR = "222200038"
"""The level camera at yaw +15 degrees, beside the frontal one."""


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    result = generate_sample_subject(config=CONFIG, root=root)
    assert result.generated
    return root


@pytest.fixture(scope="session")
def world(root: Path) -> SampleWorld:
    return build_world(config=CONFIG, root=root)


@pytest.fixture(scope="session")
def landmarker() -> FaceLandmarkerRunner:
    with FaceLandmarkerRunner(config=FaceLandmarkerConfig()) as runner:
        yield runner


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_reader_reads_the_layout_back(root: Path, world: SampleWorld) -> None:
    subject = load_subject(root / "900")
    assert list(subject.cameras) == list(SERIALS)
    for serial, camera in subject.cameras.items():
        assert (camera.width, camera.height) == (550, 802)
        np.testing.assert_allclose(camera.K, world.cameras[serial].K, rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            camera.world_2_cam, world.cameras[serial].world_2_cam, atol=1e-12
        )
    assert list_sequences(subject.directory) == sorted(CONFIG.sequences)
    for sequence in CONFIG.sequences:
        for serial in SERIALS:
            path = video_path(subject.directory, sequence=sequence, serial=serial)
            assert video.count_frames(path) == FRAMES
    assert set(subject.color_calibration) == set(SERIALS)


def test_decoded_frames_match_the_render(root: Path, world: SampleWorld) -> None:
    subject = load_subject(root / "900")
    sequence = "EMO-1-shout+laugh"
    frame = list(world.posed_frames(sequence))[1]
    for serial in (FRONTAL_SERIAL, SERIALS[0]):
        decoded = read_frames(
            subject, sequence=sequence, serial=serial, frames=[1], color_correct=False
        ).images[1]
        rendered = render_view(world, frame, sequence=sequence, frame_index=1, serial=serial)
        assert _psnr(decoded, rendered) > 34.0  # measured 37-38 dB (x264 crf 18 + noise)


def test_color_calibration_undoes_the_cast(root: Path, world: SampleWorld) -> None:
    subject = load_subject(root / "900")
    sequence = "EXP-1-head"
    frame = next(world.posed_frames(sequence))
    for serial in SERIALS[::5]:
        linear = render_linear(world, frame, serial=serial)
        clean = record(
            linear,
            cast=np.eye(3),
        )
        # Orientation: the stored matrix inverts the cast exactly, before any compression.
        cast = record(linear, cast=world.casts[serial])
        undone = apply_color_correction(cast, subject.color_calibration[serial])
        assert np.abs(undone.astype(int) - clean).mean() < 0.6
        kwargs = {"sequence": sequence, "serial": serial, "frames": [0]}
        raw = read_frames(subject, color_correct=False, **kwargs).images[0]
        corrected = read_frames(subject, **kwargs).images[0]
        assert _psnr(corrected, clean) > _psnr(raw, clean) + 3.0


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of (H, W[, C]) at pixel (x, y) (N, 2); NaN where a neighbour is NaN."""
    coords = [xy[:, 1], xy[:, 0]]
    if image.ndim == 2:
        return ndimage.map_coordinates(image, coords, order=1, cval=np.nan)
    return np.stack([_bilinear(image[..., c], xy) for c in range(image.shape[2])], axis=1)


def test_ground_truth_views_agree(root: Path, world: SampleWorld) -> None:
    """Depth of the frontal view re-projected into its neighbour meets the neighbour's depth,
    and both views give a surface point the same canonical position."""
    gt = ground_truth_dir(root=root, subject="900")
    depth_err, canonical_err = [], []
    for sequence in CONFIG.sequences:
        maps = {
            s: read_exr(ground_truth_map_path(gt, sequence=sequence, frame=0, serial=s))
            for s in (FRONTAL_SERIAL, NEIGHBOUR)
        }
        a, b = world.gt_cameras[FRONTAL_SERIAL], world.gt_cameras[NEIGHBOUR]
        points = backproject_depth(maps[FRONTAL_SERIAL]["depth"].astype(np.float64), a)
        seen = np.isfinite(points[..., 0])
        xy, z = project(points[seen], b)
        depth_err.append(np.abs(_bilinear(maps[NEIGHBOUR]["depth"], xy) - z))
        there = _bilinear(maps[NEIGHBOUR]["canonical"], xy)
        canonical_err.append(
            np.linalg.norm(there - maps[FRONTAL_SERIAL]["canonical"][seen], axis=1)
        )
    depth_err, canonical_err = np.concatenate(depth_err), np.concatenate(canonical_err)
    both = np.isfinite(depth_err)
    assert both.mean() > 0.8
    assert np.median(depth_err[both]) < 0.1e-3  # metres
    assert np.median(canonical_err[np.isfinite(canonical_err)]) < 0.2e-3


def test_mediapipe_sees_the_face(
    root: Path, world: SampleWorld, landmarker: FaceLandmarkerRunner
) -> None:
    subject = load_subject(root / "900")
    landmarks = pd.read_parquet(ground_truth_dir(root=root, subject="900") / "landmarks.parquet")
    near = [s for s, (yaw, _) in zip(SERIALS, RIG, strict=True) if abs(yaw) <= 45]
    found, errors = {}, []
    for sequence in CONFIG.sequences:
        for serial in near:
            images = read_frames(
                subject, sequence=sequence, serial=serial, frames=range(FRAMES), downsample=2
            ).images
            for t, image in images.items():
                signals = landmarker.detect(image=image)
                found[serial, sequence, t] = signals.detected
                if serial != FRONTAL_SERIAL or not signals.detected:
                    continue
                view = (landmarks.sequence == sequence) & (landmarks.frame == t)
                truth = landmarks[view & (landmarks.serial == serial) & landmarks.visible]
                detected = signals.landmarks[truth.mediapipe_index.to_numpy(), :2]
                errors.append(np.linalg.norm(detected - truth[["x", "y"]].to_numpy(), axis=1))
    frontal = [v for (serial, *_), v in found.items() if serial == FRONTAL_SERIAL]
    assert np.mean(frontal) >= 0.95
    assert np.mean(list(found.values())) >= 0.8
    assert np.median(np.concatenate(errors)) < 4.0  # px at 275 x 401; measured about 2


def test_ground_truth_tables(root: Path, world: SampleWorld) -> None:
    gt = ground_truth_dir(root=root, subject="900")
    params = pd.read_parquet(gt / "params.parquet")
    assert len(params) == 2 * FRAMES
    shapes = np.stack(params["shape"].to_numpy())
    assert np.abs(shapes).max() > 0.1 and np.ptp(shapes, axis=0).max() == 0.0
    assert np.stack(params["expr"].to_numpy()).std(axis=0).max() > 0.1
    landmarks = pd.read_parquet(gt / "landmarks.parquet")
    assert len(landmarks) == 2 * FRAMES * 16 * len(world.model.lmk_mediapipe_idx)
    assert landmarks[landmarks.serial == FRONTAL_SERIAL].visible.mean() > 0.85
    embedding = load_landmark_embedding(root / EMBEDDING_FILE)
    assert len(embedding["lmk_mediapipe_idx"]) > 400


def test_photo_keypoints_match_mediapipe(landmarker: FaceLandmarkerRunner) -> None:
    found = landmarker.detect(image=data.astronaut()).landmarks[:, :2]
    left_eye = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
    right_eye = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
    measured = {
        "eye_left": found[list(left_eye)].mean(0),
        "eye_right": found[list(right_eye)].mean(0),
        "mouth_center": found[[13, 14]].mean(0),
        **{k: found[i] for k, i in (("nose_tip", 1), ("chin", 152), ("forehead", 10))},
        **{k: found[i] for k, i in (("mouth_left", 291), ("mouth_right", 61))},
        **{k: found[i] for k, i in (("eye_left_inner", 362), ("eye_left_outer", 263))},
        **{k: found[i] for k, i in (("eye_right_inner", 133), ("eye_right_outer", 33))},
    }
    for name, xy in PHOTO_KEYPOINTS.items():
        np.testing.assert_allclose(measured[name], xy, atol=1.0, err_msg=name)


def test_subdivision_shares_edges() -> None:
    """The hair shell's subdivision cuts a closed mesh into n^2 times its triangles without
    cracks: the result is closed too, and every new point blends its triangle's corners."""
    sphere = trimesh.creation.icosphere(subdivisions=1)
    ids, weights, faces = subdivide(np.asarray(sphere.faces), 4)
    points = np.einsum("nk,nkc->nc", weights, sphere.vertices[ids])
    mesh = trimesh.Trimesh(points, faces, process=False)
    assert len(faces) == 16 * len(sphere.faces)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # facing out, like the triangles it cuts
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)


def test_hair_has_geometry_and_looks_like_hair(root: Path, world: SampleWorld) -> None:
    """The hair is a shell centimetres off the scalp (not paint): in the truth of the frontal
    view its points lie 0.5 to 3.5 cm from the head mesh; it is dark and has strands."""
    gt = ground_truth_dir(root=root, subject="900")
    maps = read_exr(ground_truth_map_path(gt, sequence="EXP-1-head", frame=0, serial=NEIGHBOUR))
    hair = maps["hair"] == 1
    assert 0.05 < hair.mean() < 0.3 and not (hair & (maps["mask"] == 1)).any()
    frame = next(world.posed_frames("EXP-1-head"))
    points = backproject_depth(maps["depth"].astype(np.float64), world.gt_cameras[NEIGHBOUR])
    head = trimesh.Trimesh(frame.vertices, world.model.f, process=False)
    inner = ndimage.binary_erosion(hair, iterations=3)
    _, distance, _ = trimesh.proximity.closest_point(head, points[inner][::20])
    assert 0.005 < np.median(distance) < 0.035 and distance.max() < 0.045
    image = render_view(world, frame, sequence="EXP-1-head", frame_index=0, serial=NEIGHBOUR)
    grey = image.mean(axis=2) / 255.0
    small = world.gt_cameras[NEIGHBOUR].width < image.shape[1]
    seen = np.repeat(np.repeat(inner, 2, 0), 2, 1) if small else inner
    assert np.median(grey[seen]) < 0.25  # dark: measured 0.13, skin 0.63
    detail = grey - ndimage.uniform_filter(grey, 5)  # sensor noise alone: 0.006
    assert 0.009 < detail[seen].std() < 0.05  # strands: measured 0.012


def test_rig_looks_at_the_head() -> None:
    target = np.array([0.0, -0.01, 0.0])
    cameras = build_rig(target=target, scale=4, distance=1.0, seed=3, principal_jitter=0.0)
    assert list(cameras) == list(SERIALS)
    assert len({c.K.tobytes() for c in cameras.values()}) == 1  # one K, as the v2 kit stores
    for camera in cameras.values():
        rotation = camera.world_2_cam[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        assert np.linalg.norm(camera.center - target) == pytest.approx(1.0, abs=0.031)
        ((u, v),), z = project(target[None], camera)
        assert z[0] > 0.9 and abs(u - 274.5) < 40 and abs(v - 400.5) < 40  # aim +-1 cm
    frontal = cameras[FRONTAL_SERIAL]
    np.testing.assert_allclose(frontal.world_2_cam[2, :3], [0, 0, -1], atol=0.02)  # looks at -z


def test_texture_is_seeded(sample_model) -> None:
    first = bake_texture(model=sample_model, size=128, seed=1)
    assert first.shape == (128, 128, 3) and first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, bake_texture(model=sample_model, size=128, seed=1))
    assert np.abs(first - bake_texture(model=sample_model, size=128, seed=2)).mean() > 1e-3


def test_bad_subject_id_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="subject id"):
        generate_sample_subject(config=dataclasses.replace(TINY, subject="../x"), root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_complete_subject_is_kept(root: Path) -> None:
    probe = root / "900" / "calibration" / "camera_params.json"
    before = probe.stat().st_mtime_ns
    result = generate_sample_subject(config=CONFIG, root=root)
    assert not result.generated and probe.stat().st_mtime_ns == before


def test_rerun_replaces_leftovers(root: Path, tmp_path: Path) -> None:
    shutil.copy(root / EMBEDDING_FILE, tmp_path / EMBEDDING_FILE)  # skip re-measuring it
    for leftover in (tmp_path / ".901.partial", tmp_path / "ground_truth" / ".901.partial"):
        leftover.mkdir(parents=True)
        (leftover / "junk").write_text("from a killed run")
    result = generate_sample_subject(config=TINY, root=tmp_path)
    assert result.generated
    assert not list(tmp_path.rglob("junk")) and not list(tmp_path.rglob(".*.partial"))
    assert {p.name for p in tmp_path.iterdir()} == {EMBEDDING_FILE, "901", "ground_truth"}
    assert len(load_subject(result.subject_dir).cameras) == 16


def test_generation_repeats_exactly(root: Path) -> None:
    """Two independent builds of a small subject render the same pixels and truth."""
    worlds = [build_world(config=TINY, root=root) for _ in range(2)]
    frames = [next(w.posed_frames("EXP-1-head")) for w in worlds]
    for serial in (FRONTAL_SERIAL, SERIALS[-1]):
        views = [
            render_view(w, f, sequence="EXP-1-head", frame_index=0, serial=serial)
            for w, f in zip(worlds, frames, strict=True)
        ]
        np.testing.assert_array_equal(*views)
        truths = [
            ground_truth_view(w, f, serial=serial) for w, f in zip(worlds, frames, strict=True)
        ]
        for name in truths[0]:
            np.testing.assert_array_equal(truths[0][name], truths[1][name])
