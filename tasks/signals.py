"""Face signals on the frontal camera: MediaPipe blendshapes, head pose and landmarks per frame.

Frame selection (paper 3.3) samples timesteps that are diverse in expression and pose; these
signals are the space it samples in. One table per (subject, sequence), streamed from the
video so a long sequence never sits in memory. A video that stops decoding part way keeps the
frames before the break and records why, so selection can still use them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.spatial.transform import Rotation

from tasks.face_landmarker import BLENDSHAPE_NAMES, FaceLandmarkerConfig, FaceLandmarkerRunner
from tasks.formats import nersemble, video
from tasks.formats.cameras import FRONTAL_SERIAL
from tasks.progress import Progress

_METADATA_KEY = b"faceanything.signals"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SignalsConfig:
    serial: str = FRONTAL_SERIAL
    """Camera the signals come from (NeRSemble's frontal camera by default)."""
    stride: int = 1
    """Use every `stride`-th frame (NeRSemble records 73 fps; 3 is a common choice)."""
    downsample: int = 4
    """Frames are shrunk by this factor before detection (landmarks are in those pixels)."""
    landmarker: FaceLandmarkerConfig = FaceLandmarkerConfig(running_mode="video")
    """MediaPipe Face Landmarker settings (model file, confidences, running mode)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequenceSignals:
    sequence: str
    """Sequence name."""
    table: pd.DataFrame
    """One row per frame read: sequence, frame, detected, blendshapes (52), rotation (3,
    axis-angle, rad), translation (3, cm), landmarks (478 * 3, pixels at the downsampled size)."""
    failure: str
    """Why the sequence stopped early or gave nothing ('' when every frame was read)."""

    @property
    def detected_frames(self) -> int:
        return int(self.table.detected.sum()) if len(self.table) else 0


def _row(sequence: str, frame: int, runner: FaceLandmarkerRunner, image: np.ndarray) -> dict:
    in_video = runner.config.running_mode == "video"
    timestamp = frame * 1000 // video.NERSEMBLE_FPS if in_video else None
    s = runner.detect(image=image, timestamp_ms=timestamp)
    return dict(
        sequence=sequence,
        frame=frame,
        detected=s.detected,
        blendshapes=s.blendshapes.astype(np.float32).tolist(),
        rotation=s.rotation.tolist(),
        translation=s.translation.tolist(),
        landmarks=s.landmarks.astype(np.float32).ravel().tolist(),
    )


def extract_signals(
    *,
    subject: nersemble.Subject,
    sequence: str,
    config: SignalsConfig,
    progress: Progress | None = None,
) -> SequenceSignals:
    """MediaPipe on every `stride`-th frame of one sequence of the configured camera."""
    path = nersemble.video_path(subject.directory, sequence=sequence, serial=config.serial)
    total = max(len(nersemble.frame_indices(subject, sequence=sequence, serial=config.serial)), 1)
    frames = nersemble.iter_frames(
        subject,
        sequence=sequence,
        serial=config.serial,
        stride=config.stride,
        downsample=config.downsample,
    )
    rows, failure = [], ""
    with FaceLandmarkerRunner(config=config.landmarker) as runner:
        try:
            for frame, image in frames:
                rows.append(_row(sequence, frame, runner, image))
                if progress is not None:
                    progress(min(frame / total, 1.0), f"{sequence}: frame {frame}/{total}")
        except (video.VideoError, nersemble.DataError) as err:
            failure = f"{path}: {err}"
    if not rows and not failure:
        failure = f"{path}: no frames"
    return SequenceSignals(
        sequence=sequence, table=pd.DataFrame(rows, columns=COLUMNS), failure=failure
    )


COLUMNS = [
    "sequence",
    "frame",
    "detected",
    "blendshapes",
    "rotation",
    "translation",
    "landmarks",
]


def write_signals(path: Path, signals: SequenceSignals) -> None:
    """Parquet (zstd) with the failure reason and blendshape names in the file's metadata."""
    table = pa.Table.from_pandas(signals.table, preserve_index=False)
    meta = {
        "sequence": signals.sequence,
        "failure": signals.failure,
        "blendshape_names": list(BLENDSHAPE_NAMES),
    }
    table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(meta).encode()})
    pq.write_table(table, path, compression="zstd")


def read_signals(path: Path) -> SequenceSignals:
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(_METADATA_KEY, b"{}"))
    return SequenceSignals(
        sequence=meta["sequence"], table=table.to_pandas(), failure=meta.get("failure", "")
    )


def head_rotation_error_deg(signals: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """Angle (degrees) between MediaPipe's head rotation and the true one, per frame with a
    face, after removing the constant rotation between MediaPipe's face frame and FLAME's.

    `truth` holds per (sequence, frame) FLAME `rotation` and `neck_pose` (the sample's ground
    truth params.parquet): the head turns by the global rotation, then the neck joint."""
    merged = signals[signals.detected.astype(bool)].merge(
        truth, on=["sequence", "frame"], suffixes=("_mp", "_gt")
    )
    estimated = Rotation.from_rotvec(np.stack(merged.rotation_mp.to_numpy()))
    true = Rotation.from_rotvec(np.stack(merged.rotation_gt.to_numpy())) * Rotation.from_rotvec(
        np.stack(merged.neck_pose.to_numpy())
    )
    offset = (estimated * true.inv()).mean()
    return np.degrees((offset.inv() * estimated * true.inv()).magnitude())
