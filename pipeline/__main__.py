"""Build every subject of a manifest: `python -m pipeline --manifest FILE` (`make dataset`).

Luigi's local scheduler unless `--scheduler-host` points at a running `luigid`, so several
processes (or machines sharing the output root) split the work. A subject's timesteps are
tasks its `ReconstructSubject` adds once the selection is known, and Luigi gives them only to
the process that added them; `--assistant` lets every process take them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import luigi
import luigi.interface
import luigi.scheduler
import luigi.worker
from luigi.execution_summary import LuigiStatusCode

from pipeline import config
from pipeline.common import subject_output
from pipeline.dataset import BuildDataset, read_manifest, write_report_page

FAILED = (
    LuigiStatusCode.FAILED,
    LuigiStatusCode.FAILED_AND_SCHEDULING_FAILED,
    LuigiStatusCode.SCHEDULING_FAILED,
    LuigiStatusCode.MISSING_EXT,
)
"""Outcomes after which this process writes the report page itself. On success
`BuildDataset` wrote it; a process that ends "NOT_RUN" (another process holds the dataset
task) leaves it to that one, so a build writes the page once."""


class _Worker(luigi.worker.Worker):
    """Luigi's worker, but an assistant with `[worker] keep_alive` stays only while tasks
    are pending, as other workers do (Luigi's own assistants stay forever, like daemons)."""

    def _keep_alive(self, get_work_response: luigi.worker.GetWorkResponse) -> bool:
        if self._assistant and self._config.keep_alive:
            return get_work_response.n_pending_tasks > 0
        return super()._keep_alive(get_work_response)


class _Factory(luigi.interface._WorkerSchedulerFactory):  # noqa: SLF001 - luigi is pinned
    def create_worker(
        self, scheduler: luigi.scheduler.Scheduler, worker_processes: int, assistant: bool = False
    ) -> _Worker:
        return _Worker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Luigi worker processes (default: [faceanything] workers; 0 there: one per CPU)",
    )
    parser.add_argument("--scheduler-host", default=None, help="luigid host (default: local)")
    parser.add_argument("--scheduler-port", type=int, default=8082)
    parser.add_argument(
        "--assistant",
        action="store_true",
        help="with luigid: also run tasks other processes added (a subject's timesteps, which "
        "only the process that selected them would know of otherwise)",
    )
    args = parser.parse_args(argv)
    subjects = read_manifest(args.manifest)
    scheduler = (
        {"scheduler_host": args.scheduler_host, "scheduler_port": args.scheduler_port}
        if args.scheduler_host
        else {"local_scheduler": True}
    )
    dataset_task = BuildDataset(manifest=args.manifest)
    result = luigi.build(
        [dataset_task],
        workers=args.workers or config.worker_count(),
        detailed_summary=True,
        assistant=args.assistant,
        worker_scheduler_factory=_Factory(),
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
    if result.status in FAILED:  # the page then shows the subjects that failed, first
        write_report_page(subjects)
    print(f"report:    {(config.output_root() / 'report' / 'index.html').resolve()}")
    dataset = config.output_root() / "shards"
    check = f"python -m tasks.formats.shards validate {dataset}"
    print(f"shards:    {dataset.resolve()}  (check: {check})")
    # Success is the dataset being built: with several workers a process may end "NOT_RUN"
    # for the tasks another worker ran, though everything is done.
    return 0 if dataset_task.complete() else 1


if __name__ == "__main__":
    sys.exit(main())
