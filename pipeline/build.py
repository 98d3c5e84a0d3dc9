"""The whole chain for one subject, and its report."""

from __future__ import annotations

import json

import luigi
import pandas as pd

from pipeline.common import SubjectParameter, subject_input, subject_output
from pipeline.reconstruction import ReconstructSubject
from pipeline.selection import SelectFrames
from pipeline.subject import InspectSubject
from tasks import report


class BuildSubject(luigi.Task):
    """Every stage built so far for one subject, and its report."""

    subject = SubjectParameter()

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "inventory": InspectSubject(subject=self.subject),
            "selection": SelectFrames(subject=self.subject),
            "reconstruction": ReconstructSubject(subject=self.subject),
        }

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(subject_output(self.subject) / "report.json"))

    def run(self) -> None:
        table = pd.read_parquet(self.input()["inventory"].path)
        summary = report.subject_report(
            subject=self.subject, data=subject_input(self.subject), inventory=table
        )
        with self.output().temporary_path() as tmp, open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
