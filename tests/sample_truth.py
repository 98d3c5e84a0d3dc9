"""A small slice of the sample subject for tests: a few cameras and frames of two sequences,
drawn by the sample subject's own world (`tasks.sample.world`) at the working resolution and
written in its formats (truth maps EXR, params Parquet, RGB PNG), once per test session.

The world is built without what nothing here uses and would cost a minute: the MediaPipe
landmark embedding (a stand-in with one landmark) and the full-resolution backgrounds (drawn
for the used cameras at the working resolution instead).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.model import FlameModel
from flame_tracking.sample_model import build_sample_model
from tasks.formats.cameras import Camera, pixel_rays
from tasks.formats.exr import read_exr, write_exr
from tasks.formats.nersemble import read_cameras, write_cameras
from tasks.sample import world as sample_world
from tasks.sample.scene import PARAMETER_NAMES, background
from tasks.sample.world import (
    SampleSubjectConfig,
    SampleWorld,
    build_world,
    ground_truth_map_path,
    ground_truth_view,
    render_view,
)

SERIALS_USED = ("222200036", "222200037", "222200038", "222200041")
"""Yaw -30, frontal, yaw +15 and the frontal camera of the upper row."""
SEQUENCES = ("EXP-1-head", "EMO-1-shout+laugh")
"""A head-turning sequence and a strong-expression one."""
FRAMES = 3
"""Frames per sequence."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Truth:
    """The slice on disk and what it was drawn from."""

    root: Path
    """Folder of the maps (`ground_truth_map_path` layout), images and params."""
    model: FlameModel
    """The sample head model."""
    cameras: dict[str, Camera]
    """Serial -> camera at the working resolution, for `SERIALS_USED`."""
    params: pd.DataFrame
    """One row per (sequence, frame): FLAME parameters as lists (`PARAMETER_NAMES`)."""

    @property
    def timesteps(self) -> list[tuple[str, int]]:
        return [(s, t) for s in SEQUENCES for t in range(FRAMES)]

    def maps(self, sequence: str, frame: int, serial: str) -> dict[str, np.ndarray]:
        """Truth maps of one view: depth, canonical, normal, mask (face), hair."""
        return read_exr(
            ground_truth_map_path(self.root, sequence=sequence, frame=frame, serial=serial)
        )

    def image_path(self, sequence: str, frame: int, serial: str) -> Path:
        return self.root / "images" / sequence / f"frame_{frame:05d}" / f"cam_{serial}.png"

    def posed_vertices(self, sequence: str, frame: int) -> np.ndarray:
        """(V, 3) the truth FLAME mesh of a timestep, from its parameters (float64)."""
        row = self.params[(self.params.sequence == sequence) & (self.params.frame == frame)]
        tensors = {n: torch.tensor(np.stack(row[n].to_numpy())) for n in PARAMETER_NAMES}
        with torch.no_grad():
            return FlameLayer(self.model, torch.float64)(FlameParams(**tensors)).vertices[0].numpy()


def _stand_in_embedding(*, root: Path, model: FlameModel) -> dict[str, np.ndarray]:
    return {
        "lmk_face_idx": np.array([0]),
        "lmk_b_coords": np.array([[1.0, 0.0, 0.0]]),
        "lmk_mediapipe_idx": np.array([0]),
    }


def _no_background(camera: Camera) -> np.ndarray:
    return np.zeros((1, 1, 3))


def _world(root: Path) -> SampleWorld:
    """The sample world, rendering at the working resolution."""
    config = SampleSubjectConfig(
        subject="901", frames_per_sequence=FRAMES, sequences=SEQUENCES, texture_size=256
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sample_world, "cached_landmark_embedding", _stand_in_embedding)
        patch.setattr(sample_world, "background", _no_background)
        world = build_world(config=config, root=root)
    cameras = {s: world.gt_cameras[s] for s in SERIALS_USED}
    return dataclasses.replace(
        world,
        cameras=cameras,
        backgrounds={s: background(c).astype(np.float32) for s, c in cameras.items()},
    )


def sample_truth(root: Path) -> Truth:
    """The slice in `root`, drawn there unless a complete one is there already."""
    done = root / "complete"
    if done.exists():
        model = build_sample_model()
    else:
        world = _world(root)
        _draw(world, root)
        write_cameras(root, world.gt_cameras)
        done.touch()
        model = world.model
    cameras = read_cameras(root)
    return Truth(
        root=root,
        model=model,
        cameras={s: cameras[s] for s in SERIALS_USED},
        params=pd.read_parquet(root / "params.parquet"),
    )


def _draw(world: SampleWorld, root: Path) -> None:
    rows = []
    for sequence in SEQUENCES:
        for t, frame in enumerate(world.posed_frames(sequence)):
            rows.append(
                {"sequence": sequence, "frame": t}
                | {n: world.params[sequence][n][t].tolist() for n in PARAMETER_NAMES}
            )
            for serial in SERIALS_USED:
                path = ground_truth_map_path(root, sequence=sequence, frame=t, serial=serial)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_exr(path, ground_truth_view(world, frame, serial=serial))
                rgb = render_view(world, frame, sequence=sequence, frame_index=t, serial=serial)
                image = root / "images" / sequence / f"frame_{t:05d}" / f"cam_{serial}.png"
                image.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    pd.DataFrame(rows).to_parquet(root / "params.parquet", index=False)


def along_rays(truth: Truth, serial: str, depth: np.ndarray, sigma: float) -> np.ndarray:
    """`depth` with each point moved along its pixel ray by Gaussian noise of `sigma` metres."""
    _, dirs = pixel_rays(truth.cameras[serial])  # unit z: |dir| = ray length per metre of z
    step = np.random.default_rng(0).normal(0.0, sigma, depth.size)
    return depth + (step / np.linalg.norm(dirs, axis=1)).reshape(depth.shape)
