"""Pictures a person would rather look at than tables, one function per stage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import cv2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tasks import selection  # noqa: E402
from tasks.formats import nersemble  # noqa: E402
from tasks.formats.atomic import atomic_file  # noqa: E402
from tasks.formats.exr import read_exr  # noqa: E402
from tasks.frames import image_path  # noqa: E402
from tasks.mvs import maps_path  # noqa: E402

_CRITERION_COLOURS = {selection.BLENDSHAPE: "tab:orange", selection.POSE: "tab:green"}


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write a PNG atomically and close the figure."""
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return Path(path)


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


def depth_picture(
    *,
    frames_dir: Path,
    maps_dir: Path,
    serials: Sequence[str],
    path: Path,
    columns: int = 4,
    max_width: int = 2000,
) -> Path:
    """Every view's image, depth and normals side by side, `columns` views to a row, so a
    timestep's reconstruction is checked at a glance. Depth is coloured (viridis) over the
    1st-99th percentile of all views; white where a map has no value. Drawn with numpy, not
    matplotlib: one picture per timestep must stay cheap."""
    images, depths, normals = [], [], []
    for serial in serials:
        image = cv2.cvtColor(cv2.imread(str(image_path(frames_dir, serial))), cv2.COLOR_BGR2RGB)
        file = maps_path(maps_dir, serial)
        maps = read_exr(file) if file.is_file() else {}
        images.append(image)
        depths.append(maps.get("depth", np.full(image.shape[:2], np.nan, np.float32)))
        normals.append(maps.get("normal", np.full(image.shape, np.nan, np.float32)))
    finite = np.concatenate([d[np.isfinite(d)] for d in depths])
    low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    viridis = plt.get_cmap("viridis")
    cells = []
    for serial, image, depth, normal in zip(serials, images, depths, normals, strict=True):
        shade = viridis(np.clip((depth - low) / max(high - low, 1e-9), 0, 1))[..., :3]
        panels = [image / 255.0, shade, normal * 0.5 + 0.5]
        panels[1][~np.isfinite(depth)] = 1.0
        cell = (np.nan_to_num(np.concatenate(panels, axis=1), nan=1.0).clip(0, 1) * 255).astype(
            np.uint8
        )
        cv2.putText(cell, serial, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        cells.append(cell)
    blank = np.full_like(cells[0], 255)
    cells += [blank] * (-len(cells) % columns)
    grid = np.concatenate(
        [np.concatenate(cells[i : i + columns], axis=1) for i in range(0, len(cells), columns)]
    )
    if grid.shape[1] > max_width:
        size = (max_width, round(grid.shape[0] * max_width / grid.shape[1]))
        grid = cv2.resize(grid, size, interpolation=cv2.INTER_AREA)
    with atomic_file(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return Path(path)
