"""One timestep's reconstruction: SfM, dense depth, fusion, and its status record.

The three steps live in `sfm`, `mvs` and `fusion`; this module chains them for one timestep
and writes `reconstruction.json`, the record the subject report and later stages read. An
expected failure (a view that did not register, no depth) is a "dropped" record with its
reason, not an exception, so the subject's other timesteps go on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from tasks import fusion, mvs, sfm
from tasks.formats.atomic import atomic_dir
from tasks.formats.cameras import SERIALS
from tasks.frames import IMAGES_DIR, read_frames_summary
from tasks.pictures import stages as pictures
from tasks.progress import Progress

RECORD_FILE = "reconstruction.json"
SFM_DIR = "sfm"
CALIBRATED_DIR = "sfm_calibrated"
DENSE_DIR = "dense"
MAPS_DIR = "maps"
FUSED_FILE = "fused.ply"
DEPTH_PICTURE = "depth.png"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReconstructionConfig:
    sfm: sfm.SfmConfig = sfm.SfmConfig()
    """Feature extraction, matching and mapping."""
    mvs: mvs.MvsConfig = mvs.MvsConfig()
    """Dense depth backend and its settings."""
    fusion: fusion.FusionConfig = fusion.FusionConfig()
    """COLMAP stereo fusion thresholds."""
    dense_poses: Literal["calibrated", "sfm"] = "calibrated"
    """Poses for dense depth: the rig calibration (points triangulated with it), or the SfM
    model aligned to it. SfM always decides whether all 16 views register; at the sample's
    275x401 its poses are ~3 mm off, the calibration is exact."""


def _stage(progress: Progress | None, start: float, span: float) -> Progress | None:
    """A progress callback mapping a step's [0, 1] onto [start, start + span] of the whole."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + span * fraction, message)


def reconstruct_timestep(
    *,
    frames_dir: Path,
    output: Path,
    config: ReconstructionConfig = ReconstructionConfig(),
    progress: Progress | None = None,
) -> dict:
    """Reconstruct the timestep whose frames are in `frames_dir` into `output` (atomic)."""
    with atomic_dir(output) as tmp:
        record = _reconstruct(frames_dir, tmp, config, progress)
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str))
    return record


def _reconstruct(
    frames_dir: Path, tmp: Path, config: ReconstructionConfig, progress: Progress | None
) -> dict:
    """SfM, then dense depth and fusion when SfM kept the timestep, inside `tmp`."""
    uncorrected = read_frames_summary(frames_dir).uncorrected
    record = {"frames": str(frames_dir), "uncorrected": uncorrected}
    result = sfm.run_sfm(
        frames_dir=frames_dir,
        output=tmp / SFM_DIR,
        config=config.sfm,
        progress=_stage(progress, 0.0, 0.2),
    )
    record["sfm"] = {
        "status": result.status,
        "reason": result.reason,
        "registered": result.registered,
        "median_residual_mm": result.median_residual_mm,
        "reprojection_px": result.reprojection_px,
        "mode": result.mode,
        "seconds": dataclasses.asdict(result.timings),
    }
    if result.status == "ok":
        sparse, record["dense_poses"] = _dense_model(frames_dir, tmp, config, result)
        record.update(_dense(frames_dir, tmp, sparse, config, progress))
    else:
        record.update(status="dropped", reason=f"SfM: {result.reason}")
    return record


def _dense_model(
    frames_dir: Path, tmp: Path, config: ReconstructionConfig, mapped: sfm.SfmResult
) -> tuple[Path, str]:
    """The sparse model dense depth runs on (see `ReconstructionConfig.dense_poses`), and
    which poses it has: "calibrated", "sfm", or the fallback to SfM's with the reason."""
    if config.dense_poses == "sfm" or config.sfm.mode == "calibrated":
        return mapped.sparse_dir, "calibrated" if config.sfm.mode == "calibrated" else "sfm"
    calibrated = sfm.run_sfm(
        frames_dir=frames_dir,
        output=tmp / CALIBRATED_DIR,
        config=dataclasses.replace(config.sfm, mode="calibrated"),
    )
    if calibrated.status == "ok":
        return calibrated.sparse_dir, "calibrated"
    return mapped.sparse_dir, f"sfm (fallback: calibrated triangulation {calibrated.reason})"


def _dense(
    frames_dir: Path, tmp: Path, sparse: Path, config: ReconstructionConfig, progress
) -> dict:
    """Depth maps and fusion; the record's status, reason and figures."""
    workspace = fusion.prepare_workspace(
        images_dir=Path(frames_dir) / IMAGES_DIR, sparse_dir=sparse, output=tmp / DENSE_DIR
    )
    depth = mvs.run_mvs(
        workspace=workspace,
        maps_dir=tmp / MAPS_DIR,
        config=config.mvs,
        progress=_stage(progress, 0.2, 0.7),
    )
    record = {
        "mvs": {
            "status": depth.status,
            "reason": depth.reason,
            "backend": depth.backend,
            "device": depth.device,
            "seconds": depth.seconds,
        }
    }
    if depth.status == "failed":
        return record | {"status": "dropped", "reason": f"depth: {depth.reason}"}
    pictures.depth_picture(
        frames_dir=frames_dir, maps_dir=tmp / MAPS_DIR, serials=SERIALS, path=tmp / DEPTH_PICTURE
    )
    fused = fusion.fuse_workspace(
        workspace=workspace, output_ply=tmp / FUSED_FILE, config=config.fusion
    )
    record["fusion"] = {
        "status": fused.status,
        "reason": fused.reason,
        "points": fused.num_points,
        "seconds": fused.seconds,
    }
    if fused.status != "ok":
        return record | {"status": "dropped", "reason": f"fusion: {fused.reason}"}
    return record | {"status": "ok", "reason": ""}


def read_record(directory: Path) -> dict:
    """The status record of a reconstructed timestep."""
    return json.loads((Path(directory) / RECORD_FILE).read_text())
