"""Training batches from shards (paper 3.1, 4.1, B.1).

Batch k alternates the two sampling strategies of 3.1: multi-view (S views of one timestep)
and temporal (one camera across S timesteps of a subject), S in 2..16, as many sequences as
fit in `max_images`, all at one resolution bucket of B.1. Every choice of batch k comes
from a generator seeded with (seed, k), so a batch depends on nothing but k: workers share
batches by k, and resuming at batch k repeats the stream exactly.

A batch (`make_batch`), B sequences of S views at H x W, ray maps at h x w = 8/14 of it:

    images          [B, S, 3, H, W] float in [0, 1] (co-jittered when augmenting)
    depth           [B, S, H, W]    z-depth in the sequence's normalised scale (0 where invalid)
    ray             [B, S, h, w, 6] direction R^T K^-1 (u, v, 1) and camera centre, first
                                    camera's frame, normalised scale (`geometry.ray_targets`)
    canonical       [B, S, H, W, 3] FLAME metres minus the canonical centre (0 where invalid)
    *_valid         bool masks of the three; K [B, S, 3, 3]; world_2_cam [B, S, 4, 4]
                    (from the first camera, scaled); scale [B] (normalised per metre)
    keys            B lists of S (subject, sequence, frame, serial); strategy; k; corrupt
                    (files that could not be read, each skipped, named)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from faceanything.data.jitter import JitterConfig, co_jitter
from faceanything.geometry import PATCH, fit_view, normalise_scene, ray_size, ray_targets
from tasks.formats.shards import INDEX_FILE, MANIFEST_FILE, load_sample, read_index, read_manifest

log = logging.getLogger(__name__)

Strategy = Literal["multiview", "temporal"]
BUCKETS = ((504, 504), (378, 504), (336, 504), (280, 504), (504, 336), (504, 756), (504, 672))
"""B.1's training resolutions as (width, height): mostly portrait, like NeRSemble's views."""
_KEY = ("subject", "sequence", "frame", "serial")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """How batches are drawn and shaped."""

    buckets: tuple[tuple[int, int], ...] = BUCKETS
    """Resolutions (width, height) a batch is drawn from, before `scale`."""
    scale: float = 1.0
    """Factor on every bucket, each side rounded to a multiple of 14 (CPU runs: e.g. 0.25)."""
    max_images: int = 48
    """Images per batch at most (B * S)."""
    views: tuple[int, int] = (2, 16)
    """Least and most images per sequence (S)."""
    strategies: tuple[Strategy, ...] = ("multiview", "temporal")
    """Strategies taken in turn by batch index."""
    augment: bool = True
    """Co-jitter and random crops (off for evaluation)."""
    jitter: JitterConfig = dataclasses.field(default_factory=JitterConfig)
    """Photometric augmentation."""
    seed: int = 0
    """Seed of every batch's choices (with the batch index)."""


def bucket_sizes(config: DataConfig) -> list[tuple[int, int]]:
    """The buckets (W, H) after `scale`, sides multiples of 14 (at least 28)."""
    return [
        tuple(max(2 * PATCH, round(side * config.scale / PATCH) * PATCH) for side in size)
        for size in config.buckets
    ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Split:
    """Which subjects and timesteps are held out of training."""

    subjects: tuple[str, ...] = ()
    """Held-out subjects (e.g. the paper's test subjects, B.2)."""
    timesteps: tuple[tuple[str, str, int], ...] = ()
    """Held-out (subject, sequence, frame) timesteps."""
    every: int = 0
    """Also hold out every n-th timestep of each subject in (sequence, frame) order (0: none),
    for a dataset with one subject, like the sample."""


def read_split(path: str | os.PathLike | None) -> Split:
    """A split file: `test_subjects` (manifests/eval_split.json), optional `holdout_timesteps`
    {subject: [[sequence, frame], ...]} and `holdout_every`."""
    if path is None:
        return Split()
    data = json.loads(Path(path).read_text())
    timesteps = tuple(
        (str(subject), str(sequence), int(frame))
        for subject, listed in data.get("holdout_timesteps", {}).items()
        for sequence, frame in listed
    )
    return Split(
        subjects=tuple(str(s) for s in data.get("test_subjects", ())),
        timesteps=timesteps,
        every=int(data.get("holdout_every", 0)),
    )


def read_shards(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per view of every shard under `paths` (shards, or dataset folders with a
    manifest, or folders of shards), with a `shard` column."""
    frames = []
    for shard in _shard_folders(paths):
        index = read_index(shard)
        frames.append(index.assign(shard=str(shard)))
    if not frames:
        raise FileNotFoundError(f"no shards in {[str(p) for p in paths]}")
    rows = pd.concat(frames, ignore_index=True)
    rows["subject"] = rows["subject"].astype(str)
    return rows


def _shard_folders(paths: Sequence[str | os.PathLike]) -> list[Path]:
    found = []
    for path in map(Path, paths):
        if (path / MANIFEST_FILE).is_file():
            found += [info.path for info in read_manifest(path)]
        elif (path / INDEX_FILE).is_file():
            found.append(path)
        else:
            found += sorted(p.parent for p in path.glob(f"*/{INDEX_FILE}"))
    return found


def split_rows(rows: pd.DataFrame, split: Split) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, held-out rows) of a shard index."""
    keys = list(zip(rows.subject, rows.sequence, rows.frame.astype(int), strict=True))
    held = rows["subject"].isin(split.subjects).to_numpy().copy()
    held |= np.array([key in set(split.timesteps) for key in keys], dtype=bool)
    if split.every:
        steps = rows[["subject", "sequence", "frame"]].drop_duplicates()
        steps = steps.sort_values(["subject", "sequence", "frame"])
        order = steps.groupby("subject").cumcount()
        chosen = steps[order % split.every == split.every - 1]
        every = set(zip(chosen.subject, chosen.sequence, chosen.frame.astype(int), strict=True))
        held |= np.array([key in every for key in keys], dtype=bool)
    return rows[~held].reset_index(drop=True), rows[held].reset_index(drop=True)


def timestep_list(rows: pd.DataFrame) -> dict[str, list[list[object]]]:
    """{subject: [[sequence, frame], ...]} of the rows' timesteps (for a run's record)."""
    steps = rows[["subject", "sequence", "frame"]].drop_duplicates()
    steps = steps.sort_values(["subject", "sequence", "frame"])
    out: dict[str, list[list[object]]] = {}
    for subject, sequence, frame in steps.itertuples(index=False):
        out.setdefault(subject, []).append([sequence, int(frame)])
    return out


class BatchPlanner:
    """Which views batch k holds: a pure function of (seed, k)."""

    def __init__(self, rows: pd.DataFrame, config: DataConfig) -> None:
        self.rows, self.config = rows, config
        self.groups: dict[Strategy, list[np.ndarray]] = {
            "multiview": _groups(rows, ["subject", "sequence", "frame"]),
            "temporal": _groups(rows, ["subject", "serial"]),
        }
        self.strategies = [s for s in config.strategies if self.groups[s]]
        if not self.strategies:
            raise ValueError(f"no sequence of 2+ views for strategies {config.strategies}")

    def plan(self, k: int) -> tuple[Strategy, tuple[int, int], int, list[np.ndarray]]:
        """(strategy, bucket (W, H), S, B groups' row numbers in random order: the first S
        readable of each make a sequence)."""
        rng = np.random.default_rng([self.config.seed, k])
        strategy = self.strategies[k % len(self.strategies)]
        groups = self.groups[strategy]
        low, high = self.config.views
        longest = max(len(g) for g in groups)
        S = min(int(rng.integers(low, high + 1)), longest, self.config.max_images)
        fitting = [g for g in groups if len(g) >= S]
        count = max(1, self.config.max_images // S)
        chosen = rng.choice(len(fitting), size=count, replace=count > len(fitting))
        sequences = [rng.permutation(fitting[i]) for i in chosen]
        buckets = bucket_sizes(self.config)
        bucket = buckets[int(rng.integers(len(buckets)))]
        return strategy, bucket, S, sequences


def _groups(rows: pd.DataFrame, by: list[str]) -> list[np.ndarray]:
    """Row numbers of each group of 2+ rows (temporal: one row per timestep)."""
    groups = []
    for _, group in rows.groupby(by, sort=True):
        if len(group) >= 2:
            groups.append(group.index.to_numpy())
    return groups


def make_batch(
    rows: pd.DataFrame,
    planner: BatchPlanner,
    k: int,
    *,
    canonical_center: Sequence[float] = (0.0, 0.0, 0.0),
) -> dict[str, object]:
    """Batch k (module docstring). Unreadable files are skipped (logged, listed in `corrupt`)
    and replaced by the next view of the group; a sequence left short is dropped, and a batch
    left empty has `images` None."""
    config = planner.config
    strategy, bucket, S, sequences = planner.plan(k)
    corrupt: list[str] = []
    made = []
    for b, members in enumerate(sequences):
        views, keys = [], []
        for i in members:
            try:
                sample = load_sample(rows.shard[i], rows.loc[i])
            except Exception as err:  # any unreadable file: name it, go on
                corrupt.append(f"{rows.shard[i]}/{rows.image_file[i]}: {err}")
                log.warning("skipped unreadable sample: %s", corrupt[-1])
                continue
            crop_rng = (
                np.random.default_rng([config.seed, k, b, int(i)]) if config.augment else None
            )
            views.append((fit_view(sample, size=bucket, rng=crop_rng), sample))
            keys.append(tuple(sample[name] for name in _KEY))
            if len(views) == S:
                break
        if len(views) == S:
            seed = np.random.default_rng([config.seed, k, b]).integers(2**62)
            generator = torch.Generator().manual_seed(int(seed))
            made.append(_sequence(views, config, generator, canonical_center) | {"keys": keys})
    batch: dict[str, object] = {"k": k, "strategy": strategy, "corrupt": corrupt}
    if not made:
        return batch | {"images": None, "keys": []}
    for name in made[0]:
        values = [m[name] for m in made]
        batch[name] = values if name == "keys" else torch.stack(values)
    return batch


def _sequence(views, config: DataConfig, generator, centre) -> dict[str, torch.Tensor]:
    """Tensors of one sequence of fitted views (normalised, with ray targets)."""
    fitted = [v for v, _ in views]
    images = torch.stack([torch.from_numpy(v.image).permute(2, 0, 1) for v in fitted]) / 255.0
    if config.augment:
        images = co_jitter(images, config.jitter, generator)
    depth = torch.stack([torch.from_numpy(v.depth) for v in fitted])
    depth_valid = torch.isfinite(depth) & (depth > 0)
    K = torch.from_numpy(np.stack([v.K for v in fitted]))
    world_2_cam = torch.from_numpy(np.stack([np.asarray(s["world_2_cam"]) for _, s in views]))
    depth, poses, scale = normalise_scene(depth, depth_valid, K, world_2_cam)
    H, W = depth.shape[-2:]
    h, w = ray_size(H, W)
    canonical = torch.from_numpy(np.stack([v.canonical for v in fitted]))
    canonical_valid = torch.from_numpy(np.stack([v.mask for v in fitted]))
    canonical = canonical - torch.tensor(centre, dtype=canonical.dtype)
    return {
        "images": images.float(),
        "depth": depth,
        "depth_valid": depth_valid,
        "ray": ray_targets(K, poses, image=(H, W), rays=(h, w)),
        "ray_valid": torch.ones(len(fitted), h, w, dtype=torch.bool),
        "canonical": torch.where(canonical_valid[..., None], canonical, 0.0).float(),
        "canonical_valid": canonical_valid,
        "K": K.float(),
        "world_2_cam": poses,
        "scale": scale,
    }


class ShardBatches(IterableDataset):
    """Batches start, start + every, ... (below `stop`) of `rows`: `every` > 1 gives one
    training process its share (rank r of W: start r, every W). Worker w of n makes the n-th
    batches from the w-th on, so a DataLoader returns them in order."""

    def __init__(
        self,
        rows: pd.DataFrame,
        config: DataConfig,
        *,
        start: int = 0,
        stop: int | None = None,
        every: int = 1,
        canonical_center: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> None:
        super().__init__()
        self.rows, self.planner = rows, BatchPlanner(rows, config)
        self.start, self.stop, self.every = start, stop, every
        self.centre = tuple(canonical_center)

    def __iter__(self) -> Iterator[dict[str, object]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if self.stop is None:
            steps = itertools.count(self.start, self.every)
        else:
            steps = range(self.start, self.stop, self.every)
        for n, k in enumerate(steps):
            if n % workers == worker:
                yield make_batch(self.rows, self.planner, k, canonical_center=self.centre)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def batch_loader(dataset: ShardBatches, *, workers: int = 0) -> DataLoader:
    """A DataLoader streaming a dataset's batches from `workers` processes (0: in this one)."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )
