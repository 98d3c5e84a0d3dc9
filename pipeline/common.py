"""Helpers shared by the Luigi tasks: the subject parameter, output paths, progress wiring,
and the identity every output carries.

Identity: an output's name (or, for outputs at fixed paths, an `identity` field inside it)
ends in a tag hashed from its stage's settings, the tags of the outputs it was built from
(`upstream_tag`) and the size and modification time of the raw files it read
(`fingerprint`). A changed setting or input therefore gives a new name downstream of it and
nowhere else, and an old output is never taken for the new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import luigi

from pipeline import config
from tasks.formats import nersemble
from tasks.formats.atomic import write_json
from tasks.formats.cameras import SERIALS
from tasks.formats.names import validate_subject_id
from tasks.progress import Progress


class SubjectParameter(luigi.Parameter):
    """A subject id; refused at task creation when it is not a plain id (`../x`, `043/..`)."""

    def normalize(self, x: str) -> str:
        return validate_subject_id(str(x))


def subject_output(subject: str) -> Path:
    """`{output_root}/subjects/{subject}`: every per-subject output lives below it."""
    return config.output_root() / "subjects" / validate_subject_id(subject)


def subject_input(subject: str) -> Path:
    """The subject's folder in the configured NeRSemble root."""
    return nersemble.subject_dir(root=config.data_root(), subject=subject)


def progress_callback(task: luigi.Task) -> Progress:
    """Progress (fraction in [0, 1], message) to Luigi's status; does nothing off a worker."""

    def report(fraction: float, message: str) -> None:
        task.set_progress_percentage(round(100 * fraction))
        task.set_status_message(message)

    return report


def stage_tag(*parts: object) -> str:
    """8 hex digits naming what shaped an output: settings dataclasses (by value), upstream
    tags, fingerprints; anything else JSON can write."""
    values = [dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def upstream_tag(target: luigi.Target) -> str:
    """The identity an upstream output carries: its name, or the `identity` it records."""
    if isinstance(target, IdentityTarget):
        return target.identity
    return Path(target.path).name


def fingerprint(paths: Iterable[Path]) -> list[list[object]]:
    """(name, size, mtime in ns) of each file, or (name, "missing"): an edited or replaced
    input is not taken for the old one. Cheap: one stat per file, no reading."""
    rows: list[list[object]] = []
    for path in paths:
        try:
            stat = os.stat(path)
            rows.append([Path(path).name, stat.st_size, stat.st_mtime_ns])
        except FileNotFoundError:
            rows.append([Path(path).name, "missing"])
    return rows


def calibration_files(subject: str) -> list[Path]:
    """The subject's camera and colour calibration files."""
    folder = subject_input(subject)
    return [nersemble.camera_params_path(folder), nersemble.color_calibration_path(folder)]


def camera_sources(
    subject: str, sequence: str, *, serials: Iterable[str] = SERIALS, frame: int | None = None
) -> list[Path]:
    """The raw files a sequence's cameras are read from: their videos, or (extracted-frames
    layout) the images of `frame`, or of every frame when `frame` is None."""
    folder = subject_input(subject)
    serials = tuple(serials)
    try:
        layout = nersemble.sequence_layout(folder, sequence=sequence)
    except (FileNotFoundError, ValueError):
        return []  # nothing there yet (the inventory says why)
    if layout == "video":
        return [nersemble.video_path(folder, sequence=sequence, serial=s) for s in serials]
    return nersemble.frame_image_files(folder, sequence=sequence, serials=serials, frame=frame)


def subject_sources(subject: str) -> list[Path]:
    """Every camera source of every sequence of the subject, and its calibration."""
    try:
        sequences = nersemble.list_sequences(subject_input(subject))
    except (FileNotFoundError, ValueError):
        sequences = []
    sources = [p for s in sequences for p in camera_sources(subject, s)]
    return calibration_files(subject) + sources


class IdentityTarget(luigi.LocalTarget):
    """A JSON file at a fixed path that counts as built only when its `identity` field equals
    the expected one: for outputs whose place is fixed (a subject's report, its shard)."""

    def __init__(self, path: str | os.PathLike, *, identity: str) -> None:
        super().__init__(str(path))
        self.identity = identity

    def exists(self) -> bool:
        try:
            return json.loads(Path(self.path).read_text()).get("identity") == self.identity
        except (OSError, ValueError, AttributeError):
            return False

    def write(self, data: dict) -> None:
        """Write `data` with this identity, atomically, replacing an older build's file."""
        write_json(self.path, {**data, "identity": self.identity}, indent=2)
