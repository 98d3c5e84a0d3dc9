"""The whole chain for one subject, and its report."""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import pandas as pd

from pipeline.common import SubjectParameter, subject_input, subject_output
from pipeline.dataset_tasks import TrackSubject, WriteShards
from pipeline.reconstruction import ReconstructSubject
from pipeline.selection import SelectFrames
from pipeline.subject import InspectSubject
from tasks import report, selection, shards, tracking


class BuildSubject(luigi.Task):
    """Every stage for one subject, ending in its shard, and the subject report."""

    subject = SubjectParameter()

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "inventory": InspectSubject(subject=self.subject),
            "selection": SelectFrames(subject=self.subject),
            "reconstruction": ReconstructSubject(subject=self.subject),
            "tracking": TrackSubject(subject=self.subject),
            "shard": WriteShards(subject=self.subject),
        }

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(subject_output(self.subject) / "report.json"))

    def run(self) -> None:
        paths = {name: Path(target.path) for name, target in self.input().items()}
        summary = report.subject_report(
            subject=self.subject,
            data=subject_input(self.subject),
            inventory=pd.read_parquet(paths["inventory"]),
            selection=selection.read_selection(paths["selection"]),
            reconstruction=pd.read_parquet(paths["reconstruction"]),
            tracking=pd.read_parquet(paths["tracking"] / tracking.RESIDUALS_FILE),
            shard=paths["shard"],
            shard_rows=len(shards.read_index(paths["shard"])),
        )
        with self.output().temporary_path() as tmp, open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
