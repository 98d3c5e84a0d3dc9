"""A contact sheet of a synthetic set, for people: identities side by side with their truth."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tasks.formats.cameras import FRONTAL_SERIAL
from tasks.formats.shards import load_sample, read_index
from tasks.pictures.shard import canonical_colors
from tasks.pictures.stages import save_figure

ROWS = ("frontal, first frame", "another view, last frame", "canonical map", "normal map")
"""What each row of the sheet shows (the maps are the frontal view's)."""


def _pick(index: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(frontal view of the first frame, the view of the last frame farthest from it)."""
    first = index[index.frame == index.frame.min()]
    frontal = first[first.serial == FRONTAL_SERIAL].iloc[0]
    last = index[index.frame == index.frame.max()]
    other = last[last.serial != FRONTAL_SERIAL]
    return frontal, (other.iloc[len(other) // 2] if len(other) else last.iloc[0])


def contact_sheet(*, dataset: str | os.PathLike, path: str | os.PathLike, count: int = 8) -> Path:
    """PNG of the first `count` identities of a synthetic set (columns), rows as in `ROWS`;
    each column is titled with the identity's skin type, hair and eye colour."""
    dataset = Path(dataset)
    table = pd.read_parquet(dataset / "identities.parquet").head(count)
    fig, axes = plt.subplots(len(ROWS), len(table), figsize=(2.2 * len(table), 12), squeeze=False)
    low, high = np.array([-0.1, -0.17, -0.12]), np.array([0.1, 0.2, 0.14])
    for column, row in enumerate(table.itertuples()):
        shard = dataset / row.name
        frontal, other = (load_sample(shard, r) for r in _pick(read_index(shard)))
        panels = (
            frontal["image"],
            other["image"],
            canonical_colors(frontal["canonical"], low=low, high=high),
            np.nan_to_num(frontal["normal"] * 0.5 + 0.5, nan=1.0).clip(0, 1),
        )
        for ax, image in zip(axes[:, column], panels, strict=True):
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
        held = " (held out)" if row.held_out else ""
        axes[0, column].set_title(
            f"{row.name}{held}\nFitzpatrick {row.fitzpatrick}, eyes {row.eye_color}\n"
            f"{row.hair_color} {row.hair}",
            fontsize=8,
        )
    for ax, label in zip(axes[:, 0], ROWS, strict=True):
        ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"synthetic identities: {dataset.name}")
    fig.tight_layout()
    return save_figure(fig, Path(path))
