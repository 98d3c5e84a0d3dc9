"""Stage 6, FLAME tracking of one subject (paper 3.3): observations from disk, outputs to disk.

Inputs per timestep: the frames folder (`images/cam_{serial}.png` and `cameras.json` at the
working resolution, see `tasks.frames`) and the fused cloud (COLMAP's PLY with normals, see
`tasks.fusion`). MediaPipe runs on every view; views without a face are left out.

Output folder (written to a temporary sibling, then renamed into place):

    params.parquet      one row per kept timestep: sequence, frame, expr, rotation,
                        translation, neck_pose, jaw_pose, eyes_pose (lists of float64)
    identity.parquet    one row: shape (S), static_offset (V * 3, row-major (V, 3)), metres
    residuals.parquet   one row per input timestep: sequence, frame, kept, reason,
                        landmark_px, point_mm, num_views, num_points
    meshes/{sequence}/frame_{frame:05d}.ply   tracked FLAME mesh, world metres
    canonical.ply       FLAME at zero expression and pose (`canonical_shape`)
    overlay.png         tracked meshes drawn over a few views of a few kept timesteps
    timings.json        wall seconds of the two steps: observations (MediaPipe, clouds), fit
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from flame_tracking.loading import load_flame, load_flame_masks, load_landmark_embedding
from flame_tracking.model import FlameModel
from flame_tracking.observations import (
    SubjectObservations,
    TimestepObservation,
    ViewObservation,
    voxel_downsample,
)
from flame_tracking.sample_model import build_sample_model
from flame_tracking.settings import PER_TIMESTEP, TrackerConfig
from flame_tracking.tracker import (
    TimestepReport,
    TrackingResult,
    check_trackable,
    neutral_vertices,
    posed_vertices,
    track,
)
from tasks.face_landmarker import FaceLandmarkerConfig, FaceLandmarkerRunner
from tasks.formats.atomic import atomic_dir
from tasks.formats.cameras import FRONTAL_SERIAL, Camera, project
from tasks.formats.ply import write_ply
from tasks.frames import CAMERAS_FILE, image_path, read_cameras_json
from tasks.fusion import read_fused_ply
from tasks.pictures.render import overlay_mesh
from tasks.pictures.stages import save_figure
from tasks.progress import Progress, silent

PARAMS_FILE = "params.parquet"
IDENTITY_FILE = "identity.parquet"
RESIDUALS_FILE = "residuals.parquet"
CANONICAL_FILE = "canonical.ply"
OVERLAY_FILE = "overlay.png"
TIMINGS_FILE = "timings.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """How a subject is tracked and what is written; every field can change the outputs."""

    tracker: TrackerConfig = TrackerConfig()
    """The optimisation (stages, weights, outlier thresholds)."""
    landmarker: FaceLandmarkerConfig = FaceLandmarkerConfig()
    """MediaPipe Face Landmarker settings (image mode: views are independent)."""
    voxel_size: float = 0.002
    """Fused points are averaged per voxel of this size (metres) before tracking."""
    canonical_shape: Literal["template", "tracked"] = "template"
    """Canonical mesh identity: the template's, or the subject's shape and static offsets."""
    overlay_serials: tuple[str, ...] = ("222200036", FRONTAL_SERIAL, "222200043")
    """Cameras of the overlay picture's columns (yaw -30, frontal, +30 in NeRSemble)."""
    overlay_timesteps: int = 4
    """Kept timesteps in the overlay picture's rows (evenly spread)."""
    overlay_style: Literal["shaded", "wireframe"] = "shaded"
    """How the tracked mesh is drawn over the images."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TimestepInput:
    """Where one timestep's inputs are."""

    sequence: str
    """Sequence name."""
    frame: int
    """Frame index."""
    frames_dir: Path
    """Folder with `images/cam_{serial}.png` and `cameras.json` (working resolution)."""
    fused_ply: Path | None
    """The fused cloud (PLY with normals), or None when the timestep has none."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackSubjectResult:
    """What `track_subject` did."""

    out_dir: Path
    """The output folder."""
    tracking: TrackingResult
    """Identity, per-timestep parameters and reports."""
    kept: int
    """Timesteps kept."""
    dropped: int
    """Timesteps dropped (each with its reason in residuals.parquet)."""
    seconds: float
    """Wall time of the call."""


def load_tracking_model(
    *, flame_path: Path | None, embedding_path: Path, masks_path: Path | None = None
) -> FlameModel:
    """The FLAME model with its MediaPipe landmark embedding and, from `masks_path` (FLAME's
    `FLAME_masks.pkl`), its face region; `flame_path` None means the embedded sample head
    model, which has its own face region (masks without a FLAME file are refused: FLAME's
    indices would land on arbitrary sample vertices). Raises (FileNotFoundError,
    FlameModelError, ValueError) on a wrong path or file, so a subject fails before any image
    is read."""
    if flame_path is None and masks_path is not None:
        raise ValueError(
            f"FLAME masks {masks_path} are set without a FLAME model: set "
            "`[faceanything] flame_model` too (the sample head model has its own face region)"
        )
    model = build_sample_model() if flame_path is None else load_flame(flame_path)
    if masks_path is not None:
        face = load_flame_masks(masks_path, model=model)["face"]
        model = model.with_face_region(face_vertex_ids=face)
    return model.with_landmarks(**load_landmark_embedding(embedding_path))


def _view(serial: str, camera: Camera, landmarks: np.ndarray) -> ViewObservation:
    """A view's observation from MediaPipe's (478, 2) pixels (usable: inside the image)."""
    x, y = landmarks[:, 0], landmarks[:, 1]
    with np.errstate(invalid="ignore"):
        inside = (x > -0.5) & (x < camera.width - 0.5) & (y > -0.5) & (y < camera.height - 0.5)
    return ViewObservation(
        serial=serial,
        K=camera.K,
        world_2_cam=camera.world_2_cam,
        landmarks=landmarks.astype(np.float64),
        valid=inside & np.isfinite(landmarks).all(1),
    )


def _observe(
    item: TimestepInput, *, runner: FaceLandmarkerRunner, voxel_size: float
) -> TimestepObservation:
    """Landmarks of every view of one timestep that shows a face, and its fused points."""
    cameras = read_cameras_json(item.frames_dir / CAMERAS_FILE)
    views = []
    for serial, camera in cameras.items():
        path = image_path(item.frames_dir, serial)
        if not path.is_file():  # the frames stage writes only usable views
            continue
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"cannot read image {path}")
        signals = runner.detect(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if signals.detected:
            views.append(_view(serial, camera, signals.landmarks[:, :2]))
    points = normals = np.zeros((0, 3))
    if item.fused_ply is not None:
        cloud = read_fused_ply(item.fused_ply)
        points, normals = voxel_downsample(cloud.points, cloud.normals, voxel_size=voxel_size)
    return TimestepObservation(
        sequence=item.sequence, frame=item.frame, views=tuple(views), points=points, normals=normals
    )


def gather_observations(
    *,
    subject: str,
    timesteps: Sequence[TimestepInput],
    config: TrackingConfig,
    progress: Progress | None = None,
) -> SubjectObservations:
    """MediaPipe landmarks of every view and the voxel-averaged fused points, per timestep."""
    report = progress or silent
    observed = []
    with FaceLandmarkerRunner(config=config.landmarker) as runner:
        for k, item in enumerate(timesteps):
            observed.append(_observe(item, runner=runner, voxel_size=config.voxel_size))
            report((k + 1) / len(timesteps), f"landmarks of {item.sequence}/{item.frame:05d}")
    return SubjectObservations(subject=subject, timesteps=tuple(observed))


def mesh_path(out_dir: Path, *, sequence: str, frame: int) -> Path:
    """The tracked mesh of one timestep inside a tracking output folder."""
    return Path(out_dir) / "meshes" / sequence / f"frame_{frame:05d}.ply"


def _write_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    xyz = np.asarray(vertices, dtype=np.float32)  # single precision, as meshes are stored
    write_ply(path, {name: xyz[:, axis] for axis, name in enumerate("xyz")}, faces=faces)


def _tables(result: TrackingResult) -> dict[str, pd.DataFrame]:
    """The three Parquet tables of a tracking result."""
    rows = []
    for key, params in result.params.items():
        sequence, frame = key.rsplit("/", 1)
        values = {name: getattr(params, name).tolist() for name in PER_TIMESTEP}
        rows.append({"sequence": sequence, "frame": int(frame), **values})
    columns = ["sequence", "frame", *PER_TIMESTEP]
    identity = {
        "shape": [result.shape.tolist()],
        "static_offset": [result.static_offset.ravel().tolist()],
        "num_vertices": [len(result.static_offset)],
    }
    return {
        PARAMS_FILE: pd.DataFrame(rows, columns=columns),
        IDENTITY_FILE: pd.DataFrame(identity),
        RESIDUALS_FILE: pd.DataFrame(
            [dataclasses.asdict(r) for r in result.reports],
            columns=[f.name for f in dataclasses.fields(TimestepReport)],
        ),
    }


def write_tracking_outputs(
    *,
    out_dir: Path,
    model: FlameModel,
    result: TrackingResult,
    inputs: Sequence[TimestepInput],
    config: TrackingConfig,
    timings: Mapping[str, float],
) -> Path:
    """Write every output of the module docstring into a temporary sibling of `out_dir`,
    then rename it into place (an older `out_dir` is replaced)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        _fill_output(tmp, model=model, result=result, inputs=inputs, config=config, timings=timings)
    return out_dir


def _fill_output(
    tmp: Path,
    *,
    model: FlameModel,
    result: TrackingResult,
    inputs: Sequence[TimestepInput],
    config: TrackingConfig,
    timings: Mapping[str, float],
) -> None:
    for name, table in _tables(result).items():
        table.to_parquet(tmp / name, compression="zstd", index=False)
    (tmp / TIMINGS_FILE).write_text(json.dumps(dict(timings), indent=1))
    keys = tuple(result.params)
    for key, vertices in zip(keys, posed_vertices(model, result, keys), strict=True):
        sequence, frame = key.rsplit("/", 1)
        _write_mesh(mesh_path(tmp, sequence=sequence, frame=int(frame)), vertices, model.f)
    tracked = config.canonical_shape == "tracked"
    canonical = neutral_vertices(
        model,
        shape=result.shape if tracked else None,
        static_offset=result.static_offset if tracked else None,
    )
    _write_mesh(tmp / CANONICAL_FILE, canonical, model.f)
    if keys:
        tracking_picture(
            path=tmp / OVERLAY_FILE,
            model=model,
            result=result,
            frames_dirs={f"{i.sequence}/{i.frame:05d}": i.frames_dir for i in inputs},
            serials=config.overlay_serials,
            rows=config.overlay_timesteps,
            style=config.overlay_style,
        )


def _spread(items: Sequence[str], count: int) -> list[str]:
    """Up to `count` of `items`, evenly spread, first and last included."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def _panel(
    image: np.ndarray, *, vertices: np.ndarray, model: FlameModel, camera: Camera, style: str
) -> np.ndarray:
    """The view and the mesh drawn over it, side by side, cropped to the projected face."""
    drawn = overlay_mesh(image=image, vertices=vertices, faces=model.f, camera=camera, style=style)
    face = vertices if model.face_vertex_ids is None else vertices[model.face_vertex_ids]
    xy, _ = project(face, camera)
    lo, hi = xy.min(0), xy.max(0)
    margin = 0.2 * (hi - lo)
    x0, y0 = np.clip(np.floor(lo - margin).astype(int), 0, None)
    x1, y1 = np.minimum(np.ceil(hi + margin).astype(int), [camera.width, camera.height])
    return np.concatenate([image[y0:y1, x0:x1], drawn[y0:y1, x0:x1]], axis=1)


def tracking_picture(
    *,
    path: Path,
    model: FlameModel,
    result: TrackingResult,
    frames_dirs: dict[str, Path],
    serials: tuple[str, ...],
    rows: int,
    style: Literal["shaded", "wireframe"],
) -> Path:
    """PNG of tracked meshes over the images: a row per kept timestep (up to `rows`,
    evenly spread), a column per camera in `serials` holding the view and the mesh over it
    (missing views are left blank)."""
    keys = _spread(list(result.params), rows)
    reports = {r.key: r for r in result.reports}
    vertices = posed_vertices(model, result, tuple(keys))
    fig = Figure(figsize=(3.6 * len(serials), 2.6 * len(keys)))
    axes = fig.subplots(len(keys), len(serials), squeeze=False)
    for row, (key, verts) in enumerate(zip(keys, vertices, strict=True)):
        cameras = read_cameras_json(frames_dirs[key] / CAMERAS_FILE)
        report = reports[key]
        for col, serial in enumerate(serials):
            ax = axes[row, col]
            ax.set_axis_off()
            image_file = image_path(frames_dirs[key], serial)
            if serial not in cameras or not image_file.is_file():
                continue
            image = cv2.cvtColor(cv2.imread(str(image_file), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            camera = cameras[serial]
            ax.imshow(_panel(image, vertices=verts, model=model, camera=camera, style=style))
            ax.set_title(
                f"{key} cam {serial}\nlandmarks {report.landmark_px:.1f} px, "
                f"points {report.point_mm:.2f} mm",
                fontsize=7,
            )
    fig.tight_layout()
    return save_figure(fig, path)


def track_subject(
    *,
    subject: str,
    timesteps: Sequence[TimestepInput],
    flame_path: Path | None,
    embedding_path: Path,
    out_dir: Path,
    config: TrackingConfig,
    masks_path: Path | None = None,
    progress: Progress | None = None,
) -> TrackSubjectResult:
    """Track one subject from its timesteps' frames and fused clouds into `out_dir`.

    The FLAME model (with `masks_path`'s face region, see `load_tracking_model`) is loaded and
    checked against the tracker's settings first, so a wrong path, or a FLAME file without
    masks while points fit the face, fails before any work. Timesteps without a face, and
    tracking outliers, are dropped with their reasons (residuals.parquet); when none is usable
    the outputs hold only those reasons."""
    start = time.monotonic()
    report = progress or silent
    model = load_tracking_model(
        flame_path=flame_path, embedding_path=embedding_path, masks_path=masks_path
    )
    check_trackable(model=model, config=config.tracker)
    observations = gather_observations(
        subject=subject,
        timesteps=timesteps,
        config=config,
        progress=lambda f, m: report(0.3 * f, m),
    )
    observed = time.monotonic()
    result = track(
        model=model,
        observations=observations,
        config=config.tracker,
        progress=lambda f, m: report(0.3 + 0.6 * f, m),
    )
    report(0.9, "writing meshes, tables and the overlay picture")
    write_tracking_outputs(
        out_dir=out_dir,
        model=model,
        result=result,
        inputs=timesteps,
        config=config,
        timings={"observations": observed - start, "fit": time.monotonic() - observed},
    )
    kept = sum(r.kept for r in result.reports)
    report(1.0, f"tracked {kept} of {len(result.reports)} timesteps")
    return TrackSubjectResult(
        out_dir=Path(out_dir),
        tracking=result,
        kept=kept,
        dropped=len(result.reports) - kept,
        seconds=time.monotonic() - start,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackedParams:
    """A tracking output folder's parameters, read back."""

    shape: np.ndarray
    """(S,) identity coefficients."""
    static_offset: np.ndarray
    """(V, 3) static offsets, metres."""
    params: pd.DataFrame
    """One row per kept timestep (see the module docstring)."""


def read_tracked_params(out_dir: Path) -> TrackedParams:
    """The identity and per-timestep parameters `write_tracking_outputs` wrote."""
    identity = pd.read_parquet(Path(out_dir) / IDENTITY_FILE).iloc[0]
    offsets = np.asarray(identity["static_offset"], dtype=np.float64)
    return TrackedParams(
        shape=np.asarray(identity["shape"], dtype=np.float64),
        static_offset=offsets.reshape(int(identity["num_vertices"]), 3),
        params=pd.read_parquet(Path(out_dir) / PARAMS_FILE),
    )
