"""The whole chain for one subject, and its report."""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import pandas as pd

from pipeline import config
from pipeline.common import (
    IdentityTarget,
    SubjectParameter,
    stage_tag,
    subject_input,
    subject_output,
    upstream_tag,
)
from pipeline.dataset_tasks import Canonicalize, TrackSubject, WriteShards, shard_dir
from pipeline.reconstruction import ReconstructSubject
from pipeline.selection import SelectFrames
from pipeline.subject import InspectSubject, head_model_files
from tasks import canonical, report, selection, tracking
from tasks.formats import shards
from tasks.formats.atomic import atomic_file


class BuildSubject(luigi.Task):
    """Every stage for one subject, ending in its shard, and the subject report:
    report.parquet (one row per selected timestep, `tasks.report.timestep_table`), then
    report.json (counts, drop reasons, seconds per stage, summary lines) marking completion."""

    subject = SubjectParameter()

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "inventory": InspectSubject(subject=self.subject),
            "selection": SelectFrames(subject=self.subject),
            "reconstruction": ReconstructSubject(subject=self.subject),
            "tracking": TrackSubject(subject=self.subject),
            "shard": WriteShards(subject=self.subject),
        }

    def output(self) -> IdentityTarget:
        """`report.json`, counted as built only under the identity of every input."""
        identity = stage_tag(sorted((k, upstream_tag(t)) for k, t in self.input().items()))
        return IdentityTarget(subject_output(self.subject) / "report.json", identity=identity)

    def run(self) -> None:
        paths = {name: Path(target.path) for name, target in self.input().items()}
        timesteps = report.timestep_table(
            reconstruction=pd.read_parquet(paths["reconstruction"]),
            tracking=pd.read_parquet(paths["tracking"] / tracking.RESIDUALS_FILE),
        )
        summary = report.subject_report(
            subject=self.subject,
            data=subject_input(self.subject),
            inventory=pd.read_parquet(paths["inventory"]),
            selection=selection.read_selection(paths["selection"]),
            timesteps=timesteps,
            tracking_seconds=json.loads((paths["tracking"] / tracking.TIMINGS_FILE).read_text()),
            shard=shard_dir(self.subject),
            shard_rows=len(shards.read_index(shard_dir(self.subject))),
            canonical_views=self._canonical_views(paths["tracking"]),
            max_distance=config.canonical_config().max_distance,
            head_model=head_model_files().describe(),
        )
        # Fixed places, replaced on a rebuild (Luigi's temporary_path refuses to replace).
        with atomic_file(Path(self.output().path).with_suffix(".parquet")) as tmp:
            timesteps.to_parquet(tmp, compression="zstd", index=False)
        self.output().write(summary)

    def _canonical_views(self, tracking_dir: Path) -> pd.DataFrame:
        """The canonical views tables of the kept timesteps (built for the shard), together."""
        kept = tracking.read_tracked_params(tracking_dir).params
        tables = [
            pd.read_parquet(Path(task.output().path) / canonical.VIEWS_FILE)
            for task in (
                Canonicalize(subject=self.subject, sequence=r.sequence, frame=int(r.frame))
                for r in kept.itertuples()
            )
        ]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
