"""Frame selection on a built sample subject, against chance and against ground truth.

Coverage (`tasks.selection.selection_coverage`): the largest distance from any frame to its
nearest chosen frame, as a ratio to the median over 20 random choices of as many frames;
blendshape picks in blendshape space, all picks in pose space. Pose: MediaPipe's head rotation
against the sample's true head rotation, median angle after removing one constant rotation.

    .venv/bin/python -m benchmarks.bench_selection --subject-output out/subjects/900 \\
        --ground-truth data/sample/ground_truth/900
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from tasks import selection, signals


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
    chosen = selection.read_selection(selection_file).table
    counts = chosen.criterion.value_counts()
    coverage = selection.selection_coverage(table, chosen)
    print(f"frames with a face: {int(table.detected.sum())} of {len(table)}")
    for criterion, ratio in coverage.items():
        print(f"{criterion:>10}: {counts.get(criterion, 0)} picks, coverage {ratio:.2f} x random")
    truth = pd.read_parquet(args.ground_truth / "params.parquet")
    error = signals.head_rotation_error_deg(table, truth)
    print(f"head rotation vs truth: median {np.median(error):.2f} deg over {len(error)} frames")


if __name__ == "__main__":
    main()
