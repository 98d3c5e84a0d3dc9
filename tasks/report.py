"""The subject report: what was found, selected, reconstructed, tracked and kept, with the
reason for every drop and the time each stage took."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.selection import Selection

RECONSTRUCTION_COLUMNS = [
    "sequence",
    "frame",
    "criterion",
    "status",
    "reason",
    "registered",
    "sfm_mode",
    "dense_poses",
    "median_residual_mm",
    "sfm_seconds",
    "depth_seconds",
    "fusion_seconds",
    "fused_points",
    "uncorrected",
    "folder",
]
"""Columns of `reconstruction_table` (also when no timestep was selected)."""


def reconstruction_table(
    *, selected: pd.DataFrame, records: list[dict], folders: list[str]
) -> pd.DataFrame:
    """One row per selected timestep: kept or dropped with the reason, registration, timings."""
    rows = []
    for r, record, folder in zip(selected.itertuples(), records, folders, strict=True):
        sfm = record.get("sfm", {})
        rows.append(
            {
                "sequence": r.sequence,
                "frame": int(r.frame),
                "criterion": r.criterion,
                "status": record["status"],
                "reason": record["reason"],
                "registered": sfm.get("registered"),
                "sfm_mode": sfm.get("mode", ""),
                "dense_poses": record.get("dense_poses", ""),
                "median_residual_mm": sfm.get("median_residual_mm"),
                "sfm_seconds": sum((sfm.get("seconds") or {}).values()),
                "depth_seconds": record.get("mvs", {}).get("seconds"),
                "fusion_seconds": record.get("fusion", {}).get("seconds"),
                "fused_points": record.get("fusion", {}).get("points"),
                "uncorrected": record["uncorrected"],
                "folder": folder,
            }
        )
    return pd.DataFrame(rows, columns=RECONSTRUCTION_COLUMNS)


def timestep_table(*, reconstruction: pd.DataFrame, tracking: pd.DataFrame) -> pd.DataFrame:
    """One row per selected timestep through every stage: kept, or the stage that dropped it
    and why, with its figures and timings (`reconstruction_table` joined to the tracker's
    residuals)."""
    tracked = tracking.rename(columns={"kept": "tracked", "reason": "tracking_reason"})
    table = reconstruction.merge(tracked, on=["sequence", "frame"], how="left")
    registered = table.status == "ok"
    kept = registered & table.tracked.fillna(False).astype(bool)
    table["kept"] = kept
    table["dropped_at"] = np.where(kept, "", np.where(registered, "tracking", "reconstruction"))
    table["drop_reason"] = np.where(
        kept, "", np.where(registered, table.tracking_reason.fillna(""), table.reason)
    )
    return table.drop(columns=["status", "reason", "tracked", "tracking_reason"])


def _registration(timesteps: pd.DataFrame) -> str:
    """How the reconstructed timesteps got their poses, said only as it happened: " (16/16
    registered by SfM)" only when SfM's mapping registered all views of each; dense depth
    that fell back from the calibrated poses to SfM's is named."""
    done = timesteps[timesteps.dropped_at != "reconstruction"]
    if done.empty:
        return ""
    notes = []
    mapped = done[(done.sfm_mode == "mapping") & (done.registered == 16)]
    if len(mapped):
        notes.append(f"{len(mapped)} with 16/16 registered by SfM")
    if len(done) - len(mapped):
        notes.append(f"{len(done) - len(mapped)} on the calibrated poses without SfM mapping")
    fallback = done.dense_poses.astype(str).str.startswith("sfm (fallback")
    if fallback.any():
        notes.append(
            f"{int(fallback.sum())} with depth on SfM poses (calibrated triangulation failed)"
        )
    return f" ({'; '.join(notes)})"


def _drop_lines(table: pd.DataFrame) -> list[str]:
    """Lines "dropped at STAGE: N x REASON", the most frequent reason first."""
    dropped = table[~table.kept]
    counts = dropped.groupby(["dropped_at", "drop_reason"]).size()
    return [
        f"dropped at {stage}: {count} x {reason}"
        for (stage, reason), count in counts.sort_values(ascending=False).items()
    ]


def canonical_transfer(views: pd.DataFrame, max_distance: float) -> tuple[dict, str]:
    """Totals over the kept timesteps' canonical views tables (`tasks.canonical`): depth
    pixels transferred and dropped, and per distance band; and a line saying so."""
    totals = {
        name: int(views[name].sum())
        for name in views.columns
        if name.endswith("_pixels") or name.startswith("pixels_")
    }
    depth = totals.get("depth_pixels", 0)
    if not depth:
        return totals, "canonical maps: no depth pixel"
    line = (
        f"canonical maps: {totals['transferred_pixels'] / depth:.2%} of {depth:,} depth pixels "
        f"transferred, {totals['dropped_pixels'] / depth:.2%} farther than "
        f"{max_distance * 100:g} cm from the tracked surface dropped"
    )
    return totals, line


def subject_report(
    *,
    subject: str,
    data: Path,
    inventory: pd.DataFrame,
    selection: Selection,
    timesteps: pd.DataFrame,
    tracking_seconds: Mapping[str, float],
    shard: Path,
    shard_rows: int,
    canonical_views: pd.DataFrame,
    max_distance: float,
    head_model: str = "",
) -> dict:
    """A JSON-ready summary of one subject's build (`timesteps` from `timestep_table`,
    `canonical_views` the kept timesteps' canonical views tables, concatenated), with a few
    lines for people on top."""
    sequences = {}
    for sequence, rows in inventory.groupby("sequence"):
        problems = sorted(set(rows.problem) - {""})
        sequences[str(sequence)] = {"frames": int(rows.frames.min()), "problems": problems}
    reconstructed = int((timesteps.dropped_at != "reconstruction").sum())
    kept = int(timesteps.kept.sum())
    summary = [
        f"subject {subject}: {len(selection.table)} timesteps selected, "
        f"{reconstructed} reconstructed{_registration(timesteps)}, "
        f"{kept} tracked and kept; shard {shard} with {shard_rows} views",
        *([f"head model: {head_model}"] if head_model else []),
        *selection.warnings,
        *(f"signals {s}: {why}" for s, why in selection.failures.items()),
        *_drop_lines(timesteps),
        *(
            f"not colour-corrected: {count} of {len(timesteps)} timesteps ({why})"
            for why, count in timesteps.uncorrected[timesteps.uncorrected != ""]
            .value_counts()
            .items()
        ),
    ]
    canonical, canonical_line = canonical_transfer(canonical_views, max_distance)
    if kept:
        summary.append(canonical_line)
    registered = timesteps[timesteps.dropped_at != "reconstruction"]
    if len(registered):
        summary.append(
            f"per reconstructed timestep (median): SfM {registered.sfm_seconds.median():.1f} s, "
            f"depth {registered.depth_seconds.median():.1f} s, camera-centre residual "
            f"{registered.median_residual_mm.median():.2f} mm"
        )
    if not kept:
        summary.append(f"subject {subject}: no timestep kept, its shard is empty")
    return {
        "subject": subject,
        "summary": summary,
        "data": str(data),
        "sequences": sequences,
        "selected": len(selection.table),
        "reconstructed": reconstructed,
        "tracked": kept,
        "head_model": head_model,
        "dropped": {
            stage: [
                f"{r.sequence} frame {r.frame}: {r.drop_reason}"
                for r in timesteps[timesteps.dropped_at == stage].itertuples()
            ]
            for stage in ("reconstruction", "tracking")
        },
        "seconds": {
            "sfm": float(timesteps.sfm_seconds.sum()),
            "depth": float(timesteps.depth_seconds.fillna(0).sum()),
            "fusion": float(timesteps.fusion_seconds.fillna(0).sum()),
            **{f"tracking_{name}": float(value) for name, value in tracking_seconds.items()},
        },
        "shard": str(shard),
        "shard_views": shard_rows,
        "canonical": canonical,
    }
