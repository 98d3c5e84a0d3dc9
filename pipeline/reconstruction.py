"""Per-timestep reconstruction tasks: 16-view frames, then SfM + dense depth + fusion."""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline import config
from pipeline.common import (
    SubjectParameter,
    calibration_files,
    camera_sources,
    fingerprint,
    progress_callback,
    stage_tag,
    subject_input,
    subject_output,
    subject_sources,
    upstream_tag,
)
from pipeline.selection import SelectFrames
from pipeline.subject import InspectSubject
from tasks import frames, reconstruction, report, selection
from tasks.formats import nersemble


def timestep_dir(subject: str, sequence: str, frame: int) -> Path:
    """`{subject output}/timesteps/{sequence}_{frame:05d}`: one folder per selected timestep."""
    return subject_output(subject) / "timesteps" / f"{sequence}_{frame:05d}"


class TimestepTask(luigi.Task):
    """A task about one timestep (sequence, frame) of a subject."""

    subject = SubjectParameter()
    sequence = luigi.Parameter()
    frame = luigi.IntParameter()

    @property
    def folder(self) -> Path:
        return timestep_dir(self.subject, self.sequence, self.frame)


class ExtractFrames(TimestepTask):
    """The timestep decoded from all 16 cameras, colour-corrected and downsampled."""

    def requires(self) -> InspectSubject:
        return InspectSubject(subject=self.subject)

    def output(self) -> luigi.LocalTarget:
        sources = camera_sources(self.subject, self.sequence, frame=self.frame)
        inputs = fingerprint([*calibration_files(self.subject), *sources])
        tag = stage_tag(config.frames_config(), frames.SUMMARY_VERSION, inputs)
        return luigi.LocalTarget(str(self.folder / f"frames-{tag}"))

    def run(self) -> None:
        frames.extract_frames(
            subject=nersemble.load_subject(subject_input(self.subject)),
            sequence=self.sequence,
            frame=self.frame,
            output=Path(self.output().path),
            config=config.frames_config(),
            progress=progress_callback(self),
        )


class ExtractSequenceFrames(luigi.Task):
    """The selected timesteps of one sequence, each camera's video decoded once in one pass:
    the same folders `ExtractFrames` makes one timestep at a time."""

    subject = SubjectParameter()
    sequence = luigi.Parameter()
    frames = luigi.TupleParameter(description="The selected frames of the sequence")

    def requires(self) -> InspectSubject:
        return InspectSubject(subject=self.subject)

    def _timesteps(self) -> dict[int, ExtractFrames]:
        return {
            f: ExtractFrames(subject=self.subject, sequence=self.sequence, frame=f)
            for f in self.frames
        }

    def output(self) -> dict[int, luigi.LocalTarget]:
        return {f: task.output() for f, task in self._timesteps().items()}

    def run(self) -> None:
        missing = {f: Path(t.path) for f, t in self.output().items() if not t.exists()}
        frames.extract_sequence_frames(
            subject=nersemble.load_subject(subject_input(self.subject)),
            sequence=self.sequence,
            frames=sorted(missing),
            outputs=missing,
            config=config.frames_config(),
            progress=progress_callback(self),
        )


class Reconstruct(TimestepTask):
    """SfM (kept only if 16/16 register), dense depth and fusion; a status record either way."""

    def requires(self) -> ExtractFrames:
        return ExtractFrames(subject=self.subject, sequence=self.sequence, frame=self.frame)

    def output(self) -> luigi.LocalTarget:
        tag = stage_tag(upstream_tag(self.input()), config.reconstruction_config())
        return luigi.LocalTarget(str(self.folder / f"recon-{tag}"))

    def run(self) -> None:
        reconstruction.reconstruct_timestep(
            frames_dir=Path(self.input().path),
            output=Path(self.output().path),
            config=config.reconstruction_config(),
            progress=progress_callback(self),
        )


class ReconstructSubject(luigi.Task):
    """Every selected timestep reconstructed; a table of which were kept and why not."""

    subject = SubjectParameter()

    def requires(self) -> SelectFrames:
        return SelectFrames(subject=self.subject)

    def output(self) -> luigi.LocalTarget:
        tag = stage_tag(
            upstream_tag(self.input()),
            config.frames_config(),
            config.reconstruction_config(),
            fingerprint(subject_sources(self.subject)),
        )
        return luigi.LocalTarget(
            str(subject_output(self.subject) / f"reconstruction-{tag}.parquet")
        )

    def run(self):  # noqa: ANN201 - a generator: Luigi runs the yielded tasks first
        chosen = selection.read_selection(Path(self.input().path)).table
        yield [
            ExtractSequenceFrames(
                subject=self.subject, sequence=sequence, frames=tuple(sorted(rows.frame))
            )
            for sequence, rows in chosen.groupby("sequence")
        ]
        tasks = [
            Reconstruct(subject=self.subject, sequence=r.sequence, frame=int(r.frame))
            for r in chosen.itertuples()
        ]
        targets = yield tasks
        table = report.reconstruction_table(
            selected=chosen,
            records=[reconstruction.read_record(Path(t.path)) for t in targets],
            folders=[t.path for t in targets],
        )
        with self.output().temporary_path() as tmp:
            table.to_parquet(tmp, compression="zstd", index=False)
