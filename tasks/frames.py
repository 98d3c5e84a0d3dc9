"""Frames of one selected timestep from all 16 cameras, at the working resolution (paper 3.3).

Output folder (written to a temporary sibling, then renamed into place):

    images/cam_{serial}.png   lossless RGB, what COLMAP reads (only the usable views)
    cameras.json              the 16 cameras at the working resolution (`read_cameras_json`)
    frames.json               status, reason and one status per view (`read_frames_summary`)

A missing video, a frame that does not decode or a blank view (a dead camera: near-constant
image) is an expected failure: the timestep comes back "dropped" with the reason, and the
usable views are still written so the failure can be looked at.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from tasks.formats import video
from tasks.formats.atomic import atomic_dir
from tasks.formats.cameras import SERIALS, Camera
from tasks.formats.nersemble import Subject, read_frames
from tasks.progress import Progress

Status = Literal["ok", "dropped"]
ViewState = Literal["ok", "missing", "undecodable", "blank"]

IMAGES_DIR = "images"
CAMERAS_FILE = "cameras.json"
SUMMARY_FILE = "frames.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FramesConfig:
    """How a timestep's frames are prepared."""

    downsample: int = 4
    """Integer shrink factor from the stored full resolution (paper: 4, 2200x3208 -> 550x802)."""
    color_correct: bool = True
    """Apply the subject's colour calibration (when it has one)."""
    blank_max_std: float = 2.0
    """A view whose grey-level standard deviation (uint8 levels) is at most this is blank."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewStatus:
    """What became of one camera's view."""

    serial: str
    """Camera serial."""
    state: ViewState
    """"ok", or why the view is unusable."""
    reason: str
    """Human-readable detail ('' when ok)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TimestepFrames:
    """Result of `extract_frames`: where the frames are and whether the timestep is usable."""

    sequence: str
    """Sequence name."""
    frame: int
    """Frame number in the sequence."""
    status: Status
    """"ok" when all 16 views are usable, else "dropped"."""
    reason: str
    """Why it was dropped ('' when ok), naming the cameras."""
    views: tuple[ViewStatus, ...]
    """One entry per camera, in `SERIALS` order."""
    directory: Path
    """The output folder."""

    def image_path(self, serial: str) -> Path:
        """Where the view of `serial` is (exists only when its state is "ok")."""
        return image_path(self.directory, serial)


def image_name(serial: str) -> str:
    """The file name of one camera's view inside `images/` (COLMAP's image name)."""
    return f"cam_{serial}.png"


def image_path(directory: Path, serial: str) -> Path:
    """One camera's view inside a timestep's frames folder."""
    return Path(directory) / IMAGES_DIR / image_name(serial)


def extract_frames(
    *,
    subject: Subject,
    sequence: str,
    frame: int,
    output: Path,
    config: FramesConfig = FramesConfig(),
    progress: Progress | None = None,
) -> TimestepFrames:
    """Decode, colour-correct and shrink frame `frame` of `sequence` from every camera.

    Unexpected problems (wrong image size, unwritable output) raise; a camera whose view is
    missing, undecodable or blank makes the timestep "dropped" with the reason.
    """
    output = Path(output)
    with atomic_dir(output) as tmp:
        views = _write_views(subject, sequence, frame, tmp, config, progress)
        bad = [v for v in views if v.state != "ok"]
        result = TimestepFrames(
            sequence=sequence,
            frame=frame,
            status="dropped" if bad else "ok",
            reason="; ".join(f"camera {v.serial} {v.state}: {v.reason}" for v in bad),
            views=tuple(views),
            directory=output,
        )
        _write_json(tmp / SUMMARY_FILE, _summary_dict(result, config))
    return result


def _write_views(
    subject: Subject,
    sequence: str,
    frame: int,
    tmp: Path,
    config: FramesConfig,
    progress: Progress | None,
) -> list[ViewStatus]:
    """The usable views as PNGs and all 16 working-size cameras into `tmp`; each view's state."""
    (tmp / IMAGES_DIR).mkdir()
    views = []
    for k, serial in enumerate(SERIALS):
        state, reason, image = _read_view(subject, sequence, frame, serial, config)
        if state == "ok":
            _write_png(image_path(tmp, serial), image)
        views.append(ViewStatus(serial=serial, state=state, reason=reason))
        if progress is not None:
            progress((k + 1) / len(SERIALS), f"{sequence} frame {frame}: camera {serial}")
    cameras = {s: subject.camera(s, downsample=config.downsample) for s in SERIALS}
    write_cameras_json(tmp / CAMERAS_FILE, cameras)
    return views


def _read_view(
    subject: Subject, sequence: str, frame: int, serial: str, config: FramesConfig
) -> tuple[ViewState, str, np.ndarray | None]:
    """(state, reason, image); the image is None unless the state is "ok"."""
    try:
        frames = read_frames(
            subject,
            sequence=sequence,
            serial=serial,
            frames=[frame],
            downsample=config.downsample,
            color_correct=config.color_correct,
        )
    except FileNotFoundError as e:
        return "missing", str(e), None
    except video.VideoError as e:
        return "undecodable", str(e), None
    if frame not in frames.images:
        return "undecodable", frames.failed.get(frame, f"frame {frame} did not decode"), None
    image = frames.images[frame]
    std = float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).std())
    if std <= config.blank_max_std:
        return "blank", f"near-constant image (grey std {std:.2f} <= {config.blank_max_std})", None
    return "ok", "", image


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


# ---------------------------------------------------------------- JSON files


def write_cameras_json(path: Path, cameras: Mapping[str, Camera]) -> None:
    """Serial -> {K, world_2_cam, width, height} (OpenCV, metres), cameras in given order."""
    data = {
        serial: {
            "K": np.asarray(c.K).tolist(),
            "world_2_cam": np.asarray(c.world_2_cam).tolist(),
            "width": c.width,
            "height": c.height,
        }
        for serial, c in cameras.items()
    }
    _write_json(path, data)


def read_cameras_json(path: Path) -> dict[str, Camera]:
    """The cameras `write_cameras_json` wrote; a clear error naming a bad file."""
    try:
        data = json.loads(Path(path).read_text())
        return {
            serial: Camera(
                serial=serial,
                K=np.asarray(c["K"], dtype=np.float64).reshape(3, 3),
                world_2_cam=np.asarray(c["world_2_cam"], dtype=np.float64).reshape(4, 4),
                width=int(c["width"]),
                height=int(c["height"]),
            )
            for serial, c in data.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable cameras file ({e})") from e


def _summary_dict(result: TimestepFrames, config: FramesConfig) -> dict:
    return {
        "sequence": result.sequence,
        "frame": result.frame,
        "status": result.status,
        "reason": result.reason,
        "views": {v.serial: {"state": v.state, "reason": v.reason} for v in result.views},
        "config": dataclasses.asdict(config),
    }


def read_frames_summary(directory: Path) -> TimestepFrames:
    """The result of an earlier `extract_frames` into `directory`, from its frames.json."""
    path = Path(directory) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text())
        views = tuple(
            ViewStatus(serial=s, state=v["state"], reason=v["reason"])
            for s, v in data["views"].items()
        )
        return TimestepFrames(
            sequence=data["sequence"],
            frame=int(data["frame"]),
            status=data["status"],
            reason=data["reason"],
            views=views,
            directory=Path(directory),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable frames summary ({e})") from e


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1))
