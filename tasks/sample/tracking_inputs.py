"""Tracking inputs of the sample subject drawn from its world, in the real on-disk formats.

Until the reconstruction stages run on the sample, the tracker's tests and benchmark need what
they would write: per timestep a frames folder (`images/cam_{serial}.png` at the working
resolution and `cameras.json`, as `tasks.frames` writes them) and a fused cloud (COLMAP's PLY
layout with normals, as `tasks.fusion` reads it). The images are the sample's renders at the
working resolution (no colour cast: the frames stage removes it); the cloud is the truth depth
of some views back-projected, with Gaussian noise and a few points pushed off the surface
along their normals, like the stray points of a real fusion.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from tasks.formats.cameras import SERIALS, Camera, backproject_depth
from tasks.formats.nersemble import downsample_image
from tasks.formats.ply import write_ply
from tasks.frames import CAMERAS_FILE, image_path, write_cameras_json
from tasks.sample.scene import PosedFrame, record, shade_view
from tasks.sample.world import SampleWorld, ground_truth_view
from tasks.tracking import TimestepInput

FUSED_FILE = "fused.ply"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CloudConfig:
    """How the stand-in fused cloud is made from the truth depth."""

    serials: tuple[str, ...] = SERIALS[::2]
    """Cameras whose truth depth is back-projected (every other one by default)."""
    noise: float = 0.0007
    """Gaussian noise per axis, metres."""
    stray_fraction: float = 0.02
    """Fraction of points pushed off the surface along their normal."""
    stray_range: tuple[float, float] = (0.003, 0.015)
    """How far (metres) stray points are pushed."""


def working_view(
    world: SampleWorld, frame: PosedFrame, *, sequence: str, frame_index: int, serial: str
) -> np.ndarray:
    """(H, W, 3) uint8 RGB of one view at the working resolution, with the view's own sensor
    noise and no colour cast."""
    camera = world.gt_cameras[serial]
    rgb, mask = shade_view(
        frame=frame,
        model=world.model,
        texture=world.texture,
        camera=camera,
        exposure=world.config.exposure,
    )
    backdrop = downsample_image(world.backgrounds[serial], world.config.downsample)
    noise = world.noise_stream(sequence, frame_index, SERIALS.index(serial))
    linear = np.where(mask[..., None], rgb, backdrop)
    return record(linear, cast=np.eye(3), noise_sigma=world.config.noise_sigma, rng=noise)


def empty_view(world: SampleWorld, *, serial: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the studio without the head, at the working resolution."""
    backdrop = downsample_image(world.backgrounds[serial], world.config.downsample)
    return record(backdrop, cast=np.eye(3), noise_sigma=0.0, rng=np.random.default_rng(0))


def truth_cloud(
    world: SampleWorld, frame: PosedFrame, *, config: CloudConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) points and (N, 3) unit normals of the stand-in fused cloud of one frame."""
    points, normals = [], []
    for serial in config.serials:
        maps = ground_truth_view(world, frame, serial=serial)
        xyz = backproject_depth(maps["depth"], world.gt_cameras[serial]).reshape(-1, 3)
        ok = np.isfinite(xyz).all(1)
        points.append(xyz[ok])
        normals.append(maps["normal"].reshape(-1, 3)[ok])
    p, n = np.concatenate(points), np.concatenate(normals)
    p = p + rng.normal(0.0, config.noise, p.shape)
    stray = rng.random(len(p)) < config.stray_fraction
    p[stray] += n[stray] * rng.uniform(*config.stray_range, (int(stray.sum()), 1))
    return p, n


def write_fused_ply(path: Path, points: np.ndarray, normals: np.ndarray) -> Path:
    """COLMAP fusion's PLY layout: x y z nx ny nz (float32), red green blue (grey here)."""
    columns = {n: points[:, k] for k, n in enumerate("xyz")}
    columns |= {n: normals[:, k] for k, n in enumerate(("nx", "ny", "nz"))}
    columns |= {n: np.full(len(points), 128, np.uint8) for n in ("red", "green", "blue")}
    return write_ply(path, columns)


def write_timestep(
    folder: Path,
    *,
    sequence: str,
    frame: int,
    images: dict[str, np.ndarray],
    cameras: dict[str, Camera],
    cloud: tuple[np.ndarray, np.ndarray],
) -> TimestepInput:
    """Write one timestep's frames folder and fused cloud under `folder`."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for serial, image in images.items():
        if not cv2.imwrite(str(image_path(folder, serial)), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write the image of camera {serial} in {folder}")
    write_cameras_json(folder / CAMERAS_FILE, cameras)
    ply = write_fused_ply(folder / FUSED_FILE, *cloud)
    return TimestepInput(sequence=sequence, frame=frame, frames_dir=folder, fused_ply=ply)


def write_sample_inputs(
    world: SampleWorld, root: Path, *, config: CloudConfig, seed: int = 0
) -> tuple[TimestepInput, ...]:
    """Every frame of every sequence of `world` as tracking inputs under
    `root/{sequence}/frame_{t:05d}`."""
    rng = np.random.default_rng(seed)
    inputs = []
    for sequence in world.config.sequences:
        for t, frame in enumerate(world.posed_frames(sequence)):
            images = {
                s: working_view(world, frame, sequence=sequence, frame_index=t, serial=s)
                for s in SERIALS
            }
            inputs.append(
                write_timestep(
                    Path(root) / sequence / f"frame_{t:05d}",
                    sequence=sequence,
                    frame=t,
                    images=images,
                    cameras=world.gt_cameras,
                    cloud=truth_cloud(world, frame, config=config, rng=rng),
                )
            )
    return tuple(inputs)
