"""Files inference and evaluation write, all through the project's one atomic writer
(`tasks.formats.atomic`: a temporary sibling, then a rename), so a killed run never leaves a
half file under its final name. Maps, clouds, JSON and videos are `tasks.formats`' own
writers; this module adds the tables, pictures and text inference writes, and the shapes
its callers use (points with colours, frames of any size)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tasks.formats import ply, video
from tasks.formats.atomic import atomic_file, write_bytes, write_json
from tasks.formats.exr import read_exr, write_exr

__all__ = [
    "read_exr",
    "read_ply",
    "write_exr",
    "write_json",
    "write_parquet",
    "write_png",
    "write_ply",
    "write_text",
    "write_video",
]

_RGB = ("red", "green", "blue")


def write_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray) -> Path:
    """(N, 3) points (float32) with (N, 3) uint8 RGB colours."""
    points = np.asarray(points, dtype=np.float32)
    columns = {name: points[:, k] for k, name in enumerate("xyz")}
    columns |= {name: np.asarray(colors, np.uint8)[:, k] for k, name in enumerate(_RGB)}
    return ply.write_ply(path, columns)


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float32 points and (N, 3) uint8 colours of a file `write_ply` wrote."""
    vertices = ply.read_ply_vertices(path)
    points = np.stack([vertices[a] for a in "xyz"], axis=1).astype(np.float32)
    return points, np.stack([vertices[c] for c in _RGB], axis=1).astype(np.uint8)


def write_parquet(path: str | os.PathLike, table: pd.DataFrame) -> Path:
    with atomic_file(path) as tmp:
        table.to_parquet(tmp, compression="zstd", index=False)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """An (H, W, 3) uint8 RGB image."""
    with atomic_file(path) as tmp:
        Image.fromarray(image).save(tmp)
    return Path(path)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], *, fps: float) -> Path:
    """An mp4 of (H, W, 3) uint8 RGB frames of one size (cropped to even sides for yuv420p)."""
    even = (np.ascontiguousarray(f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2]) for f in frames)
    video.write_video(path, even, fps=round(fps))
    return Path(path)
