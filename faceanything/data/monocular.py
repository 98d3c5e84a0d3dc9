"""Stage-1 data (paper 3.2, 4.1): single images with depth and a foreground mask, for monocular
depth pretraining with the masked L1 loss before the canonical head is trained.

Two sources, mixed in one list of items:

- DAViD's SynthHuman release (`download_data.py TARGET` unzips into `TARGET/SynthHuman/`), one
  flat folder of samples `rgb_{i:07d}.png`, `alpha_{i:07d}.png` (foreground), `depth_{i:07d}.exr`
  (absolute z-depth in centimetres, one channel), `normal_{i:07d}.exr` and `cam_{i:07d}.txt`
  (3x3 K in pixels, `np.loadtxt`). Samples 0-98039 are faces (then full and upper bodies); we
  take faces only unless asked. Depth counts where alpha > 127 (the release's own viewer's
  threshold).
- views of shards (the pipeline's, or synthetic identities written as shards), each view alone.

Batch k draws `batch_size` items with a generator seeded by (seed, k), like the stage-2 batches,
so the stream is reproducible, resumable and shared out between ranks by k. A batch:

    images [B, 1, 3, H, W] in [0, 1]; depth [B, 1, H, W] normalised per image (DA3's scale:
    mean norm of the valid points 1), 0 where invalid; depth_valid [B, 1, H, W]; scale [B];
    strategy "monocular"; k; corrupt (unreadable files, skipped).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import IterableDataset, get_worker_info

from faceanything.data.batches import DataConfig, bucket_sizes
from faceanything.data.jitter import co_jitter
from faceanything.geometry import fit_view, normalise_scene
from tasks.formats.exr import read_exr
from tasks.formats.shards import load_sample

log = logging.getLogger(__name__)

DAVID_FACES = 98_040
"""SynthHuman's first samples, 0 to 98039, are faces."""
ALPHA_THRESHOLD = 127
"""Foreground where alpha (0-255) is above this."""
_RGB = re.compile(r"rgb_(\d{7})\.png")

Item = tuple[str, object, object]
"""("david", folder, index) or ("shard", shard folder, index row)."""


def david_items(folder: str | os.PathLike, *, faces_only: bool = True) -> list[Item]:
    """Every complete sample of a SynthHuman folder (the folder itself or its `SynthHuman/`)."""
    folder = Path(folder)
    if (folder / "SynthHuman").is_dir():
        folder = folder / "SynthHuman"
    found = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _RGB.fullmatch(p.name)))
    needed = ("alpha_{:07d}.png", "depth_{:07d}.exr", "cam_{:07d}.txt")
    items = [
        ("david", folder, i)
        for i in found
        if (not faces_only or i < DAVID_FACES)
        and all((folder / name.format(i)).is_file() for name in needed)
    ]
    if not items:
        raise FileNotFoundError(f"no SynthHuman sample (rgb_/alpha_/depth_/cam_) in {folder}")
    return items


def shard_items(rows: pd.DataFrame) -> list[Item]:
    """Each shard view (a `read_shards` row) as a monocular item."""
    return [("shard", Path(row["shard"]), row) for _, row in rows.iterrows()]


def read_david(folder: Path, index: int) -> dict[str, np.ndarray]:
    """One SynthHuman sample as a shard-like dict: image (H, W, 3) uint8 RGB, depth (H, W)
    metres (NaN outside the foreground), mask (H, W) float 1/0, K (3, 3), canonical NaN."""
    stem = f"{index:07d}"
    image = cv2.cvtColor(cv2.imread(str(folder / f"rgb_{stem}.png")), cv2.COLOR_BGR2RGB)
    alpha = cv2.imread(str(folder / f"alpha_{stem}.png"), cv2.IMREAD_GRAYSCALE)
    depth = next(iter(read_exr(folder / f"depth_{stem}.exr").values()))
    depth = depth[..., 0] if depth.ndim == 3 else depth
    foreground = (alpha > ALPHA_THRESHOLD) & np.isfinite(depth) & (depth > 0)
    h, w = depth.shape
    return {
        "image": image,
        "depth": np.where(foreground, depth / 100.0, np.nan).astype(np.float32),
        "mask": foreground.astype(np.float32),
        "canonical": np.full((h, w, 3), np.nan, np.float32),
        "K": np.loadtxt(folder / f"cam_{stem}.txt").reshape(3, 3),
    }


def _read(item: Item) -> dict[str, np.ndarray]:
    kind, where, which = item
    if kind == "david":
        return read_david(where, which)
    sample = load_sample(where, which)
    sample["mask"] = np.isfinite(sample["depth"]).astype(np.float32)  # centre on the depth
    return sample


def make_monocular_batch(
    items: Sequence[Item], config: DataConfig, k: int, *, batch_size: int
) -> dict[str, object]:
    """Batch k (module docstring); `images` None when every drawn file was unreadable."""
    rng = np.random.default_rng([config.seed, k])
    buckets = bucket_sizes(config)
    bucket = buckets[int(rng.integers(len(buckets)))]
    chosen = rng.choice(len(items), size=batch_size, replace=batch_size > len(items))
    made, corrupt = [], []
    for b, i in enumerate(chosen):
        try:
            sample = _read(items[int(i)])
        except Exception as err:  # any unreadable file: name it, go on
            corrupt.append(f"{items[int(i)][1]} #{i}: {err}")
            log.warning("skipped unreadable sample: %s", corrupt[-1])
            continue
        crop = np.random.default_rng([config.seed, k, b]) if config.augment else None
        view = fit_view(sample, size=bucket, rng=crop)
        image = torch.from_numpy(view.image).permute(2, 0, 1)[None] / 255.0
        if config.augment:
            seed = int(np.random.default_rng([config.seed, k, b, 1]).integers(2**62))
            image = co_jitter(image, config.jitter, torch.Generator().manual_seed(seed))
        depth = torch.from_numpy(view.depth)[None]
        valid = torch.isfinite(depth) & (depth > 0)
        K = torch.from_numpy(view.K)[None]
        depth, _, scale = normalise_scene(depth, valid, K, torch.eye(4)[None].double())
        made.append({"images": image.float(), "depth": depth, "depth_valid": valid, "scale": scale})
    batch: dict[str, object] = {"k": k, "strategy": "monocular", "corrupt": corrupt}
    if not made:
        return batch | {"images": None}
    return batch | {name: torch.stack([m[name] for m in made]) for name in made[0]}


class MonocularBatches(IterableDataset):
    """Batches start, start + every, ... of `items` (as `ShardBatches`: `every` > 1 gives one
    rank its share; worker w of n makes every n-th)."""

    def __init__(
        self,
        items: Sequence[Item],
        config: DataConfig,
        *,
        batch_size: int,
        start: int = 0,
        every: int = 1,
    ) -> None:
        super().__init__()
        self.items, self.config, self.batch_size = list(items), config, batch_size
        self.start, self.every = start, every

    def __iter__(self) -> Iterator[dict[str, object]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for n, k in enumerate(itertools.count(self.start, self.every)):
            if n % workers == worker:
                yield make_monocular_batch(self.items, self.config, k, batch_size=self.batch_size)
