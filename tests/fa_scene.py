"""A tiny synthetic scene written as a real shard, for the faceanything tests.

A ball of radius 0.1 m (the "head") moves and turns from timestep to timestep in front of a
ring of cameras; its canonical coordinates are the ball's own (rest) coordinates, and its
colour is a function of them, so canonical maps can be learnt from the images. Depth and
canonical maps are exact (ray-sphere intersection).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tasks.formats.cameras import Camera
from tasks.formats.exr import write_exr
from tasks.formats.shards import FLAME_COLUMNS, ShardInfo, ShardSample, write_shard

RADIUS = 0.1
SIZE = (56, 70)
"""(width, height) of the scene's images."""


def look_at(centre: np.ndarray, target: tuple[float, ...] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """world_2_cam (4, 4) of an OpenCV camera at `centre` looking at `target` (y down ~ -Y)."""
    forward = np.asarray(target) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ centre
    return T


def ring_cameras(
    count: int, *, size: tuple[int, int] = SIZE, distance: float = 0.5
) -> list[Camera]:
    width, height = size
    K = np.array([[1.4 * width, 0, (width - 1) / 2], [0, 1.4 * width, (height - 1) / 2], [0, 0, 1]])
    cameras = []
    for i, yaw in enumerate(np.linspace(-0.6, 0.6, count)):
        centre = distance * np.array([np.sin(yaw), 0.05 * i - 0.05, np.cos(yaw)])
        cameras.append(
            Camera(
                serial=f"2222000{i:02d}",
                K=K,
                world_2_cam=look_at(centre),
                width=width,
                height=height,
            )
        )
    return cameras


def pose(frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of the ball at a timestep: world = R canonical + t."""
    angle = 0.25 * np.sin(frame)
    c, s = np.cos(angle), np.sin(angle)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return R, np.array([0.02 * np.cos(frame), 0.015 * np.sin(2 * frame), 0.03 * np.sin(frame)])


def render(camera: Camera, frame: int) -> dict[str, np.ndarray]:
    """image (H, W, 3) uint8 and the maps of `tasks.formats.shards.MAP_CHANNELS`."""
    R, t = pose(frame)
    W2C = camera.world_2_cam
    v, u = np.mgrid[: camera.height, : camera.width].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(camera.K).T  # z = 1
    centre = W2C[:3, :3] @ t + W2C[:3, 3]  # ball centre in the camera
    # |z d - c|^2 = r^2 with d = rays: a z^2 - 2 b z + (|c|^2 - r^2) = 0
    a = (rays**2).sum(-1)
    b = rays @ centre
    disc = b**2 - a * (centre @ centre - RADIUS**2)
    hit = disc > 0
    z = np.where(hit, (b - np.sqrt(np.where(hit, disc, 0))) / a, np.nan)
    cam_points = rays * z[..., None]
    world = (cam_points - W2C[:3, 3]) @ W2C[:3, :3]  # R^T (p - t)
    canonical = (world - t) @ R  # R^T (x - t)
    normal = (world - t) / RADIUS
    colour = np.clip(0.5 + 4.0 * canonical, 0, 1)
    background = np.stack(
        [0.3 + 0.2 * u / camera.width, 0.4 * np.ones_like(u), 0.3 + 0.2 * v / camera.height], -1
    )
    image = np.where(hit[..., None], colour, background)
    return {
        "image": (image * 255).round().astype(np.uint8),
        "depth": z.astype(np.float32),
        "canonical": np.where(hit[..., None], canonical, np.nan).astype(np.float32),
        "normal": np.where(hit[..., None], normal, np.nan).astype(np.float32),
        "mask": hit.astype(np.float32),
    }


def write_scene_shard(
    path: Path,
    *,
    subject: str = "901",
    timesteps: tuple[tuple[str, int], ...] = (("EXP-1-head", 0), ("EXP-1-head", 1)),
    cameras: int = 3,
    size: tuple[int, int] = SIZE,
) -> ShardInfo:
    """Render the scene for every timestep and camera and write it as a shard at `path`."""
    files = path.parent / f"{path.name}_files"
    files.mkdir(parents=True, exist_ok=True)
    samples = []
    for sequence, frame in timesteps:
        for camera in ring_cameras(cameras, size=size):
            views = render(camera, frame)
            stem = files / f"{sequence}_{frame}_{camera.serial}"
            cv2.imwrite(f"{stem}.png", cv2.cvtColor(views.pop("image"), cv2.COLOR_RGB2BGR))
            write_exr(f"{stem}.exr", views)
            samples.append(
                ShardSample(
                    subject=subject,
                    sequence=sequence,
                    frame=frame,
                    camera=camera,
                    flame={name: np.zeros(3, np.float32) for name in FLAME_COLUMNS},
                    quality={},
                    image=Path(f"{stem}.png"),
                    maps=Path(f"{stem}.exr"),
                )
            )
    return write_shard(samples=samples, path=path)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test (the machine's cores are shared), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
