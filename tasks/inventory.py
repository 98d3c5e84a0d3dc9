"""What a subject folder holds, checked before any heavy stage runs.

Calibration problems are fatal for the subject (nothing downstream can be right without
it) and raise with the file named. A missing or unreadable camera video only marks that
(sequence, camera) as unusable, with the reason, so the other sequences go on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from tasks.formats import nersemble, video
from tasks.formats.cameras import SERIALS


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inventory:
    subject: str
    """Subject id."""
    table: pd.DataFrame
    """One row per (sequence, serial): layout, frames, problem ('' when usable)."""


def _count(subject: nersemble.Subject, *, sequence: str, serial: str) -> tuple[str, int, str]:
    """(layout, frame count, problem) for one camera of one sequence."""
    try:
        layout = nersemble.sequence_layout(subject.directory, sequence=sequence)
        frames = nersemble.frame_indices(subject, sequence=sequence, serial=serial)
    except (FileNotFoundError, video.VideoError, nersemble.DataError) as err:
        return "", 0, str(err)
    return layout, len(frames), "" if frames else "no frames"


def take_inventory(*, subject_dir: Path, subject: str) -> Inventory:
    """Load the calibration (raising on a bad file) and count every camera's frames."""
    loaded = nersemble.load_subject(subject_dir)
    rows = []
    for sequence in nersemble.list_sequences(subject_dir):
        for serial in SERIALS:
            layout, frames, problem = _count(loaded, sequence=sequence, serial=serial)
            rows.append(
                dict(
                    sequence=sequence, serial=serial, layout=layout, frames=frames, problem=problem
                )
            )
    table = pd.DataFrame(rows, columns=["sequence", "serial", "layout", "frames", "problem"])
    if table.empty:
        raise FileNotFoundError(f"{subject_dir}: no sequences to build (only BACKGROUND?)")
    return Inventory(subject=subject, table=table)
