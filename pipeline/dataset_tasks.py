"""Subject-level tasks after reconstruction: tracking, canonical maps, shards."""

from __future__ import annotations

from pathlib import Path

import luigi
import pandas as pd

from pipeline import config
from pipeline.common import (
    IdentityTarget,
    SubjectParameter,
    fingerprint,
    progress_callback,
    stage_tag,
    subject_output,
    upstream_tag,
)
from pipeline.reconstruction import Reconstruct, ReconstructSubject, TimestepTask
from pipeline.subject import flame_files, head_model_files
from tasks import assemble, tracking
from tasks.formats import shards
from tasks.pictures import shard as shard_pictures


def shard_dir(subject: str) -> Path:
    """`{output_root}/shards/{subject}`: the dataset's layout, fixed for readers."""
    return config.output_root() / "shards" / subject


class TrackSubject(luigi.Task):
    """One FLAME fit per subject over its reconstructed timesteps (shared shape)."""

    subject = SubjectParameter()

    def requires(self) -> ReconstructSubject:
        return ReconstructSubject(subject=self.subject)

    def output(self) -> luigi.LocalTarget:
        flame = fingerprint(flame_files())
        tag = stage_tag(upstream_tag(self.input()), config.tracking_config(), flame)
        return luigi.LocalTarget(str(subject_output(self.subject) / f"tracking-{tag}"))

    def run(self) -> None:
        head = head_model_files()
        tracking.track_subject(
            subject=self.subject,
            timesteps=assemble.tracking_inputs(pd.read_parquet(self.input().path)),
            flame_path=head.model,
            embedding_path=head.embedding,
            masks_path=head.masks,
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
        upstream = [upstream_tag(t) for t in self.input().values()]
        tag = stage_tag(upstream, config.canonical_config())
        return luigi.LocalTarget(str(self.folder / f"canonical-{tag}"))

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

    def output(self) -> IdentityTarget:
        """`shard.json` beside the report: the shard's place is fixed (`shard_dir`), so its
        identity is recorded here and the shard counts as built only when it matches."""
        identity = stage_tag(upstream_tag(self.input()), config.canonical_config())
        return IdentityTarget(subject_output(self.subject) / "shard.json", identity=identity)

    def run(self):  # noqa: ANN201 - a generator: Luigi runs the yielded tasks first
        Path(self.output().path).unlink(missing_ok=True)  # the shard below is about to change
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
            path=shard_dir(self.subject),
            overwrite=True,
            progress=progress_callback(self),
        )
        if info.samples:
            shard_pictures.tracks_picture(
                shard=info.path,
                serial=config.signals().serial,
                path=subject_output(self.subject) / "shard.png",
            )
        record = {"path": str(info.path), "samples": info.samples}
        self.output().write({**record, "index_sha256": info.index_sha256})
