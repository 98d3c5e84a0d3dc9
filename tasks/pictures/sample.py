"""Pictures of a sample subject for people: the 16 views of one frame, one view's truth maps."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from tasks.formats.cameras import SERIALS
from tasks.formats.exr import read_exr
from tasks.formats.nersemble import load_subject, read_frames
from tasks.pictures.stages import save_figure
from tasks.sample.scene import RIG
from tasks.sample.world import ground_truth_map_path


def contact_sheet(*, subject_dir: Path, sequence: str, frame: int, path: str | os.PathLike) -> Path:
    """A 4 x 4 grid of the 16 decoded, colour-corrected views of one frame, in serial order."""
    subject = load_subject(Path(subject_dir))
    fig, axes = plt.subplots(4, 4, figsize=(12, 17.5))
    for ax, serial, (yaw, elevation) in zip(axes.ravel(), SERIALS, RIG, strict=True):
        frames = read_frames(subject, sequence=sequence, serial=serial, frames=[frame])
        ax.imshow(frames.images[frame])
        ax.set_title(f"{serial}  yaw {yaw:+.0f}  el {elevation:+.0f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"sample subject {subject.directory.name}: {sequence}, frame {frame}")
    return save_figure(fig, Path(path))


def ground_truth_sheet(
    *, ground_truth_dir: Path, sequence: str, frame: int, serial: str, path: str | os.PathLike
) -> Path:
    """One view's depth, canonical map (template x, y, z scaled to RGB over the head's box;
    on the hair, the nearest FLAME point's deformation undone), normal map (n / 2 + 1/2) and
    regions (face mask, hair shell), side by side."""
    maps = read_exr(
        ground_truth_map_path(Path(ground_truth_dir), sequence=sequence, frame=frame, serial=serial)
    )
    canonical = maps["canonical"]
    lo, hi = np.nanmin(canonical, axis=(0, 1)), np.nanmax(canonical, axis=(0, 1))
    panels = {
        "depth (m)": maps["depth"],
        "canonical (x, y, z -> RGB)": np.nan_to_num((canonical - lo) / (hi - lo), nan=1.0),
        "normal (world)": np.nan_to_num(maps["normal"] * 0.5 + 0.5, nan=1.0),
        "face (1) and hair (2)": maps["mask"] + 2 * maps.get("hair", 0 * maps["mask"]),
    }
    fig, axes = plt.subplots(1, 4, figsize=(16, 6))
    for ax, (title, image) in zip(axes, panels.items(), strict=True):
        shown = ax.imshow(image, cmap="viridis" if image.ndim == 2 else None)
        if title.startswith("depth"):
            fig.colorbar(shown, ax=ax, fraction=0.05)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"ground truth {Path(ground_truth_dir).name}: {sequence}, frame {frame}, {serial}")
    return save_figure(fig, Path(path))
