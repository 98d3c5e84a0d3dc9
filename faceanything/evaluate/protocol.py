"""Evaluate a checkpoint on held-out shard samples: tables like the paper's 1-4.

    python -m faceanything.evaluate --checkpoint CKPT --shards DIR --split FILE [--out DIR]

Held-out rows are those the split file names (`faceanything.data.batches.read_split`). Each
(subject, camera) is a sequence, its timesteps in (sequence, frame) order; by default only the
frontal camera is used, as in the paper (4.2). Images are resized to the network's size and
predictions resized back (bilinear) to the stored image size, where everything is measured,
inside the shard's mask (the face region that has a canonical coordinate).

- Depth (table 1), two settings: "image" (each frame alone, scale aligned per image) and
  "video" (frames jointly in windows joined by the anchor frame, one scale per sequence);
  alignment by `metrics.align_scale` (median by default: our depth has no metric scale).
- Correspondence (tables 2-4) for frame pairs (t, t + margin): the true match of a pixel is
  eq. 2 on the true canonical maps (no truth where the nearest is farther than
  `gt_max_distance`: the point is not visible); the prediction is eq. 2 on the predicted maps.
  2D EPE and shares under 3/5/10 px; 3D EPE of the matched points (each unprojected with its
  depth: predicted and aligned, or true); forward-backward CCE; WPE of image t + margin warped
  into t. Pooled over the pairs' pixels (count-weighted means of the pairs' figures; the CCE
  median is such a mean of the pairs' medians).
- Baselines: "constant depth" (AbsRel of the median true depth) and "zero motion" (every pixel
  stays where it is; warping by the identity).

Writes results.csv and results.md (the tables), depth.csv (per image) and pairs.csv (per pair).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from faceanything.correspondence import CanonicalIndex, IndexConfig, dense_matches, match_views
from faceanything.data.batches import read_shards, read_split, split_rows
from faceanything.metrics import (
    ScaleAlignment,
    cce_summary,
    depth_errors,
    epe_summary,
    unproject,
    wpe,
)
from faceanything.model.frames import network_size, predict_frames
from faceanything.model.network import FaceAnything, load_checkpoint
from faceanything.outputs import write_text
from tasks.formats.shards import load_sample

Setting = Literal["image", "video"]
FRONTAL = "222200037"
COLUMNS = ("epe", "<3px", "<5px", "<10px", "epe3d", "cce_mean", "cce_median", "cce_<2px")
COLUMNS += ("wpe_l1", "wpe_grad", "wpe_ssim")
"""Correspondence columns in the paper's order (tables 2, 4, 3)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What is evaluated and how."""

    serials: tuple[str, ...] | None = (FRONTAL,)
    """Cameras evaluated (None: all); the paper uses the frontal one."""
    settings: tuple[Setting, ...] = ("image", "video")
    """Each frame alone, and frames jointly."""
    resolution: int = 504
    """Long side of the network input (multiple of 14)."""
    window: int = 16
    """Frames per forward in the "video" setting (anchor frame included)."""
    margins: tuple[int, ...] = (2, 8)
    """Temporal margins of the correspondence pairs (table 2)."""
    align: ScaleAlignment = "median"
    """Depth scale alignment (`metrics.align_scale`)."""
    gt_max_distance: float = 0.002
    """A true canonical match farther than this (m) means the point is not visible."""
    index: IndexConfig = IndexConfig()
    """Predicted pixels that may be matched (inside the mask)."""
    max_frames: int | None = None
    """Frames per sequence at most (None: all)."""
    device: str = "cpu"
    """Torch device of the network."""


def evaluate(
    *, net: FaceAnything, rows: pd.DataFrame, config: EvalConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-image depth rows and per-pair correspondence rows for the held-out `rows` (a shard
    index with a `shard` column, as `faceanything.data.batches.read_shards` gives)."""
    if config.serials is not None:
        rows = rows[rows.serial.isin(config.serials)]
    if rows.empty:
        raise ValueError(f"no held-out samples of cameras {config.serials}")
    depth, pairs = [], []
    for (subject, serial), group in rows.groupby(["subject", "serial"], sort=True):
        group = group.sort_values(["sequence", "frame"]).head(config.max_frames or len(group))
        samples = [load_sample(row.shard, row) for _, row in group.iterrows()]
        for setting in config.settings:
            pred = _predict(net, samples, setting, config)
            key = {"subject": subject, "serial": serial, "setting": setting}
            depth += _depth_rows(samples, pred, setting, config, key)
            pairs += _pair_rows(samples, pred, config, key)
    return pd.DataFrame(depth), pd.DataFrame(pairs)


def _predict(
    net: FaceAnything, samples: list[dict], setting: Setting, config: EvalConfig
) -> dict[str, np.ndarray]:
    """depth (T, H, W), canonical (T, H, W, 3), canonical_conf (T, H, W) at the stored size."""
    h, w = samples[0]["image"].shape[:2]
    size = network_size(w, h, config.resolution)
    images = np.stack([np.asarray(Image.fromarray(s["image"]).resize(size)) for s in samples])
    window = config.window if setting == "video" else 1
    pred = predict_frames(
        net, images, window=window, anchor=setting == "video", device=config.device, cameras=False
    )

    def up(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        t = t.permute(0, 3, 1, 2) if t.ndim == 4 else t[:, None]
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        return (t.permute(0, 2, 3, 1) if x.ndim == 4 else t[:, 0]).numpy()

    return {
        "depth": up(pred.depth),
        "canonical": up(pred.canonical),
        "canonical_conf": up(pred.canonical_conf),
    }


def _depth_rows(
    samples: list[dict], pred: dict, setting: Setting, config: EvalConfig, key: dict
) -> list[dict]:
    """One row per image: AbsRel and RMSE of the model and of a constant depth."""
    valid = np.stack([s["mask"] == 1 for s in samples]) & np.isfinite(_gt_depth(samples))
    gt = _gt_depth(samples)
    scale = None
    if setting == "video":  # one scale for the whole sequence
        scale = depth_errors(pred["depth"], gt, valid, align=config.align).scale
    rows = []
    for t, sample in enumerate(samples):
        d = pred["depth"][t] * (scale if scale is not None else 1.0)
        align = "none" if scale is not None else config.align
        ours = depth_errors(d, gt[t], valid[t], align=align)
        flat = depth_errors(np.ones_like(gt[t]), gt[t], valid[t], align="median")
        rows.append(
            {
                **key,
                "sequence": sample["sequence"],
                "frame": int(sample["frame"]),
                "abs_rel": ours.abs_rel,
                "rmse": ours.rmse,
                "scale": ours.scale * (scale or 1.0),
                "pixels": ours.pixels,
                "constant_abs_rel": flat.abs_rel,
                "constant_rmse": flat.rmse,
            }
        )
        pred["depth"][t] = d * ours.scale  # aligned, for 3D EPE
    return rows


def _gt_depth(samples: list[dict]) -> np.ndarray:
    return np.stack([s["depth"] for s in samples]).astype(np.float64)


def _pair_rows(samples: list[dict], pred: dict, config: EvalConfig, key: dict) -> list[dict]:
    """One row per (frame t, t + margin) pair and method: the pair's metric summaries."""
    masks = [s["mask"] == 1 for s in samples]
    gt_index = [CanonicalIndex(s["canonical"], m) for s, m in zip(samples, masks, strict=True)]
    pred_index = [
        CanonicalIndex(c, m, confidence=conf, config=config.index)
        for c, m, conf in zip(pred["canonical"], masks, pred["canonical_conf"], strict=True)
    ]
    rows = []
    for margin in config.margins:
        for a in range(len(samples) - margin):
            b = a + margin
            found = _pair(samples, pred, masks, gt_index, pred_index, a, b, config)
            for method, summary in found.items():
                rows.append({**key, "margin": margin, "method": method, "a": a, "b": b, **summary})
    return rows


def _pair(samples, pred, masks, gt_index, pred_index, a, b, config) -> dict[str, dict]:
    """Summaries of one pair for "model" and "zero motion"."""
    sa, sb = samples[a], samples[b]
    shape = masks[a].shape
    truth = match_views(
        source=sa["canonical"], target=gt_index[b], max_distance=config.gt_max_distance
    )
    seen = truth.found
    pixels, true_q = truth.source[seen], truth.target[seen].astype(np.float64)
    forward = match_views(source=pred["canonical"][a], target=pred_index[b], source_mask=masks[a])
    backward = match_views(source=pred["canonical"][b], target=pred_index[a], source_mask=masks[b])
    fwd, bwd = dense_matches(forward, shape), dense_matches(backward, shape)
    images = [s["image"].astype(np.float64) / 255.0 for s in (sa, sb)]
    true_3d = unproject(true_q, sb["depth"], sb["K"])
    out = {}
    for method, dense in (("model", fwd), ("zero motion", _identity(shape))):
        q = dense[pixels[:, 1], pixels[:, 0]].astype(np.float64)
        depth = pred["depth"][b] if method == "model" else np.asarray(sb["depth"], np.float64)
        summary = epe_summary(q, true_q)
        summary["epe3d"] = epe_summary(unproject(q, depth, sb["K"]), true_3d)["epe"]
        summary |= {k: v for k, v in wpe(*images, dense, masks[a]).items() if k != "count"}
        if method == "model":
            summary |= {k: v for k, v in cce_summary(fwd, bwd, masks[a]).items() if k != "count"}
        out[method] = summary
    return out


def _identity(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.stack([cols, rows], axis=-1).astype(np.float32)


def summarise(depth: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The results table: one row per (setting, method, margin); depth rows have margin 0.
    Depth: mean over images; correspondence: pooled over pixels (count-weighted means)."""
    rows = []
    for setting, group in depth.groupby("setting", sort=False):
        for method, prefix in (("model", ""), ("constant depth", "constant_")):
            rows.append(
                {
                    "setting": setting,
                    "method": method,
                    "margin": 0,
                    "abs_rel": group[f"{prefix}abs_rel"].mean(),
                    "rmse": group[f"{prefix}rmse"].mean(),
                    "images": len(group),
                }
            )
    if not pairs.empty:
        metrics = [c for c in COLUMNS if c in pairs.columns]
        for (setting, method, margin), group in pairs.groupby(
            ["setting", "method", "margin"], sort=False
        ):
            weights = group["count"].to_numpy()
            row = {"setting": setting, "method": method, "margin": margin, "pairs": len(group)}
            for m in metrics:
                values = group[m].to_numpy(dtype=np.float64)
                ok = np.isfinite(values) & (weights > 0)
                row[m] = np.average(values[ok], weights=weights[ok]) if ok.any() else np.nan
            row["pixels"] = int(weights.sum())
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The results as Markdown tables: depth, then correspondence per margin."""
    parts = ["# Evaluation\n"]
    depth = table[table.margin == 0].dropna(axis=1, how="all")
    if not depth.empty:
        parts += ["## Depth (scale-aligned; RMSE in metres)\n", _md(depth.drop(columns="margin"))]
    for margin, group in table[table.margin > 0].groupby("margin"):
        group = group.dropna(axis=1, how="all").drop(
            columns=["margin", "abs_rel", "rmse"], errors="ignore"
        )
        parts += [f"## Correspondence, margin = {margin}\n", _md(group)]
    return "\n".join(parts)


def _md(frame: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float | np.floating):
            if not np.isfinite(v):
                return "nan"
            return str(int(v)) if v.is_integer() and abs(v) >= 1 else f"{v:.4g}"
        return str(v)

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def run(
    *,
    checkpoint: str | os.PathLike | FaceAnything,
    shards: Sequence[str | os.PathLike],
    split: str | os.PathLike | None,
    out: str | os.PathLike,
    config: EvalConfig = EvalConfig(),
) -> pd.DataFrame:
    """Evaluate and write the files the module docstring lists; returns the results table."""
    rows = read_shards(list(shards))
    _, held = split_rows(rows, read_split(split))
    if held.empty:
        raise ValueError(f"the split {split} holds out no sample of {list(map(str, shards))}")
    net = checkpoint if isinstance(checkpoint, FaceAnything) else load_checkpoint(checkpoint)
    depth, pairs = evaluate(net=net.to(config.device), rows=held, config=config)
    table = summarise(depth, pairs)
    out = Path(out)
    write_text(out / "depth.csv", depth.to_csv(index=False))
    write_text(out / "pairs.csv", pairs.to_csv(index=False))
    write_text(out / "results.csv", table.to_csv(index=False))
    write_text(out / "results.md", markdown(table))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m faceanything.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="CKPT may run pickled code when loaded (only a file from a source you trust)",
    )
    parser.add_argument("--shards", type=Path, nargs="+", required=True)
    parser.add_argument("--split", type=Path, required=True, help="split file (held-out part)")
    parser.add_argument("--out", type=Path, default=Path("eval"))
    parser.add_argument("--serials", nargs="*", default=[FRONTAL], help="none given: all")
    parser.add_argument("--settings", nargs="+", default=list(EvalConfig.settings))
    parser.add_argument("--resolution", type=int, default=EvalConfig.resolution)
    parser.add_argument("--window", type=int, default=EvalConfig.window)
    parser.add_argument("--margins", type=int, nargs="+", default=list(EvalConfig.margins))
    parser.add_argument("--align", choices=["median", "lstsq", "none"], default="median")
    parser.add_argument("--max-frames", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    config = EvalConfig(
        serials=tuple(args.serials) or None,
        settings=tuple(args.settings),
        resolution=args.resolution,
        window=args.window,
        margins=tuple(args.margins),
        align=args.align,
        max_frames=args.max_frames,
        device=args.device,
    )
    try:
        net = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
        table = run(
            checkpoint=net,
            shards=args.shards,
            split=args.split,
            out=args.out,
            config=config,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(markdown(table))
    print(f"written to {args.out}")
    return 0
