"""The dataset report page: what was built, what was dropped and why, and what the data looks
like, for hundreds of subjects at a glance, without opening a Parquet file.

    {output_root}/report/index.html            one sortable row per subject, dataset totals
    {output_root}/report/subjects/{id}.html    its pictures, per-timestep depth, accuracy
    {output_root}/report/thumbs/{id}/*.jpg      thumbnails linked to the full-size pictures
    {output_root}/report/inputs.json           `{"identity": inputs_fingerprint(...)}`

Static and offline: plain HTML with one stylesheet and one small sorting script copied beside
it. The folder is written atomically; a thumbnail whose source is unchanged (path, size,
mtime) and a sample's accuracy whose shard index is unchanged come over from the last build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import cv2
import jinja2
import numpy as np
import pandas as pd

from tasks.formats import shards
from tasks.formats.atomic import atomic_dir
from tasks.formats.exr import read_exr
from tasks.formats.names import validate_subject_id
from tasks.frames import image_path
from tasks.progress import Progress, silent
from tasks.reconstruction import DEPTH_PICTURE
from tasks.sample.world import ground_truth_dir, ground_truth_map_path
from tasks.tracking import OVERLAY_FILE, RESIDUALS_FILE

PAGE_VERSION = 1
"""Bump when the page shows something new, so `inputs_fingerprint` (and the page) changes."""
PAGE_DIR = "report"
"""The report's folder under the output root."""
INPUTS_FILE = "inputs.json"
"""Inside the report folder: the identity of the inputs it was built from."""
ACCURACY_FILE = "accuracy.json"
"""Inside the report folder: sample subjects' accuracy, keyed by subject, with the shard
index checksum it was measured on (reused while that checksum holds)."""
STAGES = ("sfm", "depth", "fusion", "tracking")
"""Stages whose seconds the report adds up (tracking = its observation and fit steps)."""
ASSETS = ("report_page.html", "report_page.css", "report_page.js")
"""The page's Jinja2 macros, stylesheet and sorting script, beside this module."""
Status = Literal["failed", "empty", "built"]
STATUS_RANK: Mapping[str, int] = {"failed": 0, "empty": 1, "built": 2}
"""Default row order: failed subjects first, then those with no timestep kept."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportPageConfig:
    """How the page's pictures are made."""

    thumbnail_width: int = 360
    """Width (px) of a timestep's thumbnail (narrower pictures keep their size)."""
    picture_width: int = 720
    """Width (px) of the thumbnails of a subject's selection, overlay and shard pictures."""
    thumbnail_max_height: int = 480
    """Thumbnails taller than this shrink further (tall contact sheets)."""
    thumbnail_quality: int = 80
    """JPEG quality of thumbnails."""
    workers: int | None = None
    """Threads making thumbnails (OpenCV decodes outside the GIL); None: one per CPU."""
    frontal_serial: str = "222200037"
    """Camera whose frame stands in for a timestep without a depth picture."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Accuracy:
    """A sample subject's shard against its ground truth, on truth face-mask pixels."""

    views: int
    """Views compared."""
    depth_median_mm: float
    """Median absolute depth error (mm)."""
    depth_within_5mm: float
    """Fraction of depth pixels within 5 mm of the truth."""
    coverage: float
    """Median over views of the fraction of face pixels that have depth."""
    canonical_median_mm: float
    """Median canonical-map error (mm, FLAME space)."""
    canonical_p90_mm: float
    """90th percentile canonical-map error (mm)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timestep:
    """One selected timestep as its subject page shows it."""

    name: str
    """`{sequence} frame {frame}`."""
    kept: bool
    """Kept in the shard."""
    reason: str
    """`dropped at STAGE: REASON`, or the figures of a kept timestep."""
    picture: Path | None
    """Its depth picture, else the frontal frame, else None."""
    depth: bool
    """`picture` is the depth picture (not the frontal frame of a timestep without one)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubjectRow:
    """One subject as the report reads it from its outputs."""

    subject: str
    """Subject id."""
    status: Status
    """failed (no report), empty (no timestep kept) or built."""
    error: str = ""
    """Why it failed or is empty."""
    eval_split: bool = False
    """A held-out test subject of the paper's appendix B.2."""
    selected: int | None = None
    """Timesteps selected."""
    reconstructed: int | None = None
    """Timesteps with all views registered and fused."""
    tracked: int | None = None
    """Timesteps the tracker fitted."""
    kept: int | None = None
    """Timesteps kept (not tracking outliers)."""
    drops: tuple[tuple[str, int], ...] = ()
    """(stage: kind of reason, count), most frequent first."""
    seconds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Seconds per `STAGES` name."""
    sfm_residual_mm: float | None = None
    """Median over reconstructed timesteps of the SfM camera-centre residual (mm)."""
    landmark_px: float | None = None
    """Median over tracked timesteps of the landmark residual (px)."""
    point_mm: float | None = None
    """Median over tracked timesteps of the point-to-plane residual (mm)."""
    shard_views: int | None = None
    """Views in its shard."""
    shard_bytes: int | None = None
    """Bytes of its shard folder."""
    summary: tuple[str, ...] = ()
    """The report's lines for people."""
    pictures: Mapping[str, Path] = dataclasses.field(default_factory=dict)
    """Existing pictures by title: selection, tracking overlay, shard."""
    timesteps: tuple[Timestep, ...] = ()
    """Every selected timestep, in selection order."""
    accuracy: Accuracy | None = None
    """Against the ground truth, for a sample subject."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportPage:
    """A built report."""

    index: Path
    """`{output_root}/report/index.html`."""
    rows: tuple[SubjectRow, ...]
    """The subjects, failed first."""
    fingerprint: str
    """`inputs_fingerprint` of what it was built from."""
    thumbnails_made: int
    """Thumbnails drawn this time."""
    thumbnails_reused: int
    """Thumbnails carried over from the last build."""
    seconds: float
    """Wall time of the build."""


def read_eval_split(path: str | os.PathLike) -> frozenset[str]:
    """The held-out test subjects of a split file (`{"test_subjects": [...]}`)."""
    return frozenset(
        validate_subject_id(str(s)) for s in json.loads(Path(path).read_text())["test_subjects"]
    )


def inputs_fingerprint(
    *, output_root: str | os.PathLike, subjects: Sequence[str], eval_subjects: Collection[str] = ()
) -> str:
    """One hash of every subject's report.json and report.parquet (or their absence), the eval
    split and the page's version and assets: a Luigi target carrying it makes the page
    rebuild when any report changes."""
    digest = hashlib.sha256(json.dumps([PAGE_VERSION, sorted(eval_subjects)]).encode())
    for asset in ASSETS:
        digest.update((Path(__file__).parent / asset).read_bytes())
    for subject in subjects:
        folder = Path(output_root) / "subjects" / validate_subject_id(subject)
        digest.update(subject.encode())
        for name in ("report.json", "report.parquet"):
            path = folder / name
            digest.update(path.read_bytes() if path.exists() else b"-missing-")
    return digest.hexdigest()[:16]


def drop_kind(reason: str) -> str:
    """The kind of a drop reason, for counting: its first clause without measured figures
    ("landmark residual 51.0 px > 9.2 px threshold" -> "landmark residual > threshold")."""
    first = reason.split(";")[0]
    kind = re.sub(r"\s*-?\d+\.\d+\s*(px|mm|m|s)?\b", "", first)
    return re.sub(r"\s+", " ", kind).strip()


def drop_counts(table: pd.DataFrame) -> tuple[tuple[str, int], ...]:
    """("stage: kind", count) of a report.parquet's dropped timesteps, most frequent first."""
    dropped = table[~table.kept.astype(bool)]
    kinds = [f"{r.dropped_at}: {drop_kind(r.drop_reason)}" for r in dropped.itertuples()]
    counts = pd.Series(kinds, dtype=object).value_counts(sort=True)
    return tuple((str(kind), int(count)) for kind, count in counts.items())


def folder_bytes(path: Path) -> int:
    """Bytes of every file below `path` (0 when missing)."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.stat(os.path.join(root, f)).st_size for f in files)
    return total


def _median(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.median()) if len(values) else None


def _newest(paths: Sequence[Path]) -> Path | None:
    existing = [p for p in paths if p.exists()]
    return max(existing, key=lambda p: p.stat().st_mtime_ns) if existing else None


def _pictures(folder: Path) -> dict[str, Path]:
    """The subject's pictures that exist (the newest tracking folder's overlay)."""
    found = {
        "selection": folder / "selection.png",
        "tracking overlay": _newest(sorted(folder.glob(f"tracking-*/{OVERLAY_FILE}"))),
        "shard": folder / "shard.png",
    }
    return {title: path for title, path in found.items() if path is not None and path.exists()}


def _failure(folder: Path) -> str:
    """Why a subject has no report, as far as its outputs tell (the log holds the rest)."""
    if not folder.exists():
        return "not built: no outputs"
    steps = [
        ("inventory", "inventory*.parquet"),
        ("signals", "signals*/*.parquet"),
        ("selection", "selection-*.parquet"),
        ("reconstruction", "reconstruction-*.parquet"),
        ("tracking", f"tracking-*/{RESIDUALS_FILE}"),
        ("shard", "shard.json"),
    ]
    done = [stage for stage, pattern in steps if any(folder.glob(pattern))]
    last = f"last finished stage: {done[-1]}" if done else "no stage finished"
    return f"no report.json ({last}; see the build log)"


def _timestep(row: pd.Series, folder: Path, config: ReportPageConfig) -> Timestep:
    """A report.parquet row with its depth picture (or frontal frame when it has none)."""
    recon = Path(str(row.folder))
    parts = recon.parts
    recon = folder.joinpath(*parts[parts.index("timesteps") :]) if "timesteps" in parts else recon
    picture: Path | None = recon / DEPTH_PICTURE
    depth = picture.exists()
    if not depth:
        frames = sorted(recon.parent.glob("frames-*"))
        picture = image_path(frames[-1], config.frontal_serial) if frames else None
    if bool(row.kept):
        figures = {"median_residual_mm": "{:.2f} mm SfM", "landmark_px": "{:.1f} px landmarks"}
        shown = [text.format(row[k]) for k, text in figures.items() if pd.notna(row.get(k))]
        reason = "kept: " + ", ".join(shown)
    else:
        reason = f"dropped at {row.dropped_at}: {row.drop_reason}"
    return Timestep(
        name=f"{row.sequence} frame {int(row.frame)}",
        kept=bool(row.kept),
        reason=reason,
        picture=picture if picture is not None and picture.exists() else None,
        depth=depth,
    )


def read_subject(
    *,
    output_root: Path,
    subject: str,
    eval_subjects: Collection[str] = (),
    error: str | None = None,
    config: ReportPageConfig = ReportPageConfig(),
) -> SubjectRow:
    """One subject's row from its report.json, report.parquet, pictures and shard; a subject
    without report.json is `failed` with what its outputs say (or `error`, the caller's)."""
    folder = Path(output_root) / "subjects" / subject
    shard = Path(output_root) / "shards" / subject
    common = {"subject": subject, "eval_split": subject in eval_subjects}
    if not (folder / "report.json").exists():
        reason = error or _failure(folder)
        return SubjectRow(status="failed", error=reason, pictures=_pictures(folder), **common)
    report = json.loads((folder / "report.json").read_text())
    table = pd.read_parquet(folder / "report.parquet")
    seconds = report.get("seconds", {})
    kept = int(report["tracked"])
    status: Status = "failed" if error else "built" if kept else "empty"
    tracked = table.landmark_px.notna() if "landmark_px" in table else table.kept
    registered = table[table.dropped_at != "reconstruction"]
    return SubjectRow(
        status=status,
        error=error or ("" if kept else "no timestep kept"),
        selected=int(report["selected"]),
        reconstructed=int(report["reconstructed"]),
        tracked=int(tracked.sum()),
        kept=kept,
        drops=drop_counts(table),
        seconds={
            "sfm": float(seconds.get("sfm", 0.0)),
            "depth": float(seconds.get("depth", 0.0)),
            "fusion": float(seconds.get("fusion", 0.0)),
            "tracking": sum(float(v) for k, v in seconds.items() if k.startswith("tracking")),
        },
        sfm_residual_mm=_median(registered.median_residual_mm),
        landmark_px=_median(table.landmark_px) if "landmark_px" in table else None,
        point_mm=_median(table.point_mm) if "point_mm" in table else None,
        shard_views=int(report.get("shard_views", 0)),
        shard_bytes=folder_bytes(shard),
        summary=tuple(report.get("summary", ())),
        pictures=_pictures(folder),
        timesteps=tuple(_timestep(r, folder, config) for _, r in table.iterrows()),
        **common,
    )


def shard_accuracy(*, shard: Path, ground_truth: Path) -> Accuracy:
    """Depth and canonical maps of every view in `shard` against the sample's truth maps, on
    truth face-mask pixels at the working size (the figures of bench_dataset_accuracy)."""
    depth_err, canon_err, coverage = [], [], []
    for _, row in shards.read_index(shard).iterrows():
        built = read_exr(shard / row["maps_file"])
        truth = read_exr(
            ground_truth_map_path(
                ground_truth, sequence=row.sequence, frame=int(row.frame), serial=row.serial
            )
        )
        face = truth["mask"] > 0.5
        has_depth = face & np.isfinite(built["depth"]) & (built["depth"] > 0)
        has_canon = face & (built["mask"] > 0.5)
        depth_err.append(np.abs(built["depth"] - truth["depth"])[has_depth])
        canon = np.linalg.norm(built["canonical"] - truth["canonical"], axis=-1)
        canon_err.append(canon[has_canon])
        coverage.append(has_depth.sum() / max(face.sum(), 1))
    d = np.concatenate(depth_err) * 1000 if depth_err else np.full(1, np.nan)
    c = np.concatenate(canon_err) * 1000 if canon_err else np.full(1, np.nan)
    return Accuracy(
        views=len(coverage),
        depth_median_mm=float(np.median(d)),
        depth_within_5mm=float(np.mean(d < 5)),
        coverage=float(np.median(coverage)) if coverage else 0.0,
        canonical_median_mm=float(np.median(c)),
        canonical_p90_mm=float(np.percentile(c, 90)),
    )


def _accuracies(
    rows: Sequence[SubjectRow], *, output_root: Path, data_root: Path | None, old: Path
) -> dict[str, dict]:
    """Accuracy records of the sample subjects (those with ground truth under `data_root`),
    reused from the last build's `old` file while their shard index is unchanged."""
    previous = json.loads(old.read_text()) if old.exists() else {}
    records = {}
    for row in rows:
        shard = output_root / "shards" / row.subject
        if data_root is None or not row.shard_views or row.status == "failed":
            continue
        truth = ground_truth_dir(root=data_root, subject=row.subject)
        if not truth.is_dir():
            continue
        checksum = shards.sha256(shard / shards.INDEX_FILE)
        record = previous.get(row.subject, {})
        if record.get("index_sha256") != checksum:
            figures = shard_accuracy(shard=shard, ground_truth=truth)
            record = {"index_sha256": checksum, **dataclasses.asdict(figures)}
        records[row.subject] = record
    return records


def thumbnail_name(source: Path, *, output_root: Path, width: int, config: ReportPageConfig) -> str:
    """A thumbnail's file name: new whenever its source (path, size, mtime) or size changes."""
    stat = source.stat()
    key = [os.path.relpath(source, output_root), stat.st_size, stat.st_mtime_ns, width]
    key += [config.thumbnail_max_height, config.thumbnail_quality]
    return f"{source.stem}-{hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]}.jpg"


def make_thumbnail(*, source: Path, path: Path, width: int, config: ReportPageConfig) -> None:
    """A JPEG at most `width` x `thumbnail_max_height`, aspect kept (cv2)."""
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{source}: not a readable picture")
    h, w = image.shape[:2]
    scale = min(1.0, width / w, config.thumbnail_max_height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
    if not cv2.imwrite(str(path), small, [cv2.IMWRITE_JPEG_QUALITY, config.thumbnail_quality]):
        raise ValueError(f"{path}: could not write the thumbnail")


def _thumbnails(
    rows: Sequence[SubjectRow],
    *,
    output_root: Path,
    tmp: Path,
    old: Path,
    config: ReportPageConfig,
    progress: Progress,
) -> tuple[dict[Path, str], int, int]:
    """Every picture's thumbnail inside `tmp`, as {source: path relative to the report};
    unchanged ones are hard-linked (else copied) from the last build `old`. Also the counts
    made and reused."""
    wanted: dict[Path, tuple[str, int]] = {}
    for row in rows:
        sizes = [(p, config.picture_width) for p in row.pictures.values()]
        sizes += [(t.picture, config.thumbnail_width) for t in row.timesteps if t.picture]
        for source, width in sizes:
            name = thumbnail_name(source, output_root=output_root, width=width, config=config)
            wanted[source] = (f"thumbs/{row.subject}/{name}", width)
    make = [(s, n, w) for s, (n, w) in wanted.items() if not (old / n).exists()]
    for name, _ in wanted.values():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        if (old / name).exists():
            try:
                os.link(old / name, tmp / name)
            except OSError:
                shutil.copy2(old / name, tmp / name)
    with ThreadPoolExecutor(config.workers or os.cpu_count() or 1) as pool:
        jobs = [
            pool.submit(make_thumbnail, source=s, path=tmp / n, width=w, config=config)
            for s, n, w in make
        ]
        for i, job in enumerate(jobs):
            job.result()
            if i % 50 == 0:
                progress(0.1 + 0.8 * i / len(jobs), f"thumbnails {i}/{len(jobs)}")
    names = {source: name for source, (name, _) in wanted.items()}
    return names, len(make), len(wanted) - len(make)


def build_report_page(
    *,
    output_root: str | os.PathLike,
    subjects: Sequence[str],
    eval_subjects: Collection[str] = (),
    data_root: str | os.PathLike | None = None,
    errors: Mapping[str, str] | None = None,
    config: ReportPageConfig = ReportPageConfig(),
    progress: Progress | None = None,
) -> ReportPage:
    """Write `{output_root}/report/` for `subjects` (a manifest's, in its order) atomically.

    Args:
        eval_subjects: held-out test subjects, marked (`read_eval_split`).
        data_root: NeRSemble root; a subject with `{data_root}/ground_truth/{id}` (the sample)
            gets its shard's accuracy against that truth.
        errors: subject -> error of a failed build, when the caller knows it.
    """
    start = time.monotonic()
    report = progress or silent
    root = Path(output_root)
    subjects = list(dict.fromkeys(validate_subject_id(s) for s in subjects))
    eval_subjects = frozenset(validate_subject_id(s) for s in eval_subjects)
    fingerprint = inputs_fingerprint(
        output_root=root, subjects=subjects, eval_subjects=eval_subjects
    )
    report(0.0, f"reading {len(subjects)} subjects")
    rows = [
        read_subject(
            output_root=root,
            subject=s,
            eval_subjects=eval_subjects,
            error=(errors or {}).get(s),
            config=config,
        )
        for s in subjects
    ]
    rows.sort(key=lambda r: STATUS_RANK[r.status])
    final = root / PAGE_DIR
    with atomic_dir(final) as tmp:
        thumbs, made, reused = _thumbnails(
            rows, output_root=root, tmp=tmp, old=final, config=config, progress=report
        )
        accuracy = _accuracies(
            rows, output_root=root, data_root=_path(data_root), old=final / ACCURACY_FILE
        )
        rows = [dataclasses.replace(r, accuracy=_accuracy(accuracy.get(r.subject))) for r in rows]
        report(0.9, "writing pages")
        _write_pages(tmp, final=final, rows=rows, thumbs=thumbs, eval_subjects=eval_subjects)
        (tmp / ACCURACY_FILE).write_text(json.dumps(accuracy, indent=1))
        (tmp / INPUTS_FILE).write_text(json.dumps({"identity": fingerprint, "subjects": subjects}))
    report(1.0, f"report: {final / 'index.html'}")
    return ReportPage(
        index=final / "index.html",
        rows=tuple(rows),
        fingerprint=fingerprint,
        thumbnails_made=made,
        thumbnails_reused=reused,
        seconds=time.monotonic() - start,
    )


def _path(value: str | os.PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def _accuracy(record: Mapping | None) -> Accuracy | None:
    if not record:
        return None
    return Accuracy(**{f.name: record[f.name] for f in dataclasses.fields(Accuracy)})


def _seconds(value: float) -> str:
    return f"{int(value // 3600)}:{int(value % 3600 // 60):02d}:{int(value % 60):02d}"


def _bytes(value: float) -> str:
    """Bytes for people: 1234567 -> '1.2 MB'."""
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} TB"


def dataset_totals(rows: Sequence[SubjectRow]) -> list[tuple[str, str]]:
    """(value, label) pairs of the whole dataset: subjects, timesteps, views, bytes, and the
    seconds per stage summed over subjects."""
    built = [r for r in rows if r.status != "failed"]

    def total(name: str) -> int:
        return sum(getattr(r, name) or 0 for r in built)

    failed = sum(r.status == "failed" for r in rows)
    empty = sum(r.status == "empty" for r in rows)
    totals = [
        (f"{len(rows)}", f"subjects ({failed} failed, {empty} with none kept)"),
        (f"{total('selected'):,}", "timesteps selected"),
        (f"{total('reconstructed'):,}", "reconstructed"),
        (f"{total('kept'):,}", "kept"),
        (f"{total('shard_views'):,}", "views in shards"),
        (_bytes(total("shard_bytes")), "in shards"),
    ]
    for stage in STAGES:
        spent = sum(r.seconds.get(stage, 0.0) for r in built)
        title = "SfM" if stage == "sfm" else stage
        totals.append((_seconds(spent), f"{title} time (h:mm:ss, all subjects)"))
    return totals


def _accuracy_rows(accuracy: Accuracy | None) -> list[tuple[str, str]]:
    if accuracy is None:
        return []
    a = accuracy
    return [
        ("views compared with the truth", f"{a.views}"),
        ("depth error on face pixels, median", f"{a.depth_median_mm:.3f} mm"),
        ("depth pixels within 5 mm", f"{a.depth_within_5mm:.1%}"),
        ("face pixels with depth (median view)", f"{a.coverage:.1%}"),
        ("canonical-map error, median", f"{a.canonical_median_mm:.3f} mm"),
        ("canonical-map error, 90th percentile", f"{a.canonical_p90_mm:.3f} mm"),
    ]


def _write_pages(
    tmp: Path,
    *,
    final: Path,
    rows: Sequence[SubjectRow],
    thumbs: Mapping[Path, str],
    eval_subjects: Collection[str],
) -> None:
    """index.html, one page per subject, and the stylesheet and script, into `tmp` (links
    are relative to where it lands, `final`)."""
    here = Path(__file__).parent
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(here),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
    )
    env.globals.update(rank=STATUS_RANK, stages=STAGES)
    macros = env.get_template("report_page.html").module
    present = sorted(s for s in eval_subjects if any(r.subject == s for r in rows))
    eval_line = (
        f"eval split (appendix B.2): {len(present)} of {len(eval_subjects)} held-out "
        f"subjects here{': ' + ', '.join(present) if present else ''}; marked 'eval'"
    )
    built_at = time.strftime("%Y-%m-%d %H:%M")
    index = macros.index(rows, dataset_totals(rows), eval_line, built_at)
    (tmp / "index.html").write_text(str(index))
    (tmp / "subjects").mkdir()
    pages = final / "subjects"

    def link(source: Path) -> str:
        return urllib.parse.quote(Path(os.path.relpath(source, pages)).as_posix())

    def thumb(source: Path) -> str:
        return urllib.parse.quote(f"../{thumbs[source]}")

    for row in rows:
        page = macros.subject(row, thumb, link, _accuracy_rows(row.accuracy))
        (tmp / "subjects" / f"{row.subject}.html").write_text(str(page))
    shutil.copyfile(here / "report_page.css", tmp / "style.css")
    shutil.copyfile(here / "report_page.js", tmp / "sort.js")
