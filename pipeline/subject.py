"""Per-subject Luigi tasks. Each run() calls one function in `tasks/`."""

from __future__ import annotations

import luigi

from pipeline import config
from pipeline.common import SubjectParameter, progress_callback, subject_input, subject_output
from tasks import inventory, sample_subject


class GenerateSampleSubject(luigi.Task):
    """Make the synthetic sample subject (NeRSemble layout + ground truth); seed = its id."""

    subject = SubjectParameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(subject_input(self.subject)))

    def run(self) -> None:
        cfg = config.sample()
        sample_subject.generate_sample_subject(
            config=sample_subject.SampleSubjectConfig(
                subject=self.subject,
                seed=sample_subject.default_seed(self.subject),
                scale=cfg.scale,
                downsample=cfg.downsample,
                frames_per_sequence=cfg.frames_per_sequence,
            ),
            root=config.data_root(),
            progress=progress_callback(self),
        )


class InspectSubject(luigi.Task):
    """Check calibration and count every camera's frames before heavy work starts."""

    subject = SubjectParameter()

    def requires(self) -> list[luigi.Task]:
        return [GenerateSampleSubject(subject=self.subject)] if config.is_sample_root() else []

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(subject_output(self.subject) / "inventory.parquet"))

    def run(self) -> None:
        result = inventory.take_inventory(
            subject_dir=subject_input(self.subject), subject=self.subject
        )
        self.output().makedirs()
        with self.output().temporary_path() as tmp:
            result.table.to_parquet(tmp, compression="zstd", index=False)
