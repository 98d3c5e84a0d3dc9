"""The dataset report page for a 400-subject dataset, simulated from one built subject.

Every simulated subject is a symlink to the built subject's outputs (`subjects/{id}` and
`shards/{id}`) in a temporary output root, so the build reads and draws as much as for 400
real subjects; the built subject itself keeps its id (and its accuracy, given --data-root).
Prints the page sizes and the build times: first build (every thumbnail drawn), a rebuild
with nothing changed (thumbnails carried over), and the inputs' fingerprint alone.

    .venv/bin/python -m benchmarks.bench_report_page --output out --subject 900 \
        --data-root data/sample --count 400
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tasks import report_page
from tasks.formats.names import validate_subject_id


def simulate(*, built: Path, subject: str, root: Path, count: int) -> list[str]:
    """`root` as an output root holding `subject` and `count - 1` symlinked copies of it."""
    copies = [f"{1000 + i}" for i in range(count - 1)]
    for name in [subject, *copies]:
        for kind in ("subjects", "shards"):
            (root / kind).mkdir(parents=True, exist_ok=True)
            (root / kind / name).symlink_to((built / kind / subject).resolve())
    return [subject, *copies]


def folder_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) below `folder`."""
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
    return sum(sizes), len(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("out"), help="A built output root")
    parser.add_argument("--subject", default="900", help="The built subject to copy")
    parser.add_argument("--data-root", type=Path, default=None, help="Sample root (accuracy)")
    parser.add_argument("--count", type=int, default=400, help="Subjects to simulate")
    parser.add_argument("--workers", type=int, default=None, help="Thumbnail threads (all CPUs)")
    args = parser.parse_args()
    subject = validate_subject_id(args.subject)
    if not (args.output / "subjects" / subject / "report.json").exists():
        raise SystemExit(f"{args.output}: subject {subject} is not built (make dataset)")
    config = report_page.ReportPageConfig(workers=args.workers)
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        root = Path(tmp) / "out"
        subjects = simulate(built=args.output, subject=subject, root=root, count=args.count)
        times = {}
        for run in ("first build", "rebuild, nothing changed"):
            start = time.perf_counter()
            page = report_page.build_report_page(
                output_root=root,
                subjects=subjects,
                eval_subjects=[subject],
                data_root=args.data_root,
                config=config,
            )
            times[run] = (time.perf_counter() - start, page)
        start = time.perf_counter()
        report_page.inputs_fingerprint(output_root=root, subjects=subjects)
        fingerprint_s = time.perf_counter() - start
        folder = root / report_page.PAGE_DIR
        total, files = folder_size(folder)
        thumbs, thumb_files = folder_size(folder / "thumbs")
        pages = [p.stat().st_size for p in (folder / "subjects").glob("*.html")]
        print(f"subjects:                 {len(subjects)} (symlinked copies of {subject})")
        threads = args.workers or os.cpu_count()
        print(f"cpu count:                {os.cpu_count()}, thumbnail threads {threads}")
        print(f"index.html:               {page.index.stat().st_size / 1e3:.1f} kB")
        print(f"subject page (median):    {statistics.median(pages) / 1e3:.1f} kB")
        print(f"thumbnails:               {thumb_files} files, {thumbs / 1e6:.1f} MB")
        print(f"report folder:            {files} files, {total / 1e6:.1f} MB")
        for run, (seconds, built) in times.items():
            print(
                f"{run + ':':26s}{seconds:.1f} s ({built.thumbnails_made} thumbnails drawn, "
                f"{built.thumbnails_reused} carried over)"
            )
        print(f"inputs fingerprint:       {fingerprint_s:.2f} s")
        accuracy = page.rows[0].accuracy
        if accuracy is not None:
            print(f"accuracy of {subject}:        depth {accuracy.depth_median_mm:.3f} mm median")


if __name__ == "__main__":
    main()
