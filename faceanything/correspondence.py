"""Shard samples as tensors, and dense correspondence by nearest neighbours in canonical space.

Paper eq. 2: pixel p of view i matches the pixel q of view j whose canonical coordinate
C_j(q) is nearest C_i(p) among j's valid pixels. Canonical maps are (H, W, 3) FLAME metres
with NaN (or a mask) where invalid; pixels are (x, y) = (column, row), centres on integers.

Fast path: build one `CanonicalIndex` per frame (confident pixels only, optionally every
stride-th pixel), then query it from many frames (`match_indices`, `match_pairs`,
`track_points`); frames run on a thread pool, since scipy's k-d tree works without the GIL.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch.utils.data import Dataset

from tasks.formats.shards import load_sample, read_index, read_manifest


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexConfig:
    """Which pixels of a canonical map enter its k-d tree (eq. 2's Omega_j)."""

    min_confidence: float | None = None
    """Leave out pixels whose canonical confidence is below this (None: no absolute limit)."""
    confidence_quantile: float = 0.0
    """Leave out pixels below this quantile of the map's own confidences (0 keeps all); a
    threshold relative to each frame, for models whose confidence scale is not known."""
    stride: int = 1
    """Spatial downsampling: keep every stride-th pixel along x and y (1 keeps all)."""
    leafsize: int = 16
    """Points per k-d tree leaf (scipy's default is 16; it changes speed, not results)."""


def confident_pixels(
    canonical: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    confidence: np.ndarray | None = None,
    config: IndexConfig = IndexConfig(),
) -> np.ndarray:
    """(H, W) bool: pixels with a finite canonical coordinate, inside `mask` (H, W), on the
    stride grid, and confident enough (`confidence` (H, W)) by `config`."""
    valid = np.isfinite(canonical).all(axis=-1)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    if config.stride > 1:
        grid = np.zeros_like(valid)
        grid[:: config.stride, :: config.stride] = True
        valid &= grid
    if confidence is not None and valid.any():
        confidence = np.asarray(confidence)
        limit = -np.inf if config.min_confidence is None else config.min_confidence
        if config.confidence_quantile > 0:
            limit = max(limit, np.quantile(confidence[valid], config.confidence_quantile))
        valid &= confidence >= limit
    return valid


class CanonicalIndex:
    """A view's valid canonical coordinates in a k-d tree: built once, queried by many views.

    `pixels` (N, 2) (x, y) and `points` (N, 3) are kept in the tree's leaf order, so that
    querying one index's points against another (`match_indices`) walks both trees coherently
    (neighbouring queries touch the same nodes: 10-20 % faster than raster order here).
    """

    def __init__(
        self,
        canonical: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        confidence: np.ndarray | None = None,
        config: IndexConfig = IndexConfig(),
    ) -> None:
        """From an (H, W, 3) canonical map, an optional (H, W) validity mask and optional
        (H, W) confidences, keeping the pixels `config` selects (`confident_pixels`)."""
        canonical = np.asarray(canonical)
        self.shape: tuple[int, int] = canonical.shape[:2]
        valid = confident_pixels(canonical, mask, confidence=confidence, config=config)
        rows, cols = np.nonzero(valid)
        points = canonical[rows, cols].astype(np.float64)
        self._tree = cKDTree(points, leafsize=config.leafsize)
        self._tree_pixels = np.stack([cols, rows], axis=1).astype(np.int64)
        order = self._tree.indices
        self.pixels = self._tree_pixels[order]
        self.points = points[order]

    def __len__(self) -> int:
        return len(self.pixels)

    def query(
        self, points: np.ndarray, *, max_distance: float | None = None, workers: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest valid pixel (N, 2), canonical distance (N,) and found flag (N,) of (N, 3)
        canonical points (eq. 2); no match beyond `max_distance` or for NaN points.
        `workers` threads share the queries (-1: every core)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        finite = np.isfinite(points).all(axis=1)
        distance = np.full(len(points), np.inf)
        nearest = np.full(len(points), len(self.pixels))
        if len(self.pixels) and finite.any():
            limit = np.inf if max_distance is None else max_distance
            query = points if finite.all() else points[finite]
            d, i = self._tree.query(query, distance_upper_bound=limit, workers=workers)
            distance[finite], nearest[finite] = d, i
        found = nearest < len(self.pixels)
        pixels = np.full((len(points), 2), -1, dtype=np.int64)
        pixels[found] = self._tree_pixels[nearest[found]]
        return pixels, distance, found


def match_views(
    *,
    source: np.ndarray,
    target: np.ndarray | CanonicalIndex,
    source_mask: np.ndarray | None = None,
    pixels: np.ndarray | None = None,
    max_distance: float | None = None,
    workers: int = 1,
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
        source[pixels[:, 1], pixels[:, 0]], max_distance=max_distance, workers=workers
    )
    return Matches(source=pixels, target=matched, distance=distance, found=found)


def match_indices(
    source: CanonicalIndex,
    target: CanonicalIndex,
    *,
    max_distance: float | None = None,
    workers: int = 1,
) -> Matches:
    """Eq. 2 for every pixel of `source`'s index in `target`'s: both prebuilt, queries in
    `source`'s leaf order (the fast path; `Matches.source` is in that order)."""
    matched, distance, found = target.query(
        source.points, max_distance=max_distance, workers=workers
    )
    return Matches(source=source.pixels, target=matched, distance=distance, found=found)


def dense_matches(matches: Matches, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) float32 target pixel (x, y) of every source pixel of an (H, W) view; NaN
    where it was not queried or not found (the form `faceanything.metrics` takes)."""
    out = np.full((*shape, 2), np.nan, dtype=np.float32)
    ok = matches.found
    out[matches.source[ok, 1], matches.source[ok, 0]] = matches.target[ok]
    return out


def build_indices(
    canonical: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    config: IndexConfig = IndexConfig(),
    workers: int = 1,
) -> list[CanonicalIndex]:
    """One index per frame of (T, H, W, 3) canonical maps (with optional (T, H, W) masks and
    confidences), built by `workers` threads (scipy builds and queries without the GIL)."""

    def build(t: int) -> CanonicalIndex:
        return CanonicalIndex(
            canonical[t],
            None if mask is None else mask[t],
            confidence=None if confidence is None else confidence[t],
            config=config,
        )

    return _map(build, range(len(canonical)), workers)


def match_pairs(
    indices: Sequence[CanonicalIndex],
    pairs: Sequence[tuple[int, int]],
    *,
    max_distance: float | None = None,
    workers: int = 1,
) -> list[Matches]:
    """`match_indices` for each (source, target) frame pair, pairs shared by `workers` threads."""
    return _map(
        lambda pair: match_indices(indices[pair[0]], indices[pair[1]], max_distance=max_distance),
        pairs,
        workers,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tracks:
    """Query points followed through T frames by eq. 2 (each frame matched to the queries'
    canonical coordinates directly, so errors do not accumulate)."""

    pixels: np.ndarray
    """(T, Q, 2) int64 pixel (x, y) of each query in each frame; -1 where not found."""
    distance: np.ndarray
    """(T, Q) canonical distance of each match; inf where not found."""
    found: np.ndarray
    """(T, Q) bool: the query has a match within the distance limit in that frame."""


def track_points(
    points: np.ndarray,
    indices: Sequence[CanonicalIndex],
    *,
    max_distance: float | None = None,
    workers: int = 1,
) -> Tracks:
    """Follow (Q, 3) canonical query points through the frames' indices, frames in parallel."""
    results = _map(lambda index: index.query(points, max_distance=max_distance), indices, workers)
    if not results:
        q = len(points)
        return Tracks(
            pixels=np.zeros((0, q, 2), np.int64),
            distance=np.zeros((0, q)),
            found=np.zeros((0, q), bool),
        )
    pixels, distance, found = (np.stack(r) for r in zip(*results, strict=True))
    return Tracks(pixels=pixels, distance=distance, found=found)


def _map(function: Callable, items: Iterable, workers: int) -> list:
    """`function` over `items` in order, on `workers` threads (1: in this thread; -1: one per
    core)."""
    items = list(items)
    if workers == -1:
        workers = os.cpu_count() or 1
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(function, items))
