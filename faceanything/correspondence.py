"""Shard samples as tensors, and dense correspondence by nearest neighbours in canonical space.

Paper eq. 2: pixel p of view i matches the pixel q of view j whose canonical coordinate
C_j(q) is nearest C_i(p) among j's valid pixels. Canonical maps are (H, W, 3) FLAME metres
with NaN (or a mask) where invalid; pixels are (x, y) = (column, row), centres on integers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch.utils.data import Dataset

from tasks.shards import load_sample, read_index, read_manifest


class ShardDataset(Dataset):
    """View samples of one or more shards, as tensors (no augmentation here).

    Each item: image [3, H, W] float32 in [0, 1]; depth [1, H, W] (metres, 0 where none) with
    depth_valid [1, H, W] bool; canonical [3, H, W] (FLAME metres, 0 where none) with mask
    [1, H, W] bool; normal [3, H, W] (world, 0 where none); K [3, 3] and world_2_cam [4, 4]
    float32; subject, sequence, serial (str) and frame (int).
    """

    def __init__(self, shards: Sequence[str | os.PathLike]) -> None:
        self._rows = []
        for shard in shards:
            index = read_index(shard)
            self._rows += [(Path(shard), row) for _, row in index.iterrows()]

    @classmethod
    def from_dataset(cls, root: str | os.PathLike) -> ShardDataset:
        """Every shard a dataset folder's manifest lists."""
        return cls([info.path for info in read_manifest(root)])

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> dict[str, object]:
        shard, row = self._rows[i]
        sample = load_sample(shard, row)
        depth = torch.from_numpy(sample["depth"])[None]
        canonical = torch.from_numpy(sample["canonical"]).permute(2, 0, 1)
        normal = torch.from_numpy(sample["normal"]).permute(2, 0, 1)
        return {
            "image": torch.from_numpy(sample["image"]).permute(2, 0, 1).float() / 255.0,
            "depth": torch.nan_to_num(depth, nan=0.0),
            "depth_valid": torch.isfinite(depth),
            "canonical": torch.nan_to_num(canonical, nan=0.0),
            "mask": torch.from_numpy(sample["mask"] == 1)[None],
            "normal": torch.nan_to_num(normal, nan=0.0),
            "K": torch.tensor(sample["K"], dtype=torch.float32),
            "world_2_cam": torch.tensor(sample["world_2_cam"], dtype=torch.float32),
            **{k: sample[k] for k in ("subject", "sequence", "serial")},
            "frame": int(sample["frame"]),
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class Matches:
    """Correspondences of query pixels of view i in view j."""

    source: np.ndarray
    """(N, 2) int64 query pixels (x, y) in view i."""
    target: np.ndarray
    """(N, 2) int64 matched pixels (x, y) in view j; -1 where not `found`."""
    distance: np.ndarray
    """(N,) canonical distance of each match (metres); inf where not `found`."""
    found: np.ndarray
    """(N,) bool: the query had a canonical coordinate and a match within the limit."""


class CanonicalIndex:
    """A view's valid canonical coordinates in a k-d tree: built once, queried by many views."""

    def __init__(self, canonical: np.ndarray, mask: np.ndarray | None = None) -> None:
        """From an (H, W, 3) canonical map and an optional (H, W) validity mask."""
        canonical = np.asarray(canonical, dtype=np.float64)
        valid = np.isfinite(canonical).all(axis=-1)
        if mask is not None:
            valid &= np.asarray(mask, dtype=bool)
        rows, cols = np.nonzero(valid)
        self.pixels = np.stack([cols, rows], axis=1).astype(np.int64)
        self._tree = cKDTree(canonical[rows, cols])

    def query(
        self, points: np.ndarray, *, max_distance: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest valid pixel (N, 2), canonical distance (N,) and found flag (N,) of (N, 3)
        canonical points (eq. 2); no match beyond `max_distance` metres or for NaN points."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        finite = np.isfinite(points).all(axis=1)
        distance = np.full(len(points), np.inf)
        nearest = np.full(len(points), len(self.pixels))
        if len(self.pixels) and finite.any():
            limit = np.inf if max_distance is None else max_distance
            distance[finite], nearest[finite] = self._tree.query(
                points[finite], distance_upper_bound=limit, workers=-1
            )
        found = nearest < len(self.pixels)
        pixels = np.full((len(points), 2), -1, dtype=np.int64)
        pixels[found] = self.pixels[nearest[found]]
        return pixels, distance, found


def match_views(
    *,
    source: np.ndarray,
    target: np.ndarray | CanonicalIndex,
    source_mask: np.ndarray | None = None,
    pixels: np.ndarray | None = None,
    max_distance: float | None = None,
) -> Matches:
    """Matches in view j (`target`: its (H, W, 3) canonical map or a prepared index) of view
    i's pixels: `pixels` (N, 2) (x, y), or else every valid pixel of `source` (H, W, 3)
    (within `source_mask` (H, W) when given)."""
    source = np.asarray(source)
    index = target if isinstance(target, CanonicalIndex) else CanonicalIndex(target)
    if pixels is None:
        valid = np.isfinite(source).all(axis=-1)
        if source_mask is not None:
            valid &= np.asarray(source_mask, dtype=bool)
        rows, cols = np.nonzero(valid)
        pixels = np.stack([cols, rows], axis=1)
    pixels = np.asarray(pixels, dtype=np.int64).reshape(-1, 2)
    matched, distance, found = index.query(
        source[pixels[:, 1], pixels[:, 0]], max_distance=max_distance
    )
    return Matches(source=pixels, target=matched, distance=distance, found=found)
