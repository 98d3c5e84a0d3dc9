"""Frame selection tasks: MediaPipe signals per sequence, then farthest point sampling."""

from __future__ import annotations

from pathlib import Path

import luigi
import pandas as pd

from pipeline import config
from pipeline.common import (
    SubjectParameter,
    camera_sources,
    fingerprint,
    progress_callback,
    stage_tag,
    subject_input,
    subject_output,
)
from pipeline.subject import InspectSubject
from tasks import selection, signals
from tasks.formats import nersemble
from tasks.pictures import stages as pictures


def signals_path(subject: str, sequence: str) -> Path:
    """`signals/{sequence}-{tag}.parquet`: the tag names the signals settings and the frontal
    camera's source files of that sequence."""
    cfg = config.signals_config()
    sources = camera_sources(subject, sequence, serials=(cfg.serial,))
    tag = stage_tag(cfg, fingerprint(sources))
    return subject_output(subject) / "signals" / f"{sequence}-{tag}.parquet"


class ExtractSignals(luigi.Task):
    """Blendshapes, head pose and landmarks on the frontal camera for one sequence."""

    subject = SubjectParameter()
    sequence = luigi.Parameter()

    def requires(self) -> InspectSubject:
        return InspectSubject(subject=self.subject)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(signals_path(self.subject, self.sequence)))

    def run(self) -> None:
        result = signals.extract_signals(
            subject=nersemble.load_subject(subject_input(self.subject)),
            sequence=self.sequence,
            config=config.signals_config(),
            progress=progress_callback(self),
        )
        self.output().makedirs()
        with self.output().temporary_path() as tmp:
            signals.write_signals(tmp, result)


class SelectFrames(luigi.Task):
    """The subject's timesteps: FPS on blendshapes, then on pose (paper: 40 + 10)."""

    subject = SubjectParameter()

    def requires(self) -> InspectSubject:
        return InspectSubject(subject=self.subject)

    def output(self) -> luigi.LocalTarget:
        frontal = [signals_path(self.subject, s).name for s in self._all_sequences()]
        tag = stage_tag(frontal, config.skip_sequences(), config.selection_config())
        return luigi.LocalTarget(str(subject_output(self.subject) / f"selection-{tag}.parquet"))

    def _all_sequences(self) -> list[str]:
        try:
            return nersemble.list_sequences(subject_input(self.subject))
        except (FileNotFoundError, ValueError):
            return []

    def _frontal(self) -> pd.DataFrame:
        """The inventory rows of the frontal camera in the sequences not skipped."""
        table = pd.read_parquet(self.input().path)
        frontal = table[table.serial == config.signals().serial]
        return frontal[~frontal.sequence.isin(config.skip_sequences())]

    def run(self):  # noqa: ANN201 - a generator: Luigi runs the yielded tasks first
        frontal = self._frontal()
        usable = sorted(frontal[frontal.problem == ""].sequence)
        failures = {
            r.sequence: f"frontal camera {r.serial} unusable: {r.problem}"
            for r in frontal[frontal.problem != ""].itertuples()
        }
        targets = yield [ExtractSignals(subject=self.subject, sequence=s) for s in usable]
        per_sequence = [signals.read_signals(t.path) for t in targets]
        failures |= {s.sequence: s.failure for s in per_sequence if s.failure}
        tables = [s.table for s in per_sequence] or [pd.DataFrame(columns=signals.COLUMNS)]
        all_signals = pd.concat(tables, ignore_index=True)
        result = selection.select_frames(
            subject=self.subject,
            signals=all_signals,
            config=config.selection_config(),
            failures=failures,
        )
        if not result.table.empty:
            pictures.selection_picture(
                subject=nersemble.load_subject(subject_input(self.subject)),
                signals=all_signals,
                selection=result,
                serial=config.signals().serial,
                downsample_factor=config.downsample_factor(),
                path=subject_output(self.subject) / "selection.png",
            )
        with self.output().temporary_path() as tmp:
            selection.write_selection(tmp, result)
