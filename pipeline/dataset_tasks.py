"""Subject-level tasks after reconstruction: tracking, canonical maps, shards."""

from __future__ import annotations

from pathlib import Path

import luigi
import pandas as pd

from pipeline import config
from pipeline.common import SubjectParameter, progress_callback, subject_output
from pipeline.reconstruction import Reconstruct, ReconstructSubject, TimestepTask
from pipeline.subject import flame_paths
from tasks import assemble, tracking
from tasks.formats import shards
from tasks.pictures import shard as shard_pictures


class TrackSubject(luigi.Task):
    """One FLAME fit per subject over its reconstructed timesteps (shared shape)."""

    subject = SubjectParameter()

    def requires(self) -> ReconstructSubject:
        return ReconstructSubject(subject=self.subject)

    def output(self) -> luigi.LocalTarget:
        upstream = Path(self.input().path).stem.removeprefix("reconstruction-")
        tag = config.settings_tag(config.tracking_config())
        folder = subject_output(self.subject) / f"tracking-{upstream}-{tag}"
        return luigi.LocalTarget(str(folder))

    def run(self) -> None:
        flame_path, embedding_path = flame_paths()
        tracking.track_subject(
            subject=self.subject,
            timesteps=assemble.tracking_inputs(pd.read_parquet(self.input().path)),
            flame_path=flame_path,
            embedding_path=embedding_path,
            out_dir=Path(self.output().path),
            config=config.tracking_config(),
            progress=progress_callback(self),
        )


class Canonicalize(TimestepTask):
    """Canonical maps and cloud of one tracked timestep (deformation transfer)."""

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "tracking": TrackSubject(subject=self.subject),
            "reconstruction": Reconstruct(
                subject=self.subject, sequence=self.sequence, frame=self.frame
            ),
        }

    def output(self) -> luigi.LocalTarget:
        tracking_tag = Path(self.input()["tracking"].path).name
        tag = config.settings_tag(config.canonical_config())
        return luigi.LocalTarget(str(self.folder / f"canonical-{tracking_tag}-{tag}"))

    def run(self) -> None:
        assemble.canonicalize_reconstruction(
            recon_dir=Path(self.input()["reconstruction"].path),
            tracking_dir=Path(self.input()["tracking"].path),
            sequence=self.sequence,
            frame=self.frame,
            config=config.canonical_config(),
            out_dir=Path(self.output().path),
            progress=progress_callback(self),
        )


class WriteShards(luigi.Task):
    """The subject's self-contained shard: Parquet index + EXR maps + RGB per kept view; and
    `shard.png` beside the report, like the paper's figure 1 (RGB with point tracks, depth,
    canonical map, normals of the frontal camera)."""

    subject = SubjectParameter()

    def requires(self) -> TrackSubject:
        return TrackSubject(subject=self.subject)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(config.output_root() / "shards" / self.subject))

    def run(self):  # noqa: ANN201 - a generator: Luigi runs the yielded tasks first
        tracking_dir = Path(self.input().path)
        kept = tracking.read_tracked_params(tracking_dir).params
        steps = [(r.sequence, int(r.frame)) for r in kept.itertuples()]
        canonical = yield [
            Canonicalize(subject=self.subject, sequence=s, frame=f) for s, f in steps
        ]
        recon = [Reconstruct(subject=self.subject, sequence=s, frame=f).output() for s, f in steps]
        samples = assemble.shard_samples(
            subject=self.subject,
            timesteps=[
                (s, f, Path(r.path), Path(c.path))
                for (s, f), r, c in zip(steps, recon, canonical, strict=True)
            ],
            tracking_dir=tracking_dir,
        )
        info = shards.write_shard(
            samples=samples,
            path=Path(self.output().path),
            progress=progress_callback(self),
        )
        if info.samples:
            shard_pictures.tracks_picture(
                shard=info.path,
                serial=config.signals().serial,
                path=subject_output(self.subject) / "shard.png",
            )
