"""FLAME tracking against the sample subject's ground truth, through the real file formats.

Once per module: the sample world renders 2 frames of each of its two sequences from all 16
cameras at the working resolution (PNG + cameras.json, as the frames stage writes them); the
fused cloud is the truth depth of 8 views back-projected with noise and 2% stray points (PLY
with normals, as COLMAP's fusion writes it); `track_subject` runs on them with MediaPipe's
real detections. Two extra timesteps test the failure paths: one whose images are another
timestep's (its landmarks disagree with its points) and one with no face in any view.
The face region: the sample head written as a user's FLAME 2023 files (model pickle without a
face region, FLAME_masks.pkl in FLAME's Python 2 format, landmark embedding).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import trimesh
from test_loading import flame_fields, sample_masks, write_flame_masks, write_pickle

from flame_tracking.energies import geman_mcclure
from flame_tracking.fitting import select_points
from flame_tracking.initialisation import similarity_rotation, triangulate
from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.loading import load_flame_masks, save_landmark_embedding
from flame_tracking.model import FlameModel, FlameModelError
from flame_tracking.observations import (
    SubjectObservations,
    TimestepObservation,
    ViewObservation,
    pack_landmarks,
    voxel_downsample,
)
from flame_tracking.optimisation import build_problem
from flame_tracking.settings import PER_TIMESTEP, TrackerConfig
from flame_tracking.subset import restrict_model
from flame_tracking.tracker import (
    neutral_vertices,
    posed_vertices,
    track,
)
from tasks import tracking
from tasks.face_landmarker import FaceLandmarkerConfig, FaceLandmarkerRunner
from tasks.formats.cameras import FRONTAL_SERIAL, SERIALS, project
from tasks.frames import image_path
from tasks.fusion import read_fused_ply
from tasks.sample.landmark_embedding import EMBEDDING_FILE
from tasks.sample.scene import landmark_points
from tasks.sample.tracking_inputs import (
    FUSED_FILE,
    CloudConfig,
    empty_view,
    write_sample_inputs,
    write_timestep,
)
from tasks.sample.world import SampleSubjectConfig, SampleWorld, build_world

FRAMES = 2
"""Frames per sequence of the test sample."""
CORRUPT = ("EXP-1-head", 90)
"""A timestep with the images of another timestep and its own fused points."""
EMPTY = ("EXP-1-head", 91)
"""A timestep whose images show no face."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tracked:
    world: SampleWorld
    inputs: tuple[tracking.TimestepInput, ...]
    result: tracking.TrackSubjectResult
    seconds: dict[str, float]


def _failure_inputs(
    world: SampleWorld, root: Path, clean: tuple[tracking.TimestepInput, ...]
) -> tuple[tracking.TimestepInput, ...]:
    """The corrupted timestep (images of the last EMO frame, points of the first EXP frame)
    and the faceless one."""
    donor, own = clean[-1], clean[0]
    folder = root / CORRUPT[0] / f"frame_{CORRUPT[1]:05d}"
    shutil.copytree(donor.frames_dir, folder)
    shutil.copy2(own.fused_ply, folder / FUSED_FILE)
    corrupt = dataclasses.replace(
        donor,
        sequence=CORRUPT[0],
        frame=CORRUPT[1],
        frames_dir=folder,
        fused_ply=folder / FUSED_FILE,
    )
    points = read_fused_ply(own.fused_ply)
    empty = write_timestep(
        root / EMPTY[0] / f"frame_{EMPTY[1]:05d}",
        sequence=EMPTY[0],
        frame=EMPTY[1],
        images={s: empty_view(world, serial=s) for s in SERIALS},
        cameras=world.gt_cameras,
        cloud=(points.points, points.normals),
    )
    return corrupt, empty


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Tracked:
    root = tmp_path_factory.mktemp("tracking")
    start = time.monotonic()
    config = SampleSubjectConfig(subject="900", frames_per_sequence=FRAMES, texture_size=512)
    world = build_world(config=config, root=root)
    seconds = {"world": time.monotonic() - start}
    clean = write_sample_inputs(world, root / "frames", config=CloudConfig())
    inputs = clean + _failure_inputs(world, root / "frames", clean)
    seconds["inputs"] = time.monotonic() - start - seconds["world"]
    result = tracking.track_subject(
        subject="900",
        timesteps=inputs,
        flame_path=None,
        embedding_path=root / EMBEDDING_FILE,
        out_dir=root / "tracking",
        config=tracking.TrackingConfig(),
    )
    seconds["tracking"] = result.seconds
    return Tracked(world=world, inputs=inputs, result=result, seconds=seconds)


def _truth(world: SampleWorld, sequence: str, t: int) -> np.ndarray:
    """(V, 3) the truth mesh of a timestep (float64)."""
    params = {n: torch.tensor(v[t])[None] for n, v in world.params[sequence].items()}
    with torch.no_grad():
        return FlameLayer(world.model, torch.float64)(FlameParams(**params)).vertices[0].numpy()


def _clean_keys(tracked: Tracked) -> list[str]:
    special = {f"{s}/{t:05d}" for s, t in (CORRUPT, EMPTY)}
    return [k for k in tracked.result.tracking.params if k not in special]


def _face_distance(model, a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance (mm) of two meshes over the face region."""
    face = model.face_vertex_ids
    return float(np.linalg.norm(a[face] - b[face], axis=1).mean() * 1000)


def test_tracked_meshes_match_the_truth(tracked: Tracked) -> None:
    world, result = tracked.world, tracked.result.tracking
    keys = _clean_keys(tracked)
    assert len(keys) == 2 * FRAMES
    meshes = posed_vertices(world.model, result, tuple(keys))
    errors = []
    for key, vertices in zip(keys, meshes, strict=True):
        sequence, frame = key.rsplit("/", 1)
        errors.append(_face_distance(world.model, vertices, _truth(world, sequence, int(frame))))
    print(f"\nface-region vertex error per timestep (mm): {np.round(errors, 3)}")
    print(f"median {np.median(errors):.3f} mm; timings {tracked.seconds}")
    assert np.median(errors) <= 1.5


def test_recovered_shape_is_closer_than_the_template(tracked: Tracked) -> None:
    world, result = tracked.world, tracked.result.tracking
    truth_shape = world.params[world.config.sequences[0]]["shape"][0]
    truth = neutral_vertices(world.model, shape=truth_shape, static_offset=None)
    ours = neutral_vertices(world.model, shape=result.shape, static_offset=result.static_offset)
    tracked_mm = _face_distance(world.model, ours, truth)
    template_mm = _face_distance(world.model, world.model.v_template, truth)
    print(
        f"\nneutral face distance to the truth: tracked {tracked_mm:.3f} mm, "
        f"template {template_mm:.3f} mm"
    )
    assert tracked_mm < template_mm


def test_frontal_landmark_reprojection(tracked: Tracked) -> None:
    world, result = tracked.world, tracked.result.tracking
    model, camera = world.model, world.gt_cameras[FRONTAL_SERIAL]
    keys = _clean_keys(tracked)
    meshes = posed_vertices(model, result, tuple(keys))
    folders = {f"{i.sequence}/{i.frame:05d}": i.frames_dir for i in tracked.inputs}
    ours, truths = [], []
    with FaceLandmarkerRunner(config=FaceLandmarkerConfig()) as runner:
        for key, vertices in zip(keys, meshes, strict=True):
            bgr = cv2.imread(str(image_path(folders[key], FRONTAL_SERIAL)))
            detected = runner.detect(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            assert detected.detected
            seen = detected.landmarks[model.lmk_mediapipe_idx, :2]
            sequence, frame = key.rsplit("/", 1)
            for mesh, out in ((vertices, ours), (_truth(world, sequence, int(frame)), truths)):
                xy, _ = project(landmark_points(model=model, vertices=mesh), camera)
                out.append(np.median(np.linalg.norm(xy - seen, axis=1)))
    print(
        f"\nfrontal landmark error to MediaPipe, median px: tracked {np.round(ours, 2)}, "
        f"truth mesh {np.round(truths, 2)} (the floor MediaPipe and the embedding leave)"
    )
    assert np.median(ours) <= np.median(truths) + 0.5
    assert np.median(ours) <= 4.0


def test_corrupted_timestep_is_an_outlier_and_clean_ones_are_kept(tracked: Tracked) -> None:
    reports = {(r.sequence, r.frame): r for r in tracked.result.tracking.reports}
    corrupt = reports[CORRUPT]
    print(f"\n{corrupt}")
    assert not corrupt.kept
    assert "residual" in corrupt.reason and "threshold" in corrupt.reason
    clean = [r for k, r in reports.items() if k not in (CORRUPT, EMPTY)]
    assert all(r.kept and r.reason == "" for r in clean), clean


def test_timestep_without_a_face_is_dropped_with_its_reason(tracked: Tracked) -> None:
    reports = {(r.sequence, r.frame): r for r in tracked.result.tracking.reports}
    empty = reports[EMPTY]
    assert not empty.kept
    assert empty.reason == "no face landmarks in any view"
    assert empty.num_views == 0 and np.isnan(empty.landmark_px)


def test_outputs_round_trip(tracked: Tracked) -> None:
    out, result = tracked.result.out_dir, tracked.result.tracking
    model = tracked.world.model
    read = tracking.read_tracked_params(out)
    np.testing.assert_array_equal(read.shape, result.shape)
    np.testing.assert_array_equal(read.static_offset, result.static_offset)
    assert list(read.params.columns) == ["sequence", "frame", *PER_TIMESTEP]
    assert len(read.params) == len(result.params) == tracked.result.kept
    residuals = pd.read_parquet(out / tracking.RESIDUALS_FILE)
    assert len(residuals) == len(tracked.inputs) == tracked.result.kept + tracked.result.dropped
    assert set(residuals[~residuals.kept].reason) == {
        r.reason for r in result.reports if not r.kept
    }
    keys = tuple(result.params)
    for key, vertices in zip(keys, posed_vertices(model, result, keys), strict=True):
        sequence, frame = key.rsplit("/", 1)
        mesh = trimesh.load(
            tracking.mesh_path(out, sequence=sequence, frame=int(frame)), process=False
        )
        np.testing.assert_allclose(mesh.vertices, vertices, atol=1e-6)
        np.testing.assert_array_equal(mesh.faces, model.f)
    canonical = trimesh.load(out / tracking.CANONICAL_FILE, process=False)
    np.testing.assert_allclose(canonical.vertices, model.v_template, atol=1e-6)
    assert (out / tracking.OVERLAY_FILE).stat().st_size > 10_000
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())


def test_tracking_is_deterministic(tracked: Tracked) -> None:
    config = tracking.TrackingConfig()
    observations = tracking.gather_observations(
        subject="900", timesteps=tracked.inputs[:2], config=config
    )
    short = tuple(dataclasses.replace(s, steps=8) for s in TrackerConfig().stages)
    fast = TrackerConfig(stages=short, refine_steps=4, correspondence_every=3)
    runs = [track(model=tracked.world.model, observations=observations, config=fast) for _ in "ab"]
    np.testing.assert_array_equal(runs[0].shape, runs[1].shape)
    np.testing.assert_array_equal(runs[0].static_offset, runs[1].static_offset)
    assert runs[0].params.keys() == runs[1].params.keys()
    for key in runs[0].params:
        for name in PER_TIMESTEP:
            a, b = getattr(runs[0].params[key], name), getattr(runs[1].params[key], name)
            np.testing.assert_array_equal(a, b)
    assert runs[0].reports == runs[1].reports


def test_a_wrong_flame_path_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_work(**kwargs: object) -> None:
        raise AssertionError("observations were gathered before the model loaded")

    monkeypatch.setattr(tracking, "gather_observations", no_work)
    with pytest.raises(FileNotFoundError, match="FLAME model file not found"):
        tracking.track_subject(
            subject="900",
            timesteps=(),
            flame_path=tmp_path / "generic_model.pkl",
            embedding_path=tmp_path / "embedding.npz",
            out_dir=tmp_path / "out",
            config=tracking.TrackingConfig(),
        )


def test_a_model_without_landmark_embedding_is_refused(sample_model) -> None:
    observations = SubjectObservations(subject="900", timesteps=())
    with pytest.raises(ValueError, match="no MediaPipe landmark embedding"):
        track(model=sample_model, observations=observations, config=TrackerConfig())


def test_nothing_usable_keeps_only_the_reasons(tracked: Tracked) -> None:
    empty = np.zeros((0, 3))
    faceless = TimestepObservation(sequence="A", frame=0, views=(), points=empty, normals=empty)
    observations = SubjectObservations(subject="900", timesteps=(faceless,))
    result = track(model=tracked.world.model, observations=observations, config=TrackerConfig())
    assert result.params == {} and result.stage_log == ()
    assert [r.reason for r in result.reports] == ["no face landmarks in any view"]
    assert not result.shape.any() and not result.static_offset.any()


# ------------------------------------------------------- the face region from FLAME's masks


def _random_embedding(model: FlameModel) -> dict[str, np.ndarray]:
    """A landmark embedding of 105 random triangles (the point term does not read it)."""
    rng = np.random.default_rng(0)
    b = rng.random((105, 3))
    return {
        "lmk_face_idx": rng.integers(0, len(model.f), 105),
        "lmk_b_coords": b / b.sum(1, keepdims=True),
        "lmk_mediapipe_idx": rng.choice(478, 105, replace=False),
    }


@pytest.fixture(scope="module")
def flame_files(tmp_path_factory: pytest.TempPathFactory, sample_model: FlameModel) -> dict:
    """The sample head as a user's FLAME 2023 files: model (no face region of its own),
    FLAME_masks.pkl (Python 2 protocol 2, as FLAME ships it) and landmark embedding."""
    root = tmp_path_factory.mktemp("flame")
    masks = sample_masks(sample_model)
    masks["face"] = masks["face"][sample_model.v_template[masks["face"], 1] < 0.0]  # lower face
    embedding = root / "mediapipe_landmark_embedding.npz"
    save_landmark_embedding(embedding, **_random_embedding(sample_model))
    return {
        "flame_path": write_pickle(flame_fields(sample_model), root / "flame2023.pkl", protocol=2),
        "masks_path": write_flame_masks(masks, root / "FLAME_masks.pkl"),
        "embedding_path": embedding,
        "masks": masks,
    }


def _one_timestep(points: np.ndarray) -> tuple[TimestepObservation, ...]:
    """A timestep with `points` (normals +z) and one view of placeholder landmarks."""
    view = ViewObservation(
        serial="1",
        K=np.eye(3),
        world_2_cam=np.eye(4),
        landmarks=np.zeros((478, 2)),
        valid=np.ones(478, dtype=bool),
    )
    normals = np.tile([0.0, 0.0, 1.0], (len(points), 1))
    return (
        TimestepObservation(sequence="A", frame=0, views=(view,), points=points, normals=normals),
    )


def _fitted_points(
    model: FlameModel, points: np.ndarray, *, config: TrackerConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The problem's fitted region (vertex ids) and the rows of `points` its point term
    selects on the template (zero parameters)."""
    problem = build_problem(
        model=model, timesteps=_one_timestep(points), config=config, dtype=torch.float64
    )
    sizes = {"expr": model.num_expr, "rotation": 3, "translation": 3, "neck_pose": 3}
    sizes |= {"jaw_pose": 3, "eyes_pose": 6}
    variables = {name: torch.zeros(1, n, dtype=torch.float64) for name, n in sizes.items()}
    variables["shape"] = torch.zeros(model.num_shape, dtype=torch.float64)
    variables["static_offset"] = torch.zeros(len(problem.offset_ids), 3, dtype=torch.float64)
    chosen = select_points(problem, variables, config=config)
    picked = chosen.points[0][chosen.valid[0]]
    rows = [int(np.flatnonzero((points == p).all(1))[0]) for p in picked]
    return np.flatnonzero(problem.region), np.array(sorted(rows), dtype=np.int64)


def test_the_point_term_fits_exactly_the_masks_face_region(flame_files: dict) -> None:
    """Points on every head vertex: the FLAME model with its masks fits only those on the
    masks' face (not on the scalp, nor on the sample's wider built-in face)."""
    model = tracking.load_tracking_model(**{k: flame_files[k] for k in flame_files if k != "masks"})
    masks = flame_files["masks"]
    np.testing.assert_array_equal(model.face_vertex_ids, masks["face"])
    points = model.v_template  # one point exactly on each vertex
    config = TrackerConfig(max_points=model.num_vertices)
    region, fitted = _fitted_points(model, points, config=config)
    np.testing.assert_array_equal(region, masks["face"])
    np.testing.assert_array_equal(fitted, masks["face"])
    assert not np.isin(masks["scalp"], fitted).any()
    _, whole_head = _fitted_points(
        model, points, config=TrackerConfig(point_region="head", max_points=model.num_vertices)
    )
    assert np.isin(masks["scalp"], whole_head).all()  # the same points do fit the whole head


class ReachedObservations(Exception):
    """Raised in place of MediaPipe: the model passed its checks."""


def test_a_flame_file_without_masks_fails_before_any_work(
    flame_files: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_work(**kwargs: object) -> None:
        raise ReachedObservations

    monkeypatch.setattr(tracking, "gather_observations", no_work)

    def track_subject(**masks: Path) -> None:
        tracking.track_subject(
            subject="900",
            timesteps=(),
            flame_path=flame_files["flame_path"],
            embedding_path=flame_files["embedding_path"],
            out_dir=tmp_path / "out",
            config=tracking.TrackingConfig(),
            **masks,
        )

    with pytest.raises(FlameModelError) as err:
        track_subject()
    message = str(err.value)
    assert "[faceanything] flame_masks" in message and str(flame_files["flame_path"]) in message
    with pytest.raises(ReachedObservations):
        track_subject(masks_path=flame_files["masks_path"])
    assert not (tmp_path / "out").exists()


def test_asking_for_the_face_without_a_face_region_raises(sample_model: FlameModel) -> None:
    """No silent widening to the whole head: 'face' on a model without one is an error."""
    model = dataclasses.replace(sample_model, face_vertex_ids=None)
    model = model.with_landmarks(**_random_embedding(model))
    observations = SubjectObservations(subject="900", timesteps=())
    with pytest.raises(FlameModelError, match=r"has none: set `\[faceanything\] flame_masks`"):
        track(model=model, observations=observations, config=TrackerConfig())
    with pytest.raises(FlameModelError, match="flame_masks"):
        build_problem(
            model=model,
            timesteps=_one_timestep(model.v_template[:3]),
            config=TrackerConfig(),
            dtype=torch.float64,
        )
    head = track(model=model, observations=observations, config=TrackerConfig(point_region="head"))
    assert head.params == {}


def test_masks_without_a_flame_model_are_refused(flame_files: dict) -> None:
    """FLAME's indices on the sample head would be a region of arbitrary vertices."""
    with pytest.raises(ValueError, match="flame_model"):
        tracking.load_tracking_model(
            flame_path=None,
            embedding_path=flame_files["embedding_path"],
            masks_path=flame_files["masks_path"],
        )
    assert len(load_flame_masks(flame_files["masks_path"])) == 14


@pytest.mark.slow
def test_tracking_ten_timesteps_on_the_whole_head(tmp_path: Path) -> None:
    """More timesteps, points on the whole head: tighter accuracy than the fast test."""
    config = SampleSubjectConfig(subject="900", frames_per_sequence=5, texture_size=512)
    world = build_world(config=config, root=tmp_path)
    inputs = write_sample_inputs(world, tmp_path / "frames", config=CloudConfig(), seed=3)
    observations = tracking.gather_observations(
        subject="900", timesteps=inputs, config=tracking.TrackingConfig()
    )
    result = track(
        model=world.model, observations=observations, config=TrackerConfig(point_region="head")
    )
    assert all(r.kept for r in result.reports), result.reports
    keys = tuple(result.params)
    errors = []
    for key, vertices in zip(keys, posed_vertices(world.model, result, keys), strict=True):
        sequence, frame = key.rsplit("/", 1)
        errors.append(_face_distance(world.model, vertices, _truth(world, sequence, int(frame))))
    truth_shape = world.params[config.sequences[0]]["shape"][0]
    truth = neutral_vertices(world.model, shape=truth_shape, static_offset=None)
    ours = neutral_vertices(world.model, shape=result.shape, static_offset=result.static_offset)
    shape_mm = _face_distance(world.model, ours, truth)
    print(f"\nface-region error (mm) {np.round(errors, 3)}; neutral shape {shape_mm:.3f} mm")
    assert np.median(errors) <= 1.0 and max(errors) <= 1.5
    assert shape_mm <= 1.0


# ---------------------------------------------------------------- the pieces, on synthetic data


def test_vertex_subset_reproduces_the_full_model(sample_model) -> None:
    rng = np.random.default_rng(0)
    ids = np.unique(sample_model.f[rng.integers(0, len(sample_model.f), 300)])
    subset = restrict_model(sample_model, ids)
    params = {
        "shape": torch.tensor(rng.normal(size=sample_model.num_shape)),
        "expr": torch.tensor(rng.normal(size=(2, sample_model.num_expr))),
        "rotation": torch.tensor(rng.normal(scale=0.3, size=(2, 3))),
        "jaw_pose": torch.tensor(rng.normal(scale=0.2, size=(2, 3))),
        "neck_pose": torch.tensor(rng.normal(scale=0.2, size=(2, 3))),
        "eyes_pose": torch.tensor(rng.normal(scale=0.2, size=(2, 6))),
    }
    offsets = rng.normal(scale=1e-3, size=(sample_model.num_vertices, 3))
    full = FlameLayer(sample_model, torch.float64)(
        FlameParams(**params, static_offset=torch.tensor(offsets))
    ).vertices[:, ids]
    carriers = sample_model.J_regressor @ offsets
    small = FlameLayer(subset.model, torch.float64)(
        FlameParams(**params, static_offset=torch.tensor(np.concatenate([offsets[ids], carriers])))
    ).vertices[:, : len(ids)]
    np.testing.assert_allclose(small.numpy(), full.detach().numpy(), atol=1e-12)
    np.testing.assert_array_equal(subset.local(ids[::7]), np.arange(len(ids))[::7])


def test_triangulation_and_alignment_recover_a_rigid_motion() -> None:
    rng = np.random.default_rng(1)
    template = rng.normal(scale=0.05, size=(40, 3))
    angle = 0.4
    rotation = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    )
    world = template @ rotation.T + [0.01, 0.02, -0.03]
    projections = []
    for yaw in (-0.5, 0.0, 0.5):
        c, s = np.cos(yaw), np.sin(yaw)
        r = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
        K = np.array([[1000.0, 0, 300], [0, 1000.0, 400], [0, 0, 1]])
        projections.append(K @ np.concatenate([r, [[0], [0], [1.0]]], axis=1))
    projections = np.array(projections)
    homogeneous = np.concatenate([world, np.ones((40, 1))], axis=1)
    pixels = np.einsum("crk,lk->clr", projections, homogeneous)
    pixels = pixels[..., :2] / pixels[..., 2:]
    pixels[2, 5] += 80.0  # one wrong detection in one view
    valid = np.ones((3, 40), dtype=bool)
    valid[0, 7] = valid[1, 7] = False  # seen in one view only: not triangulated
    points = triangulate(projections, pixels, valid, max_error_px=10.0)
    assert np.isnan(points[7]).all()
    ok = np.isfinite(points).all(1)
    np.testing.assert_allclose(points[ok], world[ok], atol=1e-9)
    np.testing.assert_allclose(similarity_rotation(template[ok], points[ok]), rotation, atol=1e-9)


def test_geman_mcclure_is_quadratic_near_zero_and_bounded() -> None:
    r2 = torch.tensor([1e-4, 1.0, 1e6])
    cost = geman_mcclure(r2, scale=3.0)
    assert abs(cost[0] - 1e-4) < 1e-8
    assert cost[2] < 9.0 and cost[2] > 8.99


def test_voxel_downsample_averages_each_cell() -> None:
    points = np.array([[0.0001, 0, 0], [0.0009, 0, 0], [0.0031, 0, 0]])
    normals = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    p, n = voxel_downsample(points, normals, voxel_size=0.002)
    np.testing.assert_allclose(p, [[0.0005, 0, 0], [0.0031, 0, 0]])
    np.testing.assert_allclose(n[0], [np.sqrt(0.5), np.sqrt(0.5), 0])


def test_pack_landmarks_pads_views_with_invalid_entries() -> None:
    def view(serial: str) -> ViewObservation:
        return ViewObservation(
            serial=serial,
            K=np.eye(3),
            world_2_cam=np.eye(4),
            landmarks=np.arange(478 * 2, dtype=float).reshape(478, 2),
            valid=np.ones(478, dtype=bool),
        )

    empty = np.zeros((0, 3))
    steps = (
        TimestepObservation(
            sequence="A", frame=0, views=(view("1"), view("2")), points=empty, normals=empty
        ),
        TimestepObservation(sequence="A", frame=1, views=(view("1"),), points=empty, normals=empty),
    )
    batch = pack_landmarks(steps, mediapipe_idx=np.array([3, 1]))
    assert batch.pixels.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(batch.pixels[0, 0, 0], [6, 7])
    assert batch.valid[0].all() and batch.valid[1, 0].all() and not batch.valid[1, 1].any()
