"""Structure from motion for one timestep with pycolmap (paper 3.3): keep it only if all 16 views
register in one model, then put that model in the calibrated world (metres).

Input: a frames folder from `tasks.frames.extract_frames`. Output folder (written to a
temporary sibling, then renamed into place):

    database.db     COLMAP database: features, matches, the cameras with calibrated intrinsics
    sparse/         the model in COLMAP's binary format, in world coordinates (only when kept)
    sfm.json        summary (`read_sfm_summary`): status, reason, residuals, counts, timings

Two modes. "mapping" runs COLMAP's incremental mapper with the calibrated intrinsics held
fixed, refines the model under a robust loss, then aligns it to the calibration by a
similarity transform (camera centres and viewing directions); the per-camera centre residuals
measure how well the images agree with the calibration. "calibrated" skips the mapper and
triangulates the matches with the calibrated poses (a view counts as registered when it sees
enough of the points).

Intrinsics and the alignment live in `tasks.formats.colmap_cameras` (COLMAP's pixel convention, and
why zlib is imported before pycolmap).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import zlib  # noqa: F401  zlib must load before pycolmap (tasks.formats.colmap_cameras)
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pycolmap

from tasks.formats.atomic import atomic_dir
from tasks.formats.cameras import SERIALS, Camera
from tasks.formats.colmap_cameras import (
    CameraModel,
    align_to_cameras,
    camera_residuals_mm,
    colmap_camera,
    serial_of,
)
from tasks.frames import (
    CAMERAS_FILE,
    IMAGES_DIR,
    image_name,
    read_cameras_json,
    read_frames_summary,
)
from tasks.progress import Progress, silent

Status = Literal["ok", "dropped"]
SfmMode = Literal["mapping", "calibrated"]

DATABASE_FILE = "database.db"
SPARSE_DIR = "sparse"
SUMMARY_FILE = "sfm.json"


class SfmError(RuntimeError):
    """An unexpected failure of the SfM stage; the message names the folder."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SfmConfig:
    """How one timestep is reconstructed (all but `num_threads` can change the result)."""

    mode: SfmMode = "mapping"
    """"mapping": estimate poses, then align; "calibrated": triangulate with the known poses."""
    camera_model: CameraModel = "PINHOLE"
    """COLMAP camera model, initialised from the calibrated K (OPENCV with zero distortion)."""
    refine_intrinsics: bool = False
    """Let bundle adjustment refine focal length and distortion (the calibration is trusted)."""
    max_num_features: int = 8192
    """SIFT features kept per image at most."""
    peak_threshold: float = 0.002
    """SIFT detection threshold; below COLMAP's 0.0067 to find enough points on skin."""
    min_num_inliers: int = 15
    """Inlier matches an image pair needs to count as verified."""
    robust_loss_scale_px: float = 0.25
    """Scale (px) of the Cauchy loss of a last bundle adjustment after mapping; 0: none.
    Keypoint errors on skin are heavy-tailed (median 0.27 px, RMS 0.6 px at 275x401): on the
    sample this takes the median camera-centre residual from 3.4 to 1.4 mm at 275x401, and
    from 0.71 to 0.38 mm at 550x802 shrunk from 1100x1604 video (`benchmarks.bench_sfm`)."""
    max_median_residual_mm: float = 10.0
    """Drop the timestep when the median camera-centre residual after alignment exceeds this."""
    min_points_per_view: int = 30
    """Calibrated mode: triangulated points a view must see to count as registered."""
    num_threads: int = 1
    """Threads for matching (-1: all cores). One, like extraction (several threads number the
    images in the order they finish) and mapping: with several, which pairs a thread verifies,
    and so its RANSAC draws, depend on timing; the verified matches, the triangulated points
    and through them the views fusion overlaps then differ from build to build. A build uses
    the cores through parallel Luigi workers instead."""
    seed: int = 0
    """Seed of every random choice (RANSAC, mapper), so a run repeats exactly."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SfmTimings:
    """Wall time of each step in seconds (0 for a step that did not run)."""

    extraction: float
    """SIFT feature extraction."""
    matching: float
    """Exhaustive matching and geometric verification."""
    mapping: float
    """Incremental mapping (or triangulation) and alignment."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SfmResult:
    """What `run_sfm` made of one timestep."""

    status: Status
    """"ok" when all 16 views registered in one model (and the alignment is sane)."""
    reason: str
    """Why it was dropped ('' when ok), e.g. 'registered 15/16; not registered: 222200037'."""
    mode: SfmMode
    """The mode that ran."""
    registered: int
    """Views registered in the largest model."""
    expected: int
    """Views that had to register (16)."""
    residuals_mm: dict[str, float]
    """Serial -> distance between aligned and calibrated camera centre in mm (registered only)."""
    median_residual_mm: float | None
    """Median of `residuals_mm`; None without an alignment (fewer than 3 views)."""
    reprojection_px: dict[str, float]
    """Serial -> mean reprojection error of its observed 3D points, in pixels (registered)."""
    num_points3d: int
    """3D points in the largest model."""
    timings: SfmTimings
    """Wall time per step."""
    directory: Path
    """The output folder."""

    @property
    def sparse_dir(self) -> Path:
        """The aligned model (present only when status is "ok")."""
        return self.directory / SPARSE_DIR


def run_sfm(
    *,
    frames_dir: Path,
    output: Path,
    config: SfmConfig = SfmConfig(),
    progress: Progress | None = None,
) -> SfmResult:
    """Reconstruct the timestep in `frames_dir` into `output` (replaced if present).

    Runs on the usable views; views the frames stage could not deliver count as not
    registered and are named in the reason. Raises SfmError naming the folder when pycolmap
    fails unexpectedly.
    """
    frames_dir, output = Path(frames_dir), Path(output)
    report = progress or silent
    cameras = read_cameras_json(frames_dir / CAMERAS_FILE)
    frames = read_frames_summary(frames_dir)
    usable = [v.serial for v in frames.views if v.state == "ok"]
    with atomic_dir(output) as tmp:
        try:
            result = _reconstruct(frames_dir, tmp, cameras, usable, config, report)
        except (RuntimeError, ValueError) as e:
            raise SfmError(f"SfM of {frames_dir} into {output} failed: {e}") from e
        if result.status == "dropped" and frames.reason:
            reason = f"{result.reason}; frames: {frames.reason}"
            result = dataclasses.replace(result, reason=reason)
        _write_summary(tmp / SUMMARY_FILE, result, config)
    report(1.0, f"{result.status}: {result.reason or 'all views registered'}")
    return dataclasses.replace(result, directory=output)


def _reconstruct(
    frames_dir: Path,
    tmp: Path,
    cameras: Mapping[str, Camera],
    usable: list[str],
    config: SfmConfig,
    report: Progress,
) -> SfmResult:
    """Extraction, matching, then mapping or triangulation, all inside `tmp`."""
    database, images = tmp / DATABASE_FILE, frames_dir / IMAGES_DIR
    names = [image_name(s) for s in usable]
    if len(names) < 2:  # extract_features would read every file for an empty list
        return _assess(None, f"{len(names)} usable views", cameras, config)
    start = time.monotonic()
    report(0.0, f"extracting features from {len(names)} views")
    _extract(database, images, names, cameras, config)
    extracted = time.monotonic()
    report(0.5, "matching")
    _match(database, config)
    matched = time.monotonic()
    report(0.7, f"{config.mode}: reconstructing")
    if config.mode == "mapping":
        model, reason = _map(database, images, tmp, config)
    else:
        model, reason = _triangulate(database, images, tmp, cameras, config)
    result = _assess(model, reason, cameras, config)
    if result.status == "ok":
        (tmp / SPARSE_DIR).mkdir()
        model.write_binary(tmp / SPARSE_DIR)
    end = time.monotonic()
    timings = SfmTimings(
        extraction=extracted - start, matching=matched - extracted, mapping=end - matched
    )
    return dataclasses.replace(result, timings=timings)


# ---------------------------------------------------------------- features and matches


def _extract(
    database: Path,
    images: Path,
    names: list[str],
    cameras: Mapping[str, Camera],
    config: SfmConfig,
) -> None:
    """SIFT into a new database (one camera per image), then the calibrated intrinsics.

    ImageReaderOptions.camera_params would give every image of one call the same K; setting
    each database camera afterwards serves per-camera intrinsics with a single extraction.
    """
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = config.camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = 1
    extraction.sift.max_num_features = config.max_num_features
    extraction.sift.peak_threshold = config.peak_threshold
    pycolmap.extract_features(
        database,
        images,
        image_names=names,
        camera_mode=pycolmap.CameraMode.PER_IMAGE,
        reader_options=reader,
        extraction_options=extraction,
        device=pycolmap.Device.cpu,
    )
    with pycolmap.Database.open(database) as db:
        for image in db.read_all_images():
            camera = cameras[serial_of(image.name)]
            db.update_camera(
                colmap_camera(camera, model=config.camera_model, camera_id=image.camera_id)
            )


def _match(database: Path, config: SfmConfig) -> None:
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = config.num_threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.min_num_inliers = config.min_num_inliers
    verification.ransac.random_seed = config.seed
    pycolmap.match_exhaustive(
        database,
        matching_options=matching,
        verification_options=verification,
        device=pycolmap.Device.cpu,
    )


def _refines_distortion(config: SfmConfig) -> bool:
    """Only OPENCV has distortion parameters, and only refined intrinsics move them."""
    return config.refine_intrinsics and config.camera_model == "OPENCV"


def _pipeline_options(config: SfmConfig) -> pycolmap.IncrementalPipelineOptions:
    """Mapper options: one thread, fixed seed; intrinsics fixed unless asked to refine."""
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = 1
    options.random_seed = config.seed
    options.mapper.num_threads = 1
    options.mapper.random_seed = config.seed
    options.triangulation.random_seed = config.seed
    options.min_num_matches = config.min_num_inliers
    refine = config.refine_intrinsics
    options.ba_refine_focal_length = refine
    options.ba_refine_extra_params = _refines_distortion(config)
    options.ba_refine_principal_point = False
    options.mapper.abs_pose_refine_focal_length = refine
    options.mapper.abs_pose_refine_extra_params = _refines_distortion(config)
    return options


def _robust_adjustment(config: SfmConfig) -> pycolmap.BundleAdjustmentOptions:
    """Poses and points under a Cauchy loss (intrinsics as in mapping), on one thread."""
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = config.refine_intrinsics
    options.refine_extra_params = _refines_distortion(config)
    options.refine_principal_point = False
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    options.ceres.loss_function_scale = config.robust_loss_scale_px
    options.ceres.solver_options.num_threads = 1
    options.print_summary = False
    return options


# ---------------------------------------------------------------- mapping / triangulation


def _map(
    database: Path, images: Path, tmp: Path, config: SfmConfig
) -> tuple[pycolmap.Reconstruction | None, str]:
    """The largest model of the incremental mapper, or None and why there is none."""
    models_dir = tmp / "models"
    models_dir.mkdir()
    models = pycolmap.incremental_mapping(
        database, images, models_dir, options=_pipeline_options(config)
    )
    shutil.rmtree(models_dir)
    if not models:
        with pycolmap.Database.open(database) as db:
            pairs = db.num_verified_image_pairs()
        return None, f"no initial pair: too few matches ({pairs} verified image pairs)"
    largest = max(models.values(), key=lambda m: m.num_reg_images())
    if config.robust_loss_scale_px > 0:
        pycolmap.bundle_adjustment(largest, _robust_adjustment(config))
    if len(models) > 1:
        sizes = sorted((m.num_reg_images() for m in models.values()), reverse=True)
        return largest, f"split into {len(models)} models of {sizes} views"
    return largest, ""


def _triangulate(
    database: Path,
    images: Path,
    tmp: Path,
    cameras: Mapping[str, Camera],
    config: SfmConfig,
) -> tuple[pycolmap.Reconstruction, str]:
    """The database's cameras and images at the calibrated poses, with triangulated points."""
    known = pycolmap.Reconstruction()
    with pycolmap.Database.open(database) as db:
        for camera in db.read_all_cameras():
            known.add_camera_with_trivial_rig(camera)
        for image in db.read_all_images():
            pose = pycolmap.Rigid3d(cameras[serial_of(image.name)].world_2_cam[:3, :4])
            empty = pycolmap.Image(
                name=image.name, camera_id=image.camera_id, image_id=image.image_id
            )
            known.add_image_with_trivial_frame(empty, pose)
    work = tmp / "triangulated"
    work.mkdir()
    model = pycolmap.triangulate_points(
        known, database, images, work, options=_pipeline_options(config)
    )
    shutil.rmtree(work)
    return model, ""


# ---------------------------------------------------------------- assessment


def _registered(model: pycolmap.Reconstruction | None, config: SfmConfig) -> list[str]:
    """Serials of the views that count as registered in `model`."""
    if model is None:
        return []
    images = (model.image(i) for i in model.reg_image_ids())
    if config.mode == "calibrated":
        images = (im for im in images if im.num_points3D >= config.min_points_per_view)
    return sorted(serial_of(im.name) for im in images)


def _assess(
    model: pycolmap.Reconstruction | None,
    note: str,
    cameras: Mapping[str, Camera],
    config: SfmConfig,
) -> SfmResult:
    """Count, align (mapping mode), measure residuals and decide ok or dropped."""
    registered = _registered(model, config)
    aligned = model is not None and (
        config.mode == "calibrated"
        or (len(registered) >= 3 and align_to_cameras(model, cameras) is not None)
    )
    residuals = camera_residuals_mm(model, cameras) if aligned else {}
    median = float(np.median(list(residuals.values()))) if residuals else None
    missing = [s for s in SERIALS if s not in registered]
    problems = [f"registered {len(registered)}/{len(SERIALS)}"] if missing else []
    problems += [note] if note else []
    problems += [f"not registered: {' '.join(missing)}"] if missing else []
    if not missing and median is None:
        problems.append("no similarity transform from the camera centres")
    elif not missing and median > config.max_median_residual_mm:
        problems.append(
            f"median camera-centre residual {median:.1f} mm > {config.max_median_residual_mm} mm"
        )
    return SfmResult(
        status="dropped" if problems else "ok",
        reason="; ".join(problems),
        mode=config.mode,
        registered=len(registered),
        expected=len(SERIALS),
        residuals_mm=residuals,
        median_residual_mm=median,
        reprojection_px={} if model is None else reprojection_errors_px(model),
        num_points3d=0 if model is None else model.num_points3D(),
        timings=SfmTimings(extraction=0.0, matching=0.0, mapping=0.0),
        directory=Path(),
    )


def reprojection_errors_px(model: pycolmap.Reconstruction) -> dict[str, float]:
    """Serial -> mean distance (pixels) between each observation and its 3D point's projection
    in that view: how well the view agrees with the model (the shard's `sfm_residual_px`)."""
    errors = {}
    for image in model.images.values():
        camera, pose = model.cameras[image.camera_id], image.cam_from_world()
        seen = [p for p in image.points2D if p.has_point3D()]
        if not seen:
            continue
        xyz = np.stack([model.points3D[p.point3D_id].xyz for p in seen])
        projected = camera.img_from_cam(np.asarray([pose * x for x in xyz]))
        observed = np.stack([p.xy for p in seen])
        errors[serial_of(image.name)] = float(np.linalg.norm(projected - observed, axis=1).mean())
    return dict(sorted(errors.items()))


# ---------------------------------------------------------------- summary file


def _write_summary(path: Path, result: SfmResult, config: SfmConfig) -> None:
    data = dataclasses.asdict(result)
    data.pop("directory")
    data["config"] = dataclasses.asdict(config)
    path.write_text(json.dumps(data, indent=1))
