"""Build every subject of a manifest: `python -m pipeline.dataset --manifest FILE`.

This is what `make dataset` runs. It uses Luigi's local scheduler unless `--scheduler-host`
points at a running `luigid`, so several processes (or machines sharing the output root)
can split the work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import luigi

from pipeline import config
from pipeline.build import BuildSubject
from pipeline.common import subject_output
from pipeline.dataset_tasks import WriteShards
from tasks import nersemble, shards


def read_manifest(path: Path) -> list[str]:
    """Subject ids listed in a manifest JSON (`{"subjects": [...]}`), checked."""
    try:
        data = json.loads(Path(path).read_text())
        subjects = data["subjects"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a manifest with a 'subjects' list ({err})") from err
    return [nersemble.validate_subject_id(str(s)) for s in subjects]


class BuildDataset(luigi.Task):
    """Every subject of a manifest, then the dataset manifest listing their shards.

    A subject whose timesteps were all dropped still ends in a report (saying why) and an
    empty shard, so it never blocks the others."""

    manifest = luigi.PathParameter(description="Manifest JSON with a 'subjects' list")

    def requires(self) -> list[BuildSubject]:
        return [BuildSubject(subject=s) for s in read_manifest(self.manifest)]

    def output(self) -> luigi.LocalTarget:
        name = f"{Path(self.manifest).stem}.json"
        return luigi.LocalTarget(str(config.output_root() / "shards" / "manifests" / name))

    def run(self) -> None:
        infos = [
            shards.shard_info(WriteShards(subject=s).output().path)
            for s in read_manifest(self.manifest)
        ]
        listed = shards.write_manifest(root=config.output_root() / "shards", shards=infos)
        self.output().makedirs()
        with self.output().temporary_path() as tmp:
            Path(tmp).write_text(Path(listed).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--scheduler-host", default=None, help="luigid host (default: local)")
    parser.add_argument("--scheduler-port", type=int, default=8082)
    args = parser.parse_args(argv)
    subjects = read_manifest(args.manifest)
    scheduler = (
        {"scheduler_host": args.scheduler_host, "scheduler_port": args.scheduler_port}
        if args.scheduler_host
        else {"local_scheduler": True}
    )
    result = luigi.build(
        [BuildDataset(manifest=args.manifest)],
        workers=args.workers,
        detailed_summary=True,
        **scheduler,
    )
    print(result.summary_text)
    print(f"data root: {config.data_root().resolve()}")
    for subject in subjects:
        path = subject_output(subject) / "report.json"
        if path.exists():
            print(f"report:    {path}")
            print("\n".join(f"  {line}" for line in json.loads(path.read_text())["summary"]))
        else:
            print(f"subject {subject}: not built (see the log above)")
    dataset = config.output_root() / "shards"
    print(f"shards:    {dataset.resolve()}  (check: python -m tasks.shards validate {dataset})")
    return 0 if result.status.name.startswith("SUCCESS") else 1


if __name__ == "__main__":
    sys.exit(main())
