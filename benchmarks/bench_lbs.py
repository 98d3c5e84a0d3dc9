"""Time FLAME's LBS layer for one subject's 50 timesteps, as the tracker calls it.

    python benchmarks/bench_lbs.py [--repeats 10]

Prints the median forward and forward+backward time in float32 and float64 for a random
model of FLAME's size (5023 vertices, 9976 faces, 300 shape + 100 expression components:
the figure that matters for real runs) and for the embedded sample head model when present.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.model import NUM_POSE_FEATURES, FlameModel

TIMESTEPS = 50
"""40 blendshape-selected + 10 pose-selected timesteps per subject."""


def flame_sized_model(*, seed: int = 0) -> FlameModel:
    """Random arrays with FLAME 2020's sizes; timing depends on sizes only."""
    rng = np.random.default_rng(seed)
    n = 5023
    regressor = rng.random((5, n))
    return FlameModel(
        v_template=rng.normal(scale=0.08, size=(n, 3)),
        f=rng.integers(0, n, size=(9976, 3)),
        shapedirs=rng.normal(scale=1e-3, size=(n, 3, 300)),
        exprdirs=rng.normal(scale=1e-3, size=(n, 3, 100)),
        posedirs=rng.normal(scale=1e-3, size=(n, 3, NUM_POSE_FEATURES)),
        J_regressor=regressor / regressor.sum(1, keepdims=True),
        weights=rng.dirichlet(np.ones(5), size=n),
        kintree_table=np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
        source="random, FLAME-sized",
    )


def tracker_params(model: FlameModel, *, dtype: torch.dtype, grad: bool) -> FlameParams:
    """One shared shape and static offset, per-timestep expression and poses."""
    g = torch.Generator().manual_seed(0)

    def rand(*size: int, scale: float) -> torch.Tensor:
        return (torch.randn(*size, generator=g) * scale).to(dtype).requires_grad_(grad)

    t = TIMESTEPS
    return FlameParams(
        shape=rand(model.num_shape, scale=1.0),
        expr=rand(t, model.num_expr, scale=1.0),
        rotation=rand(t, 3, scale=0.3),
        translation=rand(t, 3, scale=0.1),
        neck_pose=rand(t, 3, scale=0.2),
        jaw_pose=rand(t, 3, scale=0.2),
        eyes_pose=rand(t, 6, scale=0.2),
        static_offset=rand(model.num_vertices, 3, scale=1e-3),
    )


def median_ms(run: Callable[[], None], *, repeats: int) -> float:
    run()  # warm-up: allocator and thread pool
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def time_dtype(model: FlameModel, *, dtype: torch.dtype, repeats: int) -> tuple[float, float]:
    """Median ms of a forward pass and of forward+backward for all timesteps at once."""
    layer = FlameLayer(model, dtype=dtype)
    params = tracker_params(model, dtype=dtype, grad=True)
    weights = torch.randn(TIMESTEPS, model.num_vertices, 3, dtype=dtype)

    def forward() -> None:
        with torch.no_grad():
            layer(params)

    def forward_backward() -> None:
        (layer(params).vertices * weights).sum().backward()

    return median_ms(forward, repeats=repeats), median_ms(forward_backward, repeats=repeats)


def bench(model: FlameModel, *, repeats: int) -> None:
    print(
        f"\n{model.source}: {model.num_vertices} vertices, {len(model.f)} faces, "
        f"{model.num_shape} shape + {model.num_expr} expression components, "
        f"{TIMESTEPS} timesteps"
    )
    for dtype in (torch.float32, torch.float64):
        fwd, both = time_dtype(model, dtype=dtype, repeats=repeats)
        name = str(dtype).removeprefix("torch.")
        print(f"  {name:8s} forward {fwd:8.2f} ms   forward+backward {both:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs; the median is shown")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {threads} CPU threads, median of {args.repeats} runs")
    bench(flame_sized_model(), repeats=args.repeats)
    try:
        from flame_tracking.sample_model import build_sample_model
    except ImportError as exc:
        print(f"\nsample head model not available ({exc}); FLAME-sized figures only")
        return
    bench(build_sample_model(), repeats=args.repeats)


if __name__ == "__main__":
    main()
