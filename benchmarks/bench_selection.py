"""Frame selection on a built sample subject, against chance and against ground truth.

Coverage: the largest distance from any frame to its nearest chosen frame (blendshape space
for the blendshape picks, pose space for the pose picks), as a ratio to the median over 20
random choices of the same size. Pose: MediaPipe's head rotation against the sample's true
head rotation, median angle after removing one constant rotation (camera vs FLAME frame).

    .venv/bin/python -m benchmarks.bench_selection --subject-output out/subjects/900 \
        --ground-truth data/sample/ground_truth/900
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from tasks import selection, signals


def _coverage_ratio(points: np.ndarray, chosen: list[int], rng: np.random.Generator) -> float:
    random = [
        selection.coverage_radius(points, list(rng.choice(len(points), len(chosen), False)))
        for _ in range(20)
    ]
    return selection.coverage_radius(points, chosen) / float(np.median(random))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subject-output", type=Path, required=True)
    parser.add_argument("--ground-truth", type=Path, required=True)
    args = parser.parse_args()
    (signals_dir,) = args.subject_output.glob("signals-*")
    (selection_file,) = args.subject_output.glob("selection-*.parquet")
    table = pd.concat(
        [signals.read_signals(p).table for p in sorted(signals_dir.glob("*.parquet"))]
    )
    valid = table[table.detected].sort_values(["sequence", "frame"]).reset_index(drop=True)
    chosen = selection.read_selection(selection_file).table
    key = valid.set_index(["sequence", "frame"]).index
    rng = np.random.default_rng(0)
    for criterion, vectors in (
        (selection.BLENDSHAPE, selection.blendshape_vectors(valid)),
        (selection.POSE, selection.pose_vectors(valid)),
    ):
        picked = chosen[chosen.criterion == criterion][["sequence", "frame"]]
        idx = list(key.get_indexer(pd.MultiIndex.from_frame(picked)))
        ratio = _coverage_ratio(vectors, idx, rng)
        print(f"{criterion:>10}: {len(idx)} of {len(valid)} frames, coverage {ratio:.2f} x random")
    truth = pd.read_parquet(args.ground_truth / "params.parquet")
    merged = valid.merge(truth, on=["sequence", "frame"], suffixes=("_mp", "_gt"))
    mp = Rotation.from_rotvec(np.stack(merged.rotation_mp.to_numpy()))
    # The head's orientation is the global rotation followed by the neck joint's.
    gt = Rotation.from_rotvec(np.stack(merged.rotation_gt.to_numpy())) * Rotation.from_rotvec(
        np.stack(merged.neck_pose.to_numpy())
    )
    offset = (mp * gt.inv()).mean()
    error = np.degrees((offset.inv() * mp * gt.inv()).magnitude())
    print(f"head rotation vs truth: median {np.median(error):.2f} deg over {len(error)} frames")


if __name__ == "__main__":
    main()
