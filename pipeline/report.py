"""Build the dataset report page: `python -m pipeline.report OUTPUT_ROOT [--manifest FILE]`.

Writes `OUTPUT_ROOT/report/index.html` (open it in a browser; it needs no server). Subjects
come from the manifest, or else every folder under `OUTPUT_ROOT/subjects`; the paper's
held-out subjects from `manifests/eval_split.json` are marked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import config
from pipeline.dataset import read_manifest
from tasks import report_page


def subjects_under(output_root: Path) -> list[str]:
    """Every subject folder the build left under `output_root/subjects`, sorted."""
    folder = output_root / "subjects"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_root", type=Path, help="The build's output root (e.g. out)")
    parser.add_argument("--manifest", type=Path, help="Manifest JSON with a 'subjects' list")
    parser.add_argument("--eval-split", type=Path, default=config.EVAL_SPLIT)
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="NeRSemble root; a sample subject's ground truth there adds its accuracy "
        "(default: luigi.cfg's [faceanything] data_root)",
    )
    args = parser.parse_args(argv)
    if not args.output_root.is_dir():
        parser.error(f"{args.output_root}: no such output root")
    subjects = read_manifest(args.manifest) if args.manifest else subjects_under(args.output_root)
    if not subjects:
        parser.error(f"{args.output_root}: no subjects (give --manifest)")
    page = report_page.build_report_page(
        output_root=args.output_root,
        subjects=subjects,
        eval_subjects=report_page.read_eval_split(args.eval_split),
        data_root=args.data_root or config.data_root(),
        progress=lambda fraction, message: print(f"{fraction:4.0%} {message}", flush=True),
    )
    failed = sum(row.status == "failed" for row in page.rows)
    print(
        f"{page.index}: {len(page.rows)} subjects ({failed} failed), "
        f"{page.thumbnails_made} thumbnails made, {page.thumbnails_reused} reused, "
        f"{page.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
