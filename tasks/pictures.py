"""Pictures a person would rather look at than tables, one function per stage."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tasks import nersemble, selection  # noqa: E402

_CRITERION_COLOURS = {selection.BLENDSHAPE: "tab:orange", selection.POSE: "tab:green"}


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write a PNG atomically and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _pca_2d(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def selection_picture(
    *,
    subject: nersemble.Subject,
    signals: pd.DataFrame,
    selection: selection.Selection,
    serial: str,
    downsample_factor: int,
    path: Path,
    columns: int = 8,
) -> Path:
    """Chosen frames of the frontal camera in a grid, labelled with their criterion, beside a
    PCA of every frame's blendshapes with the chosen ones marked."""
    chosen = selection.table
    rows = max(1, -(-len(chosen) // columns))
    fig = plt.figure(figsize=(2 * columns + 6, 2.6 * rows + 0.5))
    grid = fig.add_gridspec(rows, columns + 3)
    for i, r in enumerate(chosen.itertuples()):
        frames = nersemble.read_frames(
            subject,
            sequence=r.sequence,
            serial=serial,
            frames=[r.frame],
            downsample=downsample_factor,
        )
        ax = fig.add_subplot(grid[i // columns, i % columns])
        if r.frame in frames.images:
            ax.imshow(frames.images[r.frame])
        ax.set_title(f"{r.sequence}\n#{r.frame} {r.criterion}", fontsize=7)
        for spine in ax.spines.values():
            spine.set_color(_CRITERION_COLOURS[r.criterion])
            spine.set_linewidth(3)
        ax.set_xticks([])
        ax.set_yticks([])
    valid = signals[signals.detected.astype(bool)].reset_index(drop=True)
    ax = fig.add_subplot(grid[:, columns:])
    if len(valid) >= 2:
        xy = _pca_2d(np.stack(valid.blendshapes.to_numpy()))
        ax.scatter(xy[:, 0], xy[:, 1], s=6, c="lightgrey", label="all frames")
        key = valid.set_index(["sequence", "frame"]).index
        for criterion, colour in _CRITERION_COLOURS.items():
            picked = chosen[chosen.criterion == criterion]
            idx = key.get_indexer(pd.MultiIndex.from_frame(picked[["sequence", "frame"]]))
            ax.scatter(xy[idx, 0], xy[idx, 1], s=30, c=colour, label=f"chosen: {criterion}")
        ax.legend(fontsize=7)
    ax.set_title("blendshapes, PCA", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
