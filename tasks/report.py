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
