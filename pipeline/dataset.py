"""The dataset over a manifest of subjects."""

from __future__ import annotations

import json
from pathlib import Path

import luigi

from pipeline import config
from pipeline.build import BuildSubject
from pipeline.common import progress_callback, stage_tag, upstream_tag
from pipeline.dataset_tasks import shard_dir
from tasks import report_page
from tasks.formats import shards
from tasks.formats.names import validate_subject_id
from tasks.progress import Progress


def read_manifest(path: Path) -> list[str]:
    """Subject ids listed in a manifest JSON (`{"subjects": [...]}`), checked."""
    try:
        data = json.loads(Path(path).read_text())
        subjects = data["subjects"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a manifest with a 'subjects' list ({err})") from err
    return [validate_subject_id(str(s)) for s in subjects]


def write_report_page(subjects: list[str], progress: Progress | None = None) -> Path:
    """`{output_root}/report/index.html`, the page a person browses (`tasks.report_page`);
    redrawn only where a subject's report changed."""
    page = report_page.build_report_page(
        output_root=config.output_root(),
        subjects=subjects,
        eval_subjects=report_page.read_eval_split(config.EVAL_SPLIT),
        data_root=config.data_root(),
        progress=progress,
    )
    return page.index


class BuildDataset(luigi.Task):
    """Every subject of a manifest, then the dataset manifest listing their shards.

    A subject whose timesteps were all dropped still ends in a report (saying why) and an
    empty shard, so it never blocks the others; the dataset manifest lists non-empty shards."""

    manifest = luigi.PathParameter(description="Manifest JSON with a 'subjects' list")

    def requires(self) -> list[BuildSubject]:
        return [BuildSubject(subject=s) for s in read_manifest(self.manifest)]

    def output(self) -> luigi.LocalTarget:
        """Named after the manifest, its subjects and their builds' identities, so an edited
        manifest or a rebuilt subject builds the dataset manifest again."""
        subjects = read_manifest(self.manifest)
        tag = stage_tag(subjects, [upstream_tag(t) for t in self.input()])
        name = f"{Path(self.manifest).stem}-{tag}.json"
        return luigi.LocalTarget(str(config.output_root() / "shards" / "manifests" / name))

    def run(self) -> None:
        infos = [shards.shard_info(shard_dir(s)) for s in read_manifest(self.manifest)]
        infos = [info for info in infos if info.samples]
        listed = shards.write_manifest(root=config.output_root() / "shards", shards=infos)
        write_report_page(read_manifest(self.manifest), progress=progress_callback(self))
        self.output().makedirs()
        with self.output().temporary_path() as tmp:
            Path(tmp).write_text(Path(listed).read_text())
