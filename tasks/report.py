"""The subject report: what was found, built and dropped, with reasons (grows per stage)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def subject_report(*, subject: str, data: Path, inventory: pd.DataFrame) -> dict:
    """A JSON-ready summary of one subject's build."""
    sequences = {}
    for sequence, rows in inventory.groupby("sequence"):
        problems = sorted(set(rows.problem) - {""})
        sequences[str(sequence)] = {
            "frames": int(rows.frames.min()),
            "usable": not problems,
            "problems": problems,
        }
    return {"subject": subject, "data": str(data), "sequences": sequences}


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
