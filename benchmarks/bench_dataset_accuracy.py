"""Accuracy of built shards against the sample subject's ground truth.

For every view in a sample subject's shard: depth error (MVS) and canonical-map error
(tracking + deformation transfer) on ground-truth face-mask pixels, at the working size.

    .venv/bin/python -m benchmarks.bench_dataset_accuracy --shards out/shards/900 \
        --ground-truth data/sample/ground_truth/900
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tasks.formats import shards
from tasks.formats.exr import read_exr
from tasks.sample.world import ground_truth_map_path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--ground-truth", type=Path, required=True)
    args = parser.parse_args()
    depth_err, canon_err, coverage = [], [], []
    for _, row in shards.read_index(args.shards).iterrows():
        built = read_exr(args.shards / row["maps_file"])
        truth = read_exr(
            ground_truth_map_path(
                args.ground_truth, sequence=row.sequence, frame=int(row.frame), serial=row.serial
            )
        )
        face = truth["mask"] > 0.5
        has_depth = face & np.isfinite(built["depth"]) & (built["depth"] > 0)
        has_canon = face & (built["mask"] > 0.5)
        depth_err.append(np.abs(built["depth"] - truth["depth"])[has_depth])
        canon_err.append(
            np.linalg.norm(built["canonical"] - truth["canonical"], axis=-1)[has_canon]
        )
        coverage.append(has_depth.sum() / max(face.sum(), 1))
    d, c = np.concatenate(depth_err) * 1000, np.concatenate(canon_err) * 1000
    print(f"views: {len(coverage)}")
    print(
        f"depth on face pixels:     median {np.median(d):.3f} mm, within 5 mm {np.mean(d < 5):.1%}"
    )
    print(f"face pixels with depth:   {np.median(coverage):.1%} (median over views)")
    print(
        f"canonical on face pixels: median {np.median(c):.3f} mm, p90 {np.percentile(c, 90):.3f} mm"
    )


if __name__ == "__main__":
    main()
