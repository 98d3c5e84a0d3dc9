"""The sample subject's settings and its world, built once: head model with its landmark
embedding, texture, hair, cameras, colour casts, backgrounds and per-sequence FLAME parameters.

`render_view` and `ground_truth_view` draw one view of one posed frame; the generator and the
tests share them, so a test can re-render exactly what a video holds.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.model import FlameModel
from flame_tracking.sample_model import build_sample_model, template_keypoints
from tasks.formats.cameras import FULL_SIZE, SERIALS, Camera, downsample
from tasks.formats.names import validate_subject_id
from tasks.formats.nersemble import subject_dir
from tasks.sample.appearance import bake_texture
from tasks.sample.hair import Hair, build_hair, hair_style
from tasks.sample.landmark_embedding import cached_landmark_embedding
from tasks.sample.scene import (
    PosedFrame,
    background,
    build_rig,
    color_casts,
    ground_truth_maps,
    pose_frame,
    record,
    sequence_params,
    shade_view,
    stream,
)


def default_seed(subject: str) -> int:
    """The seed of a subject id: the id itself when numeric, else a stable hash of it."""
    subject = validate_subject_id(subject)
    return int(subject) if subject.isdigit() else zlib.crc32(subject.encode())


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleSubjectConfig:
    """What sample subject to make; every field changes the output."""

    subject: str
    """Subject id (letters, digits, '_', '-'); numeric ids are stored zero-padded to 3."""
    seed: int | None = None
    """Seed of identity, motion, texture noise, rig jitter, colour casts and sensor noise;
    None: `default_seed(subject)`."""
    scale: int = 4
    """Sample full resolution = NeRSemble's 2200x3208 / scale (1, 2 or 4: sizes stay even)."""
    downsample: int = 2
    """Working downsample of the pipeline: the ground truth maps are at full / downsample."""
    frames_per_sequence: int = 16
    """Frames in each sequence's videos."""
    sequences: tuple[str, ...] = ("EXP-1-head", "EMO-1-shout+laugh")
    """Sequence names; one containing 'head' turns the head, the others make faces."""
    noise_sigma: float = 1.5 / 255
    """Gaussian sensor noise (sRGB, [0, 1] units) added before uint8 quantisation."""
    texture_size: int = 1024
    """Albedo texture size (texels per side)."""
    camera_distance: float = 1.0
    """Camera distance from the head in metres."""
    exposure: float = 0.8
    """Multiplier of the shaded linear colour, so lit skin stays below clipping."""
    principal_jitter: float = 15.0
    """Per-camera principal point offsets, uniform +- px at NeRSemble's full resolution; the
    calibration then stores K per serial (0: one shared K, exactly as the v2 kit does)."""

    def __post_init__(self) -> None:
        if subject_dir(root=".", subject=self.subject).name == "ground_truth":
            raise ValueError("subject id 'ground_truth' is the ground truth folder's name")
        width, height = FULL_SIZE
        if self.scale < 1 or width % (2 * self.scale) or height % (2 * self.scale):
            raise ValueError(f"scale {self.scale} must divide 2200x3208 into even sizes (1, 2, 4)")
        size = (width // self.scale, height // self.scale)
        if self.downsample < 1 or size[0] % self.downsample or size[1] % self.downsample:
            raise ValueError(f"downsample {self.downsample} must divide {size[0]}x{size[1]}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if self.frames_per_sequence < 1:
            raise ValueError(f"frames_per_sequence must be >= 1, got {self.frames_per_sequence}")
        if not self.sequences or len(set(self.sequences)) != len(self.sequences):
            raise ValueError(f"sequences must be distinct and not empty: {self.sequences}")
        if "BACKGROUND" in self.sequences:
            raise ValueError("BACKGROUND is the background plates' folder, not a sequence")

    @property
    def effective_seed(self) -> int:
        """`seed`, or the subject's default seed when it is None."""
        return default_seed(self.subject) if self.seed is None else self.seed


def ground_truth_dir(*, root: str | os.PathLike, subject: str) -> Path:
    """`{root}/ground_truth/{id}` (the id padded like `subject_dir`)."""
    return Path(root) / "ground_truth" / subject_dir(root=root, subject=subject).name


def ground_truth_map_path(gt_dir: Path, *, sequence: str, frame: int, serial: str) -> Path:
    """The EXR of one view's truth: depth, canonical, normal, mask at the working size."""
    return Path(gt_dir) / "maps" / sequence / f"frame_{frame:05d}" / f"cam_{serial}.exr"


TRUTH_REGIONS = ("face", "hair", "other")
"""Regions of a view's truth (`truth_regions`): the face mask, the hair shell, the rest."""


def truth_regions(truth: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(H, W) masks of the visible face, hair and other surface in one view's truth maps
    (truth made before the hair has none)."""
    visible = np.isfinite(truth["depth"])
    face = visible & (truth["mask"] > 0.5)
    hair = visible & (truth.get("hair", np.zeros_like(truth["mask"])) > 0.5)
    return {"face": face, "hair": hair, "other": visible & ~face & ~hair}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleWorld:
    """Everything needed to render any view of any frame of one sample subject."""

    config: SampleSubjectConfig
    """The settings it was built from."""
    model: FlameModel
    """The sample head model, carrying its MediaPipe landmark embedding."""
    texture: np.ndarray
    """(S, S, 3) linear RGB albedo in the model's UV layout."""
    hair: Hair
    """The hair shell over the scalp (geometry and colour; see `tasks.sample.hair`)."""
    cameras: dict[str, Camera]
    """Serial -> camera at the sample's full resolution (what the videos hold)."""
    gt_cameras: dict[str, Camera]
    """Serial -> camera at the working resolution (what the ground truth maps hold)."""
    casts: dict[str, np.ndarray]
    """Serial -> (3, 3) linear-RGB colour cast of the camera."""
    backgrounds: dict[str, np.ndarray]
    """Serial -> (H, W, 3) float32 linear RGB studio behind the head at full resolution."""
    params: dict[str, dict[str, np.ndarray]]
    """Sequence -> FLAME parameter name -> (frames, k) values."""
    face_triangles: np.ndarray
    """(F,) bool: triangles whose three vertices are all in the model's face region."""

    def noise_stream(self, sequence: str, frame: int, camera_index: int) -> np.random.Generator:
        """The sensor noise of one view, independent of every other view."""
        return stream(self.config.effective_seed, "noise", sequence, frame, camera_index)

    def posed_frames(self, sequence: str) -> Iterator[PosedFrame]:
        """The posed mesh of each frame of `sequence`, in order (FLAME in float64)."""
        layer = FlameLayer(self.model, torch.float64)
        tensors = {k: torch.as_tensor(v) for k, v in self.params[sequence].items()}
        with torch.no_grad():
            vertices = layer(FlameParams(**tensors)).vertices.numpy()
        for posed in vertices:
            yield pose_frame(model=self.model, vertices=posed, hair=self.hair)


def build_world(*, config: SampleSubjectConfig, root: Path) -> SampleWorld:
    """Build the world; the landmark embedding is cached in `root` (see landmark_embedding)."""
    seed = config.effective_seed
    model = build_sample_model()
    model = model.with_landmarks(**cached_landmark_embedding(root=root, model=model))
    keypoints = template_keypoints(model)
    target = np.array([0.0, keypoints["nose_tip"][1] - 0.01, 0.0])
    cameras = build_rig(
        target=target,
        scale=config.scale,
        distance=config.camera_distance,
        seed=seed,
        principal_jitter=config.principal_jitter,
    )
    frames = config.frames_per_sequence
    in_face = np.zeros(model.num_vertices, dtype=bool)
    in_face[model.face_vertex_ids] = True
    style = hair_style(model=model, seed=seed)
    return SampleWorld(
        config=config,
        model=model,
        texture=bake_texture(model=model, size=config.texture_size, seed=seed, style=style),
        hair=build_hair(model=model, style=style),
        cameras=cameras,
        gt_cameras={s: downsample(c, config.downsample) for s, c in cameras.items()},
        casts=color_casts(seed=seed),
        backgrounds={s: background(c).astype(np.float32) for s, c in cameras.items()},
        params={
            s: sequence_params(model=model, sequence=s, frames=frames, seed=seed)
            for s in config.sequences
        },
        face_triangles=in_face[model.f].all(axis=1),
    )


def render_linear(world: SampleWorld, frame: PosedFrame, *, serial: str) -> np.ndarray:
    """(H, W, 3) linear RGB of one view before the camera's cast and noise."""
    rgb, mask = shade_view(
        frame=frame,
        model=world.model,
        texture=world.texture,
        camera=world.cameras[serial],
        exposure=world.config.exposure,
    )
    return np.where(mask[..., None], rgb, world.backgrounds[serial])


def render_view(
    world: SampleWorld, frame: PosedFrame, *, sequence: str, frame_index: int, serial: str
) -> np.ndarray:
    """(H, W, 3) uint8 RGB the camera `serial` records of `frame`: exactly a video's frame
    before compression (cast, sRGB, this view's own sensor noise)."""
    return record(
        render_linear(world, frame, serial=serial),
        cast=world.casts[serial],
        noise_sigma=world.config.noise_sigma,
        rng=world.noise_stream(sequence, frame_index, SERIALS.index(serial)),
    )


def ground_truth_view(
    world: SampleWorld, frame: PosedFrame, *, serial: str
) -> dict[str, np.ndarray]:
    """One view's truth maps at the working resolution (see `ground_truth_maps`): depth,
    canonical, normal, face mask, hair."""
    return ground_truth_maps(
        frame=frame,
        model=world.model,
        camera=world.gt_cameras[serial],
        face_triangles=world.face_triangles,
    )
