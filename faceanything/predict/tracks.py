"""Point tracks through a sequence by eq. 2, as a table and as pictures (paper fig. 6), and a
picture of predicted maps.

Query points are pixels of the first frame: a grid over its confident canonical pixels, or
points read from a file. Each frame is matched to the queries' canonical coordinates directly
(not frame to frame), so a track does not drift; a query whose nearest canonical neighbour
is farther than `max_distance` is not visible in that frame.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from skimage.draw import disk, line_aa  # noqa: E402

from faceanything.correspondence import (  # noqa: E402
    IndexConfig,
    Tracks,
    build_indices,
    confident_pixels,
    track_points,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackConfig:
    """How query points are chosen and followed."""

    grid_step: int = 12
    """Pixels (at the maps' resolution) between grid query points on the first frame."""
    max_distance: float = 0.01
    """A match farther than this in canonical space (FLAME metres) counts as not visible."""
    index: IndexConfig = IndexConfig()
    """Pixels of each frame (inside its region) that may be matched (and, on the first
    frame, queried), by canonical confidence."""
    workers: int = 2
    """Threads over frames for building indices and matching."""


def grid_queries(valid: np.ndarray, step: int) -> np.ndarray:
    """(Q, 2) int64 (x, y) pixels on a `step` grid (offset half a step) inside `valid` (H, W)."""
    rows, cols = np.mgrid[step // 2 : valid.shape[0] : step, step // 2 : valid.shape[1] : step]
    keep = valid[rows, cols]
    return np.stack([cols[keep], rows[keep]], axis=1).astype(np.int64)


def read_queries(path: str | os.PathLike) -> np.ndarray:
    """(Q, 2) float (x, y) pixels from a text file: two numbers per line, separated by spaces
    or a comma; blank lines, lines starting with '#' and a non-numeric header are skipped."""
    points = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            x, y = (float(v) for v in fields[:2])
        except ValueError:
            if points or number > 1:
                raise ValueError(f"{path}:{number}: expected 'x y', got {line!r}") from None
            continue
        points.append((x, y))
    if not points:
        raise ValueError(f"{path}: no query points")
    return np.asarray(points, dtype=np.float64)


def follow(
    canonical: np.ndarray,
    confidence: np.ndarray,
    *,
    region: np.ndarray | None = None,
    queries: np.ndarray | None,
    config: TrackConfig,
) -> tuple[np.ndarray, Tracks]:
    """Query pixels (Q, 2) of frame 0 (`queries`, or a grid on its confident pixels) and their
    tracks through (T, H, W, 3) canonical maps with (T, H, W) confidences, matching only
    pixels inside `region` (T, H, W) bool when given (e.g. the face)."""
    indices = build_indices(
        canonical, mask=region, confidence=confidence, config=config.index, workers=config.workers
    )
    if queries is None:
        valid = confident_pixels(
            canonical[0],
            None if region is None else region[0],
            confidence=confidence[0],
            config=config.index,
        )
        queries = grid_queries(valid, config.grid_step)
    h, w = canonical.shape[1:3]
    pixels = np.clip(np.rint(queries), [0, 0], [w - 1, h - 1]).astype(np.int64)
    points = canonical[0][pixels[:, 1], pixels[:, 0]]
    tracks = track_points(points, indices, max_distance=config.max_distance, workers=config.workers)
    return pixels, tracks


def tracks_table(
    queries: np.ndarray, tracks: Tracks, *, scale: tuple[float, float] = (1.0, 1.0)
) -> pd.DataFrame:
    """One row per (track, frame): query and tracked pixel (x, y) in input-image pixels
    (map pixels times `scale` (sx, sy), centres kept on centres), canonical distance and
    visibility. Not visible: x, y NaN."""
    t, q = tracks.found.shape
    sx, sy = scale
    x = np.where(tracks.found, (tracks.pixels[..., 0] + 0.5) * sx - 0.5, np.nan)
    y = np.where(tracks.found, (tracks.pixels[..., 1] + 0.5) * sy - 0.5, np.nan)
    return pd.DataFrame(
        {
            "track": np.tile(np.arange(q), t),
            "frame": np.repeat(np.arange(t), q),
            "x": x.ravel(),
            "y": y.ravel(),
            "visible": tracks.found.ravel(),
            "distance": np.where(tracks.found, tracks.distance, np.nan).ravel(),
            "query_x": np.tile((queries[:, 0] + 0.5) * sx - 0.5, t),
            "query_y": np.tile((queries[:, 1] + 0.5) * sy - 0.5, t),
        }
    )


def track_colors(queries: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(Q, 3) RGB in [0, 1]: hue from the query's angle about the queries' centre, brightness
    from its height, so neighbouring tracks have similar colours (as in fig. 6)."""
    if not len(queries):
        return np.zeros((0, 3))
    centre = queries.mean(axis=0)
    hue = (np.arctan2(queries[:, 1] - centre[1], queries[:, 0] - centre[0]) / (2 * np.pi)) % 1
    value = 0.65 + 0.35 * (1 - queries[:, 1] / max(shape[0] - 1, 1))
    hsv = np.stack([hue, np.full_like(hue, 0.9), value], axis=1)
    return matplotlib.colors.hsv_to_rgb(hsv)


def draw_tracks(
    image: np.ndarray, tracks: Tracks, t: int, colors: np.ndarray, *, tail: int = 8
) -> np.ndarray:
    """(H, W, 3) uint8 frame t with each visible track's last `tail` steps and a dot."""
    out = image.astype(np.float64) / 255.0
    h, w = out.shape[:2]
    for q in np.nonzero(tracks.found[t])[0]:
        steps = [s for s in range(max(0, t - tail), t + 1) if tracks.found[s, q]]
        for a, b in zip(steps[:-1], steps[1:], strict=False):
            (x0, y0), (x1, y1) = tracks.pixels[a, q], tracks.pixels[b, q]
            rr, cc, val = line_aa(int(y0), int(x0), int(y1), int(x1))
            keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            rr, cc, val = rr[keep], cc[keep], val[keep, None]
            out[rr, cc] = out[rr, cc] * (1 - val) + colors[q] * val
        x, y = tracks.pixels[t, q]
        rr, cc = disk((y, x), max(1.5, min(h, w) / 180), shape=(h, w))
        out[rr, cc] = colors[q]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def tracks_figure(
    path: str | os.PathLike,
    images: np.ndarray,
    tracks: Tracks,
    colors: np.ndarray,
    *,
    target: int | None = None,
) -> Path:
    """A picture like the paper's fig. 6: the base frame (0) with its query points, and the
    target frame (default: the last) with each track's path from the base frame to it."""
    target = len(images) - 1 if target is None else target
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.6))
    for ax, t, title in ((axes[0], 0, "base frame 0: queries"), (axes[1], target, "")):
        ax.imshow(images[t])
        ax.set_axis_off()
        ax.set_title(title or f"target frame {t}: tracks 0 to {t}", fontsize=10)
        seen = tracks.found[t]
        ax.scatter(*tracks.pixels[t, seen].T, s=6, c=colors[seen], linewidths=0)
    lines, line_colors = [], []
    for q in range(tracks.found.shape[1]):
        steps = tracks.pixels[: target + 1, q][tracks.found[: target + 1, q]]
        if len(steps) > 1:
            lines.append(steps)
            line_colors.append(colors[q])
    axes[1].add_collection(LineCollection(lines, colors=line_colors, linewidths=0.7, alpha=0.8))
    visible = tracks.found[target].mean() if tracks.found.size else 0.0
    fig.suptitle(f"{tracks.found.shape[1]} tracks, {visible:.0%} visible in frame {target}")
    return save_figure(fig, path)


def maps_figure(
    path: str | os.PathLike,
    images: np.ndarray,
    depth: np.ndarray,
    canonical: np.ndarray,
    *,
    count: int = 4,
) -> Path:
    """Input (T, H, W, 3), depth (T, H, W) and canonical map (T, H, W, 3; each coordinate
    stretched between its 1st and 99th percentile) of up to `count` frames."""
    picks = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round()).astype(int)
    fig, axes = plt.subplots(3, len(picks), figsize=(3 * len(picks), 9), squeeze=False)
    lo = np.nanquantile(canonical, 0.01, axis=(0, 1, 2))
    hi = np.nanquantile(canonical, 0.99, axis=(0, 1, 2))
    for col, t in enumerate(picks):
        canon = np.clip((canonical[t] - lo) / np.maximum(hi - lo, 1e-9), 0, 1)
        shown = ((images[t], f"frame {t}"), (depth[t], "depth"), (canon, "canonical"))
        for row, (image, title) in enumerate(shown):
            axes[row, col].imshow(image, cmap="turbo" if row == 1 else None)
            axes[row, col].set_title(title, fontsize=9)
            axes[row, col].set_axis_off()
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return path
