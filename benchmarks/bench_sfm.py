"""Per-timestep frames extraction and SfM on the synthetic sample subject: timings, 16/16
registration rate and camera-centre residuals after alignment to the calibration, beside
the same run without the robust bundle adjustment (`SfmConfig.robust_loss_scale_px` = 0).

Run: python -m benchmarks.bench_sfm --root /tmp/bench_sfm [--scale 4 --downsample 1]

The sample is generated under `--root` unless already there. `--scale 4 --downsample 1` gives
550x802 frames straight from 550x802 videos; `--scale 2 --downsample 2` gives 550x802 frames
shrunk from 1100x1604 videos as the real pipeline shrinks 2200x3208 ones (slower to generate).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import zlib  # noqa: F401  before pycolmap, or PNG writing aborts (tasks.sfm)
from pathlib import Path

import pycolmap

from tasks.formats.nersemble import load_subject
from tasks.frames import FramesConfig, extract_frames
from tasks.sample.subject import SampleSubjectConfig, generate_sample_subject
from tasks.sfm import SfmConfig, SfmResult, run_sfm


def timesteps(sequences: tuple[str, ...], frames: int, count: int) -> list[tuple[str, int]]:
    """`count` (sequence, frame) pairs spread evenly over every sequence's frames."""
    per = max(1, count // len(sequences))
    step = max(1, frames // per)
    return [(s, t) for s in sequences for t in range(0, frames, step)][:count]


def bench_timestep(
    *, subject_dir: Path, work: Path, sequence: str, frame: int, args: argparse.Namespace
) -> tuple[float, SfmResult, SfmResult]:
    """Frames extraction seconds, the SfM result of one timestep and the baseline's."""
    subject = load_subject(subject_dir)
    start = time.perf_counter()
    frames = extract_frames(
        subject=subject,
        sequence=sequence,
        frame=frame,
        output=work / f"{sequence}_{frame:05d}" / "frames",
        config=FramesConfig(downsample=args.downsample),
    )
    extraction = time.perf_counter() - start
    config = SfmConfig(mode=args.mode, peak_threshold=args.peak_threshold)
    sfm = run_sfm(
        frames_dir=frames.directory, output=frames.directory.parent / "sfm", config=config
    )
    baseline = run_sfm(
        frames_dir=frames.directory,
        output=frames.directory.parent / "sfm_baseline",
        config=dataclasses.replace(config, robust_loss_scale_px=0.0),
    )
    return extraction, sfm, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="sample data and work folder")
    parser.add_argument("--subject", default="900")
    parser.add_argument("--scale", type=int, default=4, help="sample video size 2200x3208/scale")
    parser.add_argument("--downsample", type=int, default=2, help="working downsample of frames")
    parser.add_argument("--frames", type=int, default=24, help="frames per sequence")
    parser.add_argument("--timesteps", type=int, default=12, help="timesteps to reconstruct")
    parser.add_argument("--mode", choices=("mapping", "calibrated"), default="mapping")
    parser.add_argument("--peak-threshold", type=float, default=SfmConfig().peak_threshold)
    args = parser.parse_args()
    pycolmap.logging.minloglevel = 2  # warnings and errors only
    config = SampleSubjectConfig(
        subject=args.subject, scale=args.scale, frames_per_sequence=args.frames
    )
    data = args.root / f"sample_s{args.scale}_f{args.frames}"
    sample = generate_sample_subject(config=config, root=data)
    work = args.root / f"work_{args.subject}_s{args.scale}_d{args.downsample}_{args.mode}"
    rows, baselines = [], []
    for sequence, frame in timesteps(config.sequences, args.frames, args.timesteps):
        extraction, sfm, baseline = bench_timestep(
            subject_dir=sample.subject_dir, work=work, sequence=sequence, frame=frame, args=args
        )
        rows.append(sfm)
        baselines.append(baseline)
        t = sfm.timings
        worst = max(sfm.residuals_mm.values(), default=float("nan"))
        print(
            f"{sequence:>18} {frame:3d}: frames {extraction:5.2f} s, extract {t.extraction:5.2f} "
            f"s, match {t.matching:5.2f} s, {args.mode} {t.mapping:5.2f} s | "
            f"{sfm.registered}/{sfm.expected} registered, {sfm.num_points3d} points, centre "
            f"residual median {_median(sfm)}, max {worst:.2f} mm (without robust BA: "
            f"{_median(baseline)}) {sfm.reason}",
            flush=True,
        )
    for name, results in (("robust BA", rows), ("no robust BA", baselines)):
        kept = [r for r in results if r.status == "ok"]
        medians = [r.median_residual_mm for r in results if r.median_residual_mm is not None]
        print(
            f"{name:>12}: {len(kept)}/{len(results)} timesteps kept (16/16); median of "
            f"per-timestep median residuals {statistics.median(medians):.2f} mm; SfM seconds "
            f"per timestep {statistics.median(sum(vars(r.timings).values()) for r in results):.1f}"
            " (median)"
        )


def _median(result: SfmResult) -> str:
    value = result.median_residual_mm
    return "-" if value is None else f"{value:.2f} mm"


if __name__ == "__main__":
    main()
