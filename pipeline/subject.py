"""Per-subject Luigi tasks. Each run() calls one function in `tasks/`."""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline import config
from pipeline.common import SubjectParameter, progress_callback, subject_input, subject_output
from tasks import inventory
from tasks.sample import subject as sample_subject
from tasks.sample.landmark_embedding import EMBEDDING_FILE


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


def flame_paths() -> tuple[Path | None, Path]:
    """(FLAME pkl or None for the sample head model, its MediaPipe landmark embedding).

    Without FLAME the sample head model is used, with the embedding the sample generator
    measured in the sample's data root."""
    cfg = config.faceanything()
    if cfg.flame_model:
        if not cfg.flame_landmark_embedding:
            raise ValueError("flame_model is set: set flame_landmark_embedding too (luigi.cfg)")
        return Path(cfg.flame_model), Path(cfg.flame_landmark_embedding)
    return None, config.data_root() / EMBEDDING_FILE


class InspectSubject(luigi.Task):
    """Check calibration and count every camera's frames before heavy work starts."""

    subject = SubjectParameter()

    def requires(self) -> list[luigi.Task]:
        return [GenerateSampleSubject(subject=self.subject)] if config.is_sample() else []

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(subject_output(self.subject) / "inventory.parquet"))

    def run(self) -> None:
        result = inventory.take_inventory(
            subject_dir=subject_input(self.subject), subject=self.subject
        )
        self.output().makedirs()
        with self.output().temporary_path() as tmp:
            result.table.to_parquet(tmp, compression="zstd", index=False)
