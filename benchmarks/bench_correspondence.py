"""Time eq. 2 (canonical nearest neighbours) for one 518x518 image pair on one core.

    python benchmarks/bench_correspondence.py [--size 518] [--repeats 7]

Two realistic canonical maps: a head-like smooth surface (ellipsoid with a nose and brows,
FLAME-sized, metres) seen from the front, the second frame turned by 4 degrees, moved by a few
pixels and with the jaw region stretched, the first with 0.3 mm prediction-like noise; about
150k valid pixels each. Prints milliseconds per pair (median of repeats) for:

- ours, both indices prebuilt (`match_indices`: queries in leaf order), every pixel;
- ours, target prebuilt, queries in raster order (`match_views`);
- ours with spatial downsampling (stride 2 on both maps), and its pixel error against the
  full-resolution matches;
- scipy's cKDTree built and queried per pair (the per-pair baseline);
- ours over a sequence of frame pairs on 1 and 2 threads (parallel over frames).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree

from faceanything.correspondence import (
    CanonicalIndex,
    IndexConfig,
    build_indices,
    match_indices,
    match_pairs,
    match_views,
)


def head_map(
    n: int, *, turn: float = 0.0, shift=(0.0, 0.0), jaw: float = 0.0, noise: float = 0.0
) -> np.ndarray:
    """(n, n, 3) canonical map (metres) of a head-like surface, NaN off the head."""
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float64)
    u = (cols - n / 2 - shift[0]) / (0.40 * n)
    v = (rows - n / 2 - shift[1]) / (0.47 * n)
    r2 = u * u + v * v
    z = np.sqrt(np.clip(1 - r2, 0, None))
    z = z + 0.25 * np.exp(-(u**2 + (v - 0.05) ** 2) / 0.01)  # nose
    z = z + 0.05 * np.exp(-((np.abs(u) - 0.35) ** 2 + (v + 0.3) ** 2) / 0.01)  # brows
    v = v * (1 + jaw * np.clip(v, 0, None))  # the lower face stretches (mouth opening)
    c, s = np.cos(turn), np.sin(turn)
    x, y, z = 0.08 * u, -0.11 * v, 0.09 * z
    out = np.stack([c * x + s * z, y, c * z - s * x], axis=-1)
    out += np.random.default_rng(0).normal(0, noise, out.shape)
    out[r2 >= 1] = np.nan
    return out


def median_ms(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of a call (CPU time is the steadier figure on a
    shared machine; for one thread it is the one-core cost)."""
    function()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def scipy_per_pair(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The baseline: build a tree over the target's valid pixels and query the source's."""
    src = source[np.isfinite(source).all(-1)]
    tgt = target[np.isfinite(target).all(-1)]
    return cKDTree(tgt).query(src, workers=1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--frames", type=int, default=8, help="frames of the threaded sequence")
    args = parser.parse_args(argv)
    n, r = args.size, args.repeats
    source = head_map(n, noise=3e-4)
    target = head_map(n, turn=np.radians(4), shift=(5, -3), jaw=0.05)
    print(
        f"{n}x{n} pair: {np.isfinite(source[..., 0]).sum()} and "
        f"{np.isfinite(target[..., 0]).sum()} valid pixels, one core"
    )
    src, tgt = CanonicalIndex(source), CanonicalIndex(target)
    half = IndexConfig(stride=2)
    src2, tgt2 = CanonicalIndex(source, config=half), CanonicalIndex(target, config=half)
    cases = {
        "index build (once per frame)": lambda: CanonicalIndex(target),
        "ours, prebuilt, every pixel": lambda: match_indices(src, tgt),
        "ours, prebuilt, every pixel, limit 5 mm": lambda: match_indices(
            src, tgt, max_distance=0.005
        ),
        "ours, prebuilt, raster-order queries": lambda: match_views(source=source, target=tgt),
        "ours, prebuilt, stride 2 (1/4 of pixels)": lambda: match_indices(src2, tgt2),
        "scipy cKDTree built + queried per pair": lambda: scipy_per_pair(source, target),
    }
    print(f"{'':42s} {'wall ms':>8s} {'cpu ms':>8s}")
    for name, function in cases.items():
        wall, cpu = median_ms(function, r)
        print(f"{name:42s} {wall:8.1f} {cpu:8.1f}")
    error = stride_error(src, tgt, src2, tgt2)
    print(
        f"stride 2 against full resolution: mean {error.mean():.2f} px, "
        f"p99 {np.quantile(error, 0.99):.2f} px"
    )
    frames = [head_map(n, turn=np.radians(t), shift=(t, 0)) for t in range(args.frames)]
    indices = build_indices(np.stack(frames), workers=2)
    pairs = [(0, t) for t in range(1, len(frames))]
    for workers in (1, 2):
        wall, _ = median_ms(lambda w=workers: match_pairs(indices, pairs, workers=w), r // 2 or 1)
        print(
            f"ours, {len(pairs)} pairs on {workers} thread(s): {wall / len(pairs):7.1f} ms per pair"
        )
    return 0


def stride_error(
    src: CanonicalIndex, tgt: CanonicalIndex, src2: CanonicalIndex, tgt2: CanonicalIndex
) -> np.ndarray:
    """Pixel distance between the stride-2 matches and the full-resolution ones, per query."""
    full = match_indices(src, tgt)
    lookup = {tuple(p): q for p, q in zip(full.source.tolist(), full.target.tolist(), strict=True)}
    coarse = match_indices(src2, tgt2)
    exact = np.array([lookup[tuple(p)] for p in coarse.source.tolist()])
    return np.linalg.norm(coarse.target - exact, axis=1)


if __name__ == "__main__":
    raise SystemExit(main())
