"""Frames of selected timesteps from all 16 cameras, at the working resolution (paper 3.3).

`extract_sequence_frames` does every selected timestep of one sequence at once: each camera's
video is indexed once and its selected frames decoded in one forward pass, each view written
as it comes (one full-size frame in memory at a time). `extract_frames` is the same code for
one timestep, and writes the same bytes. Output folder per timestep (written to a temporary
sibling, then renamed into place):

    images/cam_{serial}.png   lossless RGB, what COLMAP reads (only the usable views)
    cameras.json              the 16 cameras at the working resolution (`read_cameras_json`)
    frames.json               status, reason, one status per view, and whether (or why not)
                              the images were colour-corrected (`read_frames_summary`)

A missing video, a frame that does not decode or a blank view (a dead camera: near-constant
image) is an expected failure: the timestep comes back "dropped" with the reason, and the
usable views are still written so the failure can be looked at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from tasks.formats import video
from tasks.formats.atomic import atomic_dir
from tasks.formats.cameras import SERIALS, Camera
from tasks.formats.nersemble import Subject, color_calibration_path, iter_read_frames
from tasks.progress import Progress

Status = Literal["ok", "dropped"]
ViewState = Literal["ok", "missing", "undecodable", "blank"]

IMAGES_DIR = "images"
CAMERAS_FILE = "cameras.json"
SUMMARY_FILE = "frames.json"
SUMMARY_VERSION = 2
"""frames.json's layout (2: records the colour correction); part of the frames' identity."""


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
    uncorrected: str
    """Why the images are not colour-corrected ('' when they are)."""
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
    results = extract_sequence_frames(
        subject=subject,
        sequence=sequence,
        frames=[frame],
        outputs={frame: output},
        config=config,
        progress=progress,
    )
    return results[frame]


def extract_sequence_frames(
    *,
    subject: Subject,
    sequence: str,
    frames: Sequence[int],
    outputs: Mapping[int, Path],
    config: FramesConfig = FramesConfig(),
    progress: Progress | None = None,
) -> dict[int, TimestepFrames]:
    """`extract_frames` for several timesteps of one sequence, reading each video once.

    For each camera in turn, its frames `frames` are decoded in one pass and each view is
    written into its timestep's temporary folder as it comes; every folder is renamed to
    `outputs[frame]` only when all are complete, and an error leaves none of them. Each
    folder holds the bytes `extract_frames` writes for that timestep. Returns frame ->
    result, in the order of `frames`. Failures and errors as in `extract_frames`.
    """
    frames = [int(t) for t in frames]
    distinct = len(set(frames)) == len(frames) == len({Path(p) for p in outputs.values()})
    if not distinct or set(frames) != set(outputs):
        raise ValueError(f"need distinct frames, each with its own output: {dict(outputs)}")
    with contextlib.ExitStack() as stack:
        tmps = {t: stack.enter_context(atomic_dir(Path(outputs[t]))) for t in frames}
        states = _write_views(subject, sequence, tmps, config, progress)
        uncorrected = uncorrected_reason(subject, config)
        results = {
            t: _result(sequence, t, states[t], uncorrected, Path(outputs[t])) for t in frames
        }
        cameras = {s: subject.camera(s, downsample=config.downsample) for s in SERIALS}
        for t, tmp in tmps.items():
            write_cameras_json(tmp / CAMERAS_FILE, cameras)
            _write_json(tmp / SUMMARY_FILE, _summary_dict(results[t], config))
    return results


def uncorrected_reason(subject: Subject, config: FramesConfig) -> str:
    """Why `subject`'s frames are not colour-corrected under `config` ('' when they are): a
    capture without a colour calibration is still usable, but its colours are the cameras'."""
    if not config.color_correct:
        return "colour correction off (FramesConfig.color_correct)"
    if subject.color_calibration is None:
        return f"no colour calibration: {color_calibration_path(subject.directory)} missing"
    return ""


def _result(
    sequence: str, frame: int, views: list[ViewStatus], uncorrected: str, output: Path
) -> TimestepFrames:
    """The timestep is usable only when all 16 views are."""
    bad = [v for v in views if v.state != "ok"]
    return TimestepFrames(
        sequence=sequence,
        frame=frame,
        status="dropped" if bad else "ok",
        reason="; ".join(f"camera {v.serial} {v.state}: {v.reason}" for v in bad),
        views=tuple(views),
        uncorrected=uncorrected,
        directory=output,
    )


def _write_views(
    subject: Subject,
    sequence: str,
    tmps: Mapping[int, Path],
    config: FramesConfig,
    progress: Progress | None,
) -> dict[int, list[ViewStatus]]:
    """The usable views as PNGs into each frame's folder, camera by camera; each view's state.

    Returns frame -> the 16 view states in `SERIALS` order.
    """
    for tmp in tmps.values():
        (tmp / IMAGES_DIR).mkdir()
    states: dict[int, list[ViewStatus]] = {t: [] for t in tmps}
    label = f"frame {next(iter(tmps))}" if len(tmps) == 1 else f"{len(tmps)} frames"
    for k, serial in enumerate(SERIALS):
        for t, state, reason, image in _camera_views(subject, sequence, serial, tmps, config):
            if image is not None:
                _write_png(image_path(tmps[t], serial), image)
            states[t].append(ViewStatus(serial=serial, state=state, reason=reason))
        if any(len(views) != k + 1 for views in states.values()):
            raise RuntimeError(f"camera {serial}: not every frame of {sorted(tmps)} was read")
        if progress is not None:
            progress((k + 1) / len(SERIALS), f"{sequence} {label}: camera {serial}")
    return states


def _camera_views(
    subject: Subject, sequence: str, serial: str, frames: Iterable[int], config: FramesConfig
) -> Iterator[tuple[int, ViewState, str, np.ndarray | None]]:
    """(frame, state, reason, image) per frame of one camera in frame order, from one
    decoding pass; the (H, W, 3) uint8 RGB image is None unless the state is "ok"."""
    frames = sorted(frames)
    reads = iter_read_frames(
        subject,
        sequence=sequence,
        serial=serial,
        frames=frames,
        downsample=config.downsample,
        color_correct=config.color_correct,
    )
    done: set[int] = set()
    try:
        for t, image, error in reads:
            done.add(t)
            yield t, *_view_state(image, error, config)
    except FileNotFoundError as e:
        yield from ((t, "missing", str(e), None) for t in frames if t not in done)
    except video.VideoError as e:
        yield from ((t, "undecodable", str(e), None) for t in frames if t not in done)


def _view_state(
    image: np.ndarray | None, error: str, config: FramesConfig
) -> tuple[ViewState, str, np.ndarray | None]:
    """(state, reason, image) of one read view; the image is None unless the state is "ok"."""
    if image is None:
        return "undecodable", error, None
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
        "version": SUMMARY_VERSION,
        "sequence": result.sequence,
        "frame": result.frame,
        "status": result.status,
        "reason": result.reason,
        "views": {v.serial: {"state": v.state, "reason": v.reason} for v in result.views},
        "uncorrected": result.uncorrected,
        "config": dataclasses.asdict(config),
    }


def read_frames_summary(directory: Path) -> TimestepFrames:
    """The result of an earlier `extract_frames` into `directory`, from its frames.json."""
    path = Path(directory) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text())
        if data.get("version") != SUMMARY_VERSION:
            raise ValueError(f"layout {data.get('version', 1)}, not {SUMMARY_VERSION}")
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
            uncorrected=data["uncorrected"],
            directory=Path(directory),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable frames summary ({e})") from e


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1))
