"""The subject report: what was found, selected, reconstructed, tracked and kept, with the
reason for every drop and the time each stage took."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.selection import Selection


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
                "median_residual_mm": sfm.get("median_residual_mm"),
                "sfm_seconds": sum((sfm.get("seconds") or {}).values()),
                "depth_seconds": record.get("mvs", {}).get("seconds"),
                "fused_points": record.get("fusion", {}).get("points"),
                "folder": folder,
            }
        )
    return pd.DataFrame(rows)


def _drops(table: pd.DataFrame, kept: pd.Series) -> list[str]:
    return [f"{r.sequence} frame {r.frame}: {r.reason}" for r in table[~kept].itertuples()]


def subject_report(
    *,
    subject: str,
    data: Path,
    inventory: pd.DataFrame,
    selection: Selection,
    reconstruction: pd.DataFrame,
    tracking: pd.DataFrame,
    shard: Path,
    shard_rows: int,
) -> dict:
    """A JSON-ready summary of one subject's build, with a few lines for people on top."""
    sequences = {}
    for sequence, rows in inventory.groupby("sequence"):
        problems = sorted(set(rows.problem) - {""})
        sequences[str(sequence)] = {"frames": int(rows.frames.min()), "problems": problems}
    registered = reconstruction.status == "ok"
    tracked = tracking.kept.astype(bool) if len(tracking) else pd.Series(dtype=bool)
    summary = [
        f"subject {subject}: {len(selection.table)} timesteps selected, "
        f"{int(registered.sum())} reconstructed (16/16 registered), "
        f"{int(tracked.sum())} tracked and kept; shard {shard} with {shard_rows} views",
        *selection.warnings,
        *(f"signals {s}: {why}" for s, why in selection.failures.items()),
    ]
    return {
        "subject": subject,
        "summary": summary,
        "data": str(data),
        "sequences": sequences,
        "selected": len(selection.table),
        "reconstructed": int(registered.sum()),
        "tracked": int(tracked.sum()),
        "dropped": {
            "reconstruction": _drops(reconstruction, registered),
            "tracking": _drops(tracking, tracked) if len(tracking) else [],
        },
        "seconds": {
            "sfm": float(reconstruction.sfm_seconds.sum()),
            "depth": float(reconstruction.depth_seconds.fillna(0).sum()),
        },
        "shard": str(shard),
        "shard_views": shard_rows,
    }
