"""A shard in one picture, like the paper's figure 1: per timestep of one camera its RGB with
point tracks, depth, canonical map and normals; the tracks follow a few points of the first
timestep through the others by nearest neighbours in canonical space (paper eq. 2)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy.ndimage import binary_erosion
from scipy.spatial import cKDTree

from tasks.formats.shards import load_sample, read_index
from tasks.pictures.stages import save_figure
from tasks.selection import farthest_point_sampling


def canonical_colors(canonical: np.ndarray, *, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] of a canonical map: x, y, z scaled over the box [low, high]
    (shared by every panel, so a colour means the same face point everywhere); white where
    invalid."""
    return np.clip(np.nan_to_num((canonical - low) / (high - low), nan=1.0), 0.0, 1.0)


def spread_pixels(mask: np.ndarray, *, count: int) -> np.ndarray:
    """(count, 2) pixels (x, y) of `mask` spread out by farthest point sampling from the
    pixel nearest the mask's centroid."""
    rows, cols = np.nonzero(mask)
    pixels = np.stack([cols, rows], axis=1).astype(np.float64)
    start = int(np.argmin(np.linalg.norm(pixels - pixels.mean(0), axis=1)))
    chosen = [start, *farthest_point_sampling(pixels, count - 1, chosen=[start])]
    return pixels[chosen].astype(np.int64)


def track_pixels(samples: Sequence[dict], *, count: int, max_distance: float) -> np.ndarray:
    """(T, count, 2) pixels of `count` points spread over the first sample's valid canonical
    map, found in every sample as the valid pixel of nearest canonical coordinate; NaN where
    that is farther than `max_distance` metres (the point is hidden there)."""
    first = samples[0]
    inner = binary_erosion(first["mask"] == 1, iterations=8)  # away from the silhouette
    start = spread_pixels(inner if inner.any() else first["mask"] == 1, count=count)
    queries = first["canonical"][start[:, 1], start[:, 0]]
    tracks = []
    for sample in samples:
        rows, cols = np.nonzero(sample["mask"] == 1)
        distance, nearest = cKDTree(sample["canonical"][rows, cols]).query(queries)
        found = np.stack([cols[nearest], rows[nearest]], axis=1).astype(np.float64)
        found[distance > max_distance] = np.nan
        tracks.append(found)
    return np.stack(tracks)


def tracks_picture(
    *,
    shard: str | os.PathLike,
    serial: str,
    path: str | os.PathLike,
    timesteps: Sequence[tuple[str, int]] | None = None,
    max_rows: int = 4,
    points: int = 12,
    max_distance: float = 0.003,
) -> Path:
    """One row per timestep (`(sequence, frame)` pairs; by default `max_rows` of the shard's,
    evenly spread) of camera `serial`: RGB with the tracks so far, depth, canonical map,
    normals. A point whose nearest canonical neighbour is farther than `max_distance` (m) is
    hidden: not drawn."""
    index = read_index(shard)
    index = index[index.serial == serial].sort_values(["sequence", "frame"])
    if timesteps is not None:
        wanted = set(timesteps)
        index = index[[(s, f) in wanted for s, f in zip(index.sequence, index.frame, strict=True)]]
    if index.empty:
        raise ValueError(f"{shard}: no samples of camera {serial} for {timesteps}")
    if timesteps is None:
        spread = np.linspace(0, len(index) - 1, max_rows).round().astype(int)
        index = index.iloc[np.unique(spread)]
    samples = [load_sample(shard, row) for _, row in index.iterrows()]
    tracks = track_pixels(samples, count=points, max_distance=max_distance)
    valid = np.concatenate([s["canonical"][s["mask"] == 1] for s in samples])
    low, high = valid.min(axis=0), valid.max(axis=0)
    depth = np.concatenate([s["depth"][np.isfinite(s["depth"])] for s in samples])
    depth_range = np.percentile(depth, [1, 99])
    rows, cols = np.nonzero(np.any([np.isfinite(s["depth"]) for s in samples], axis=0))
    fig, axes = plt.subplots(
        len(samples), 4, figsize=(12, 4 * len(samples)), squeeze=False, layout="constrained"
    )
    colours = plt.get_cmap("tab20")(np.arange(points) % 20)
    for t, (sample, row) in enumerate(zip(samples, axes, strict=True)):
        row[0].imshow(sample["image"])
        for k in range(len(tracks[0])):
            row[0].plot(tracks[: t + 1, k, 0], tracks[: t + 1, k, 1], "-", color=colours[k], lw=1)
            row[0].plot(*tracks[t, k], "o", color=colours[k], ms=4, mec="white", mew=0.5)
        row[1].imshow(sample["depth"], cmap="viridis", vmin=depth_range[0], vmax=depth_range[1])
        row[2].imshow(canonical_colors(sample["canonical"], low=low, high=high))
        row[3].imshow(np.nan_to_num(sample["normal"] * 0.5 + 0.5, nan=1.0).clip(0, 1))
        row[0].set_ylabel(f"{sample['sequence']} #{sample['frame']}")
        titles = ("RGB + tracks", "depth", "canonical (FLAME x, y, z)", "normals (world)")
        for ax, title in zip(row, titles, strict=True):
            ax.set_xlim(cols.min() - 10, cols.max() + 10)
            ax.set_ylim(rows.max() + 10, rows.min() - 10)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title if t == 0 else "", fontsize=10)
    fig.suptitle(f"shard {Path(shard).name}: camera {serial}, tracks by canonical NN")
    return save_figure(fig, Path(path))
