"""Per-subject Luigi tasks. Each run() calls one function in `tasks/`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import luigi

from pipeline import config
from pipeline.common import (
    SubjectParameter,
    fingerprint,
    progress_callback,
    stage_tag,
    subject_input,
    subject_output,
    subject_sources,
)
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadModelFiles:
    """The head model a subject is tracked with."""

    model: Path | None
    """FLAME 2020/2023 pkl; None: the embedded sample head model (a stand-in, not FLAME)."""
    embedding: Path
    """MediaPipe landmark embedding npz of that model."""
    masks: Path | None
    """FLAME_masks.pkl (its face region for the point term); None for the sample head."""

    def describe(self) -> str:
        if self.model is None:
            return "embedded sample head model (no FLAME)"
        return f"FLAME {self.model}" + (f", masks {self.masks}" if self.masks else "")


def flame_files() -> list[Path]:
    """Every head-model file the settings name (what tracking's identity fingerprints)."""
    cfg = config.faceanything()
    named = (cfg.flame_model, cfg.flame_landmark_embedding, cfg.flame_masks)
    files = [Path(p) for p in named if p]
    return files or [config.data_root() / EMBEDDING_FILE]


def head_model_files() -> HeadModelFiles:
    """The head model from luigi.cfg, checked: FLAME when set; the sample head only in the
    sample profile or when `stand_in_head` says so (never silently)."""
    cfg = config.faceanything()
    embedding = Path(cfg.flame_landmark_embedding) if cfg.flame_landmark_embedding else None
    if cfg.flame_model:
        if embedding is None:
            raise ValueError("flame_model is set: set flame_landmark_embedding too (luigi.cfg)")
        masks = Path(cfg.flame_masks) if cfg.flame_masks else None
        if masks is None and config.tracking().point_region == "face":
            raise ValueError(
                "flame_model is set without flame_masks: set [faceanything] flame_masks to "
                "FLAME_masks.pkl (its face region is what the fused points fit), or "
                "[tracking] point_region = head"
            )
        files = HeadModelFiles(model=Path(cfg.flame_model), embedding=embedding, masks=masks)
    elif cfg.flame_masks:
        raise ValueError("flame_masks is set without flame_model: FLAME's masks need FLAME")
    elif config.is_sample() or cfg.stand_in_head:
        default = config.data_root() / EMBEDDING_FILE
        files = HeadModelFiles(model=None, embedding=embedding or default, masks=None)
    else:
        raise ValueError(
            "no head model: set [faceanything] flame_model (your generic_model.pkl or "
            "flame2023.pkl), flame_landmark_embedding and flame_masks (FLAME_masks.pkl) in "
            "luigi.cfg; or set stand_in_head = true to track with the embedded sample head "
            "model (not FLAME; the report says so)"
        )
    for path in (files.model, files.embedding, files.masks):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"head model file not found: {path} (luigi.cfg)")
    return files


class InspectSubject(luigi.Task):
    """Check calibration and count every camera's frames before heavy work starts."""

    subject = SubjectParameter()

    def requires(self) -> list[luigi.Task]:
        return [GenerateSampleSubject(subject=self.subject)] if config.is_sample() else []

    def output(self) -> luigi.LocalTarget:
        tag = stage_tag(fingerprint(subject_sources(self.subject)))
        return luigi.LocalTarget(str(subject_output(self.subject) / f"inventory-{tag}.parquet"))

    def run(self) -> None:
        head_model_files()  # a missing head model stops the subject here, before any SfM
        result = inventory.take_inventory(
            subject_dir=subject_input(self.subject), subject=self.subject
        )
        self.output().makedirs()
        with self.output().temporary_path() as tmp:
            result.table.to_parquet(tmp, compression="zstd", index=False)
