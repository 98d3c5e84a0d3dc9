"""Accuracy of built shards against the sample subject's ground truth, per truth region.

For every view in a sample subject's shard: depth error (MVS) and canonical-map error (tracking
+ deformation transfer) on the truth's face, hair and other pixels, at the working size. With
`--tracking` (the subject's `tracking-*` folder) it also redoes the transfer from the shard's
depth for several distance limits (`CanonicalConfig.max_distance`): the share of depth pixels
kept and the canonical error against the truth with and without the hair, once with the
tracked meshes and once with the truth meshes (perfect tracking).

    .venv/bin/python -m benchmarks.bench_dataset_accuracy --shards out/shards/900 \
        --ground-truth data/sample/ground_truth/900 [--tracking out/subjects/900/tracking-*]

Measured on the sample with hair geometry (`make dataset`'s settings: 16 timesteps, 275x401,
256 views), canonical error against the truth, median / p90 in mm:

    limit   kept (of depth pixels)   tracked meshes:           truth meshes:
            tracked / truth          without hair | with hair  without hair | with hair
    5 mm    65.0% / 64.5%            0.75 / 3.36 | 0.80 / 3.72  0.28 / 1.62 | 0.28 / 1.65
    1 cm    69.0% / 67.4%            0.75 / 3.39 | 0.85 / 4.22  0.28 / 1.63 | 0.28 / 1.64
    2 cm    91.3% / 78.9%            0.75 / 3.39 | 1.35 / 9.95  0.28 / 1.63 | 0.29 / 1.80
    3 cm    99.7% / 99.1%            0.75 / 3.39 | 1.61 / 10.1  0.28 / 1.63 | 0.32 / 2.33
    5 cm    100%  / 100%             0.75 / 3.39 | 1.61 / 10.1  0.28 / 1.63 | 0.32 / 2.39
    8 cm    100%  / 100%             (the same)

The hair's own error is 0.40 mm median with the truth meshes and 5.8 mm with the tracked ones:
its canonical position inherits the error of the scalp under it, which no point constrains.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import trimesh

from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.sample_model import build_sample_model
from tasks import tracking
from tasks.canonical import CanonicalConfig, TrackedSurface, ViewDepth, canonicalize_view
from tasks.formats import shards
from tasks.formats.cameras import Camera
from tasks.formats.exr import read_exr
from tasks.sample.scene import PARAMETER_NAMES
from tasks.sample.world import TRUTH_REGIONS, ground_truth_map_path, truth_regions

LIMITS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, np.inf)
"""Distance limits (metres) tried for the transfer."""


def _camera(row: pd.Series, depth: np.ndarray) -> Camera:
    return Camera(
        serial=row.serial,
        K=np.asarray(row.K, dtype=np.float64).reshape(3, 3),
        world_2_cam=np.asarray(row.world_2_cam, dtype=np.float64).reshape(4, 4),
        width=depth.shape[1],
        height=depth.shape[0],
    )


def _truth_meshes(ground_truth: Path) -> dict[tuple[str, int], np.ndarray]:
    """(sequence, frame) -> (V, 3) truth FLAME vertices of the sample head."""
    model = build_sample_model()
    params = pd.read_parquet(ground_truth / "params.parquet")
    tensors = {n: torch.tensor(np.stack(params[n].to_numpy())) for n in PARAMETER_NAMES}
    with torch.no_grad():
        vertices = FlameLayer(model, torch.float64)(FlameParams(**tensors)).vertices.numpy()
    return {(s, int(f)): v for s, f, v in zip(params.sequence, params.frame, vertices, strict=True)}


def _transfer(
    row: pd.Series, depth: np.ndarray, vertices: np.ndarray, canonical: np.ndarray, faces
) -> dict[str, np.ndarray]:
    """Canonical and distance maps of one view with no distance limit."""
    return canonicalize_view(
        view=ViewDepth(camera=_camera(row, depth), depth=depth),
        surface=TrackedSurface(vertices=vertices, faces=faces),
        deformation=vertices - canonical,
        config=CanonicalConfig(max_distance=1e9),
    )


class Limits:
    """Per limit and mesh kind: depth pixels kept and canonical errors, by truth region."""

    def __init__(self) -> None:
        self.depth_pixels = 0
        self.kept = {}
        self.errors = {}

    def add(self, kind: str, maps: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> None:
        has_depth = np.isfinite(maps["distance"])
        if kind == "tracked":
            self.depth_pixels += int(has_depth.sum())
        error = np.linalg.norm(maps["canonical"] - truth["canonical"], axis=-1)
        where = truth_regions(truth)
        for limit in LIMITS:
            kept = has_depth & (maps["distance"] <= limit)
            self.kept[kind, limit] = self.kept.get((kind, limit), 0) + int(kept.sum())
            for region in TRUTH_REGIONS:
                found = error[kept & where[region]]
                self.errors.setdefault((kind, limit, region), []).append(found)

    def print(self) -> None:
        print("transfer by distance limit: kept (of depth pixels) | canonical error median / p90")
        for kind in ("tracked", "truth"):
            for limit in LIMITS:
                parts = [f"{kind:>7} mesh, limit {limit * 1e3:5.0f} mm: kept "]
                parts.append(f"{self.kept[kind, limit] / max(self.depth_pixels, 1):6.1%}")
                face_other = [self.errors[kind, limit, r] for r in ("face", "other")]
                everything = [*face_other, self.errors[kind, limit, "hair"]]
                for label, chunks in (("without hair", face_other), ("with hair", everything)):
                    e = np.concatenate([c for group in chunks for c in group]) * 1e3
                    parts.append(
                        f" | {label} {np.median(e):.2f} / {np.percentile(e, 90):.2f} mm"
                        if len(e)
                        else f" | {label} -"
                    )
                hair = np.concatenate(self.errors[kind, limit, "hair"]) * 1e3
                if len(hair):
                    parts.append(f" | hair {len(hair)} px {np.median(hair):.2f} mm")
                print("".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--ground-truth", type=Path, required=True)
    parser.add_argument("--tracking", type=Path, help="the subject's tracking-* folder")
    args = parser.parse_args()
    counts = {r: np.zeros(3) for r in TRUTH_REGIONS}  # truth pixels, with depth, within 5 mm
    depth_err = {r: [] for r in TRUTH_REGIONS}
    canon_err = {r: [] for r in TRUTH_REGIONS}
    limits = Limits() if args.tracking else None
    truth_meshes = _truth_meshes(args.ground_truth) if args.tracking else {}
    faces = build_sample_model().f
    index = shards.read_index(args.shards)
    for _, row in index.iterrows():
        built = read_exr(args.shards / row["maps_file"])
        truth = read_exr(
            ground_truth_map_path(
                args.ground_truth, sequence=row.sequence, frame=int(row.frame), serial=row.serial
            )
        )
        for region, where in truth_regions(truth).items():
            error = np.abs(built["depth"] - truth["depth"])[where]
            found = np.isfinite(error)
            counts[region] += [where.sum(), found.sum(), (error[found] <= 5e-3).sum()]
            depth_err[region].append(error[found])
            has_canon = where & (built["mask"] > 0.5)
            canon_err[region].append(
                np.linalg.norm(built["canonical"] - truth["canonical"], axis=-1)[has_canon]
            )
        if limits is not None:
            key = (row.sequence, int(row.frame))
            mesh = trimesh.load(
                tracking.mesh_path(args.tracking, sequence=key[0], frame=key[1]), process=False
            )
            canonical = trimesh.load(args.tracking / tracking.CANONICAL_FILE, process=False)
            template = np.asarray(canonical.vertices, dtype=np.float64)
            depth = built["depth"]
            tracked = np.asarray(mesh.vertices, dtype=np.float64)
            limits.add("tracked", _transfer(row, depth, tracked, template, faces), truth)
            limits.add("truth", _transfer(row, depth, truth_meshes[key], template, faces), truth)
    print(f"views: {len(index)}")
    for region in TRUTH_REGIONS:
        visible, found, within = counts[region]
        d = np.concatenate(depth_err[region]) * 1e3
        c = np.concatenate(canon_err[region]) * 1e3
        print(
            f"{region:>5}: depth within 5 mm {within / max(visible, 1):.1%} of visible pixels, "
            f"median {np.median(d) if len(d) else np.nan:.3f} mm | canonical median "
            f"{np.median(c) if len(c) else np.nan:.3f} mm, p90 "
            f"{np.percentile(c, 90) if len(c) else np.nan:.3f} mm ({len(c)} pixels)"
        )
    if limits is not None:
        limits.print()


if __name__ == "__main__":
    main()
