"""Helpers shared by the Luigi tasks: the subject parameter, output paths, progress wiring."""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline import config
from tasks.formats import nersemble
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
