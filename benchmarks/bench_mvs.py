"""Dense depth (our PyTorch MVS, 16 views) and COLMAP's fusion per timestep of the synthetic
sample subject, at its working resolution 275x401 and at 550x802: timings and accuracy against
the truth (depth on face-mask pixels, fused points to the truth surface).

Run: python -m benchmarks.bench_mvs --root /tmp/bench_mvs [--threads 2] [--mode calibrated]

The sample (scale 4: 550x802 videos) is generated under `--root` unless already there; frames
at 550x802 (downsample 1) are scored against the 275x401 truth after averaging 2x2 blocks.
COLMAP's PatchMatch needs CUDA: it is compared only where pycolmap has CUDA.
"""

from __future__ import annotations

import argparse
import os
import time
import zlib  # noqa: F401  before pycolmap, or PNG writing aborts (tasks.sfm)
from pathlib import Path

import numpy as np
import pycolmap
from scipy.spatial import cKDTree

from tasks.formats.cameras import SERIALS, backproject_depth
from tasks.formats.exr import read_exr
from tasks.formats.nersemble import Subject, load_subject
from tasks.frames import FramesConfig, extract_frames
from tasks.fusion import FusionConfig, fuse_workspace, prepare_workspace, read_fused_ply
from tasks.mvs import MvsConfig, MvsResult, run_mvs
from tasks.sample.subject import (
    SampleSubjectConfig,
    generate_sample_subject,
    ground_truth_dir,
    ground_truth_map_path,
)
from tasks.sfm import SfmConfig, run_sfm

TIMESTEPS = (("EXP-1-head", 0), ("EMO-1-shout+laugh", 3))
"""A turning head and a strong expression."""
TRUTH_DOWNSAMPLE = 2
"""The sample's truth maps are at its videos' size / 2 (275x401)."""
WINDOWS = {2: {}, 1: {"window_radius": 3, "coarse_window_radius": 3}}
"""Frames downsample -> NCC window settings: the defaults suit 275x401; at 550x802 windows
of the same size in the face (radius 3, 3) found 5 points more face pixels within 5 mm."""


def block_mean(depth: np.ndarray, factor: int) -> np.ndarray:
    """(H/f, W/f) mean of the valid depths in each f x f block of an (H, W) map (NaN when
    none is): within half a fine pixel of the block centre, the truth pixel's position."""
    if factor == 1:
        return depth
    h, w = depth.shape[0] // factor, depth.shape[1] // factor
    blocks = depth[: h * factor, : w * factor].reshape(h, factor, w, factor)
    valid = np.isfinite(blocks)
    count = valid.sum(axis=(1, 3))
    total = np.where(valid, blocks, 0.0).sum(axis=(1, 3))
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def score(
    *,
    result: MvsResult,
    fused: np.ndarray,
    truth_dir: Path,
    subject: Subject,
    step: tuple[str, int],
    factor: int,
) -> str:
    """Depth and fused-cloud accuracy of one run against the working-resolution truth."""
    sequence, frame = step
    errors, within, points, normals = [], [], [], []
    for view in result.views:
        serial = view.name.removeprefix("cam_").removesuffix(".png")
        truth = read_exr(
            ground_truth_map_path(truth_dir, sequence=sequence, frame=frame, serial=serial)
        )
        valid = np.isfinite(truth["depth"])
        camera = subject.camera(serial, downsample=TRUTH_DOWNSAMPLE)
        points.append(backproject_depth(truth["depth"], camera)[valid])
        normals.append(truth["normal"][valid])
        if view.exr_path is None:
            within.append(0.0)
            continue
        depth = block_mean(read_exr(view.exr_path)["depth"], factor)
        error = np.abs(depth - truth["depth"])[truth["mask"] > 0.5]
        errors.append(error[np.isfinite(error)])
        within.append(float(np.mean(np.where(np.isfinite(error), error, np.inf) <= 5e-3)))
    points, normals = np.concatenate(points), np.concatenate(normals)
    _, nearest = cKDTree(points).query(fused)
    distance = np.abs(np.sum((fused - points[nearest]) * normals[nearest], axis=-1))
    median = np.median(np.concatenate(errors)) if errors else np.nan
    return (
        f"depth median {median * 1e3:.3f} mm, face pixels within 5 mm min {min(within):.1%} "
        f"mean {np.mean(within):.1%} | fused {len(fused)} points, "
        f"median {np.median(distance) * 1e3:.3f} mm to the truth surface"
    )


def bench_timestep(
    *,
    subject: Subject,
    truth_dir: Path,
    work: Path,
    step: tuple[str, int],
    downsample: int,
    args: argparse.Namespace,
) -> None:
    """Frames, SfM, dense depth and fusion of one timestep at one resolution; prints a line
    per MVS backend."""
    sequence, frame = step
    folder = work / f"{sequence}_{frame:05d}_d{downsample}"
    frames = extract_frames(
        subject=subject,
        sequence=sequence,
        frame=frame,
        output=folder / "frames",
        config=FramesConfig(downsample=downsample),
    )
    sfm = run_sfm(
        frames_dir=frames.directory, output=folder / "sfm", config=SfmConfig(mode=args.mode)
    )
    if sfm.status != "ok":
        print(f"  {sequence} {frame}: SfM dropped the timestep: {sfm.reason}")
        return
    workspace = prepare_workspace(
        images_dir=frames.directory / "images", sparse_dir=sfm.sparse_dir, output=folder / "dense"
    )
    backends = ("torch", "colmap") if pycolmap.has_cuda else ("torch",)
    for backend in backends:
        config = MvsConfig(backend=backend, num_threads=args.threads, **WINDOWS[downsample])
        wall, cpu = time.perf_counter(), time.process_time()
        result = run_mvs(workspace=workspace, maps_dir=folder / f"maps_{backend}", config=config)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        fusion = fuse_workspace(
            workspace=workspace, output_ply=folder / f"fused_{backend}.ply", config=FusionConfig()
        )
        ok = sum(v.state == "ok" for v in result.views)
        accuracy = score(
            result=result,
            fused=read_fused_ply(fusion.ply_path).points,
            truth_dir=truth_dir,
            subject=subject,
            step=step,
            factor=TRUTH_DOWNSAMPLE // downsample,
        )
        camera = subject.camera(SERIALS[0], downsample=downsample)
        print(
            f"  {sequence} {frame} {camera.width}x{camera.height} {backend} on {result.device} "
            f"(windows {config.coarse_window_radius}/{config.window_radius}): "
            f"{ok}/{len(result.views)} views, depth {wall:.1f} s wall ({cpu:.1f} s CPU), fusion "
            f"{fusion.seconds:.1f} s | {accuracy}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="sample data and work folder")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--mode", choices=("calibrated", "mapping"), default="calibrated")
    args = parser.parse_args()
    pycolmap.logging.minloglevel = 2  # warnings and errors only
    config = SampleSubjectConfig(subject="900", frames_per_sequence=6)
    sample = generate_sample_subject(config=config, root=args.root / "sample")
    subject = load_subject(sample.subject_dir)
    truth_dir = ground_truth_dir(root=args.root / "sample", subject="900")
    print(
        f"{os.cpu_count()} cores, torch threads {args.threads}, load average "
        f"{os.getloadavg()[0]:.1f}, SfM mode {args.mode}"
    )
    if not pycolmap.has_cuda:
        print("COLMAP PatchMatch comparison skipped: it needs CUDA (pycolmap built without it)")
    for downsample in (2, 1):
        for step in TIMESTEPS:
            bench_timestep(
                subject=subject,
                truth_dir=truth_dir,
                work=args.root / f"work_{args.mode}",
                step=step,
                downsample=downsample,
                args=args,
            )


if __name__ == "__main__":
    main()
