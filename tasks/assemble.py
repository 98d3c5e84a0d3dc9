"""Assembling one subject's stage outputs: tracking inputs, canonical maps, the shard.

Each stage module works on plain arrays; this module knows where the earlier stages put
their files (frames, reconstruction, tracking) and hands the arrays over.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import trimesh

from tasks import canonical, fusion, tracking
from tasks.formats import shards
from tasks.formats.exr import read_exr
from tasks.frames import CAMERAS_FILE, image_path, read_cameras_json
from tasks.mvs import maps_path
from tasks.progress import Progress
from tasks.reconstruction import FUSED_FILE, MAPS_DIR, read_record


def tracking_inputs(reconstructed: pd.DataFrame) -> list[tracking.TimestepInput]:
    """The kept timesteps of a subject's reconstruction table, as the tracker takes them."""
    kept = reconstructed[reconstructed.status == "ok"]
    return [
        tracking.TimestepInput(
            sequence=r.sequence,
            frame=int(r.frame),
            frames_dir=Path(read_record(Path(r.folder))["frames"]),
            fused_ply=Path(r.folder) / FUSED_FILE,
        )
        for r in kept.itertuples()
    ]


def _mesh_vertices(path: Path) -> np.ndarray:
    return np.asarray(trimesh.load(path, process=False).vertices, dtype=np.float64)


def canonicalize_reconstruction(
    *,
    recon_dir: Path,
    tracking_dir: Path,
    sequence: str,
    frame: int,
    config: canonical.CanonicalConfig,
    out_dir: Path,
    progress: Progress | None = None,
) -> canonical.CanonicalTimestep:
    """Canonical maps of one reconstructed, tracked timestep (see `canonical`)."""
    frames_dir = Path(read_record(recon_dir)["frames"])
    cameras = read_cameras_json(frames_dir / CAMERAS_FILE)
    views = []
    for serial, camera in cameras.items():
        maps_file = maps_path(recon_dir / MAPS_DIR, serial)
        if maps_file.is_file():
            maps = read_exr(maps_file)
            views.append(
                canonical.ViewDepth(camera=camera, depth=maps["depth"], normal=maps["normal"])
            )
    cloud = fusion.read_fused_ply(recon_dir / FUSED_FILE)
    tracked = trimesh.load(
        tracking.mesh_path(tracking_dir, sequence=sequence, frame=frame), process=False
    )
    return canonical.canonicalize_timestep(
        views=views,
        cloud_points=cloud.points,
        cloud_colors=cloud.colors,
        tracked_vertices=np.asarray(tracked.vertices, dtype=np.float64),
        canonical_vertices=_mesh_vertices(tracking_dir / tracking.CANONICAL_FILE),
        faces=np.asarray(tracked.faces),
        config=config,
        out_dir=out_dir,
        progress=progress,
    )


def shard_samples(
    *,
    subject: str,
    timesteps: list[tuple[str, int, Path, Path]],
    tracking_dir: Path,
) -> list[shards.ShardSample]:
    """One sample per view with canonical maps: `timesteps` holds (sequence, frame,
    reconstruction folder, canonical folder) of the kept timesteps."""
    identity = tracking.read_tracked_params(tracking_dir)
    tracked = identity.params.set_index(["sequence", "frame"])
    residuals = pd.read_parquet(tracking_dir / tracking.RESIDUALS_FILE)
    residuals = residuals.set_index(["sequence", "frame"])
    samples = []
    for sequence, frame, recon_dir, canonical_dir in timesteps:
        record = read_record(recon_dir)
        frames_dir = Path(record["frames"])
        cameras = read_cameras_json(frames_dir / CAMERAS_FILE)
        reprojection = record["sfm"].get("reprojection_px", {})
        params = tracked.loc[(sequence, frame)]
        flame = {
            name: np.asarray(identity.shape if name == "shape" else params[name], dtype=float)
            for name in shards.FLAME_COLUMNS
        }
        views = pd.read_parquet(canonical_dir / canonical.VIEWS_FILE).set_index("serial")
        for serial in views.index:
            quality = {
                "sfm_residual_px": float(reprojection.get(serial, np.nan)),
                "tracking_residual": float(residuals.loc[(sequence, frame), "landmark_px"]),
                "surface_distance_m": float(views.loc[serial, "median_distance"]),
                "valid_fraction": float(views.loc[serial, "valid_fraction"]),
            }
            samples.append(
                shards.ShardSample(
                    subject=subject,
                    sequence=sequence,
                    frame=frame,
                    camera=cameras[serial],
                    flame=flame,
                    quality=quality,
                    image=image_path(frames_dir, serial),
                    maps=canonical_dir / canonical.view_file(serial),
                )
            )
    return samples
