"""The shard format: the one home of its schema, writer, reader and validator.

A shard is a self-contained folder that trains without the raw dataset:

    index.parquet                                   one row per view sample (`INDEX_SCHEMA`)
    {subject}/{sequence}/frame_{frame:05d}/cam_{serial}.png|.jpg    RGB as captured
    {subject}/{sequence}/frame_{frame:05d}/cam_{serial}.exr         maps (`MAP_CHANNELS`)

Maps are at the image's size: depth (camera z, m, NaN where none), canonical (H, W, 3)
FLAME metres (NaN where none), normal (H, W, 3) unit world normals, mask (1 where canonical is
valid); further channels (e.g. distance) may follow. Cameras follow `tasks.formats.cameras` (OpenCV,
K for the stored size, world_2_cam). A dataset folder holds shards and `manifest.json`, which
lists them with their index checksums.

    python -m tasks.formats.shards validate DIR [DIR ...]  # a shard or a dataset; 1 on problems
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.formats.atomic import atomic_dir, write_json
from tasks.formats.cameras import Camera
from tasks.formats.exr import read_exr
from tasks.formats.names import validate_subject_id
from tasks.progress import Progress, silent

SCHEMA_VERSION = 1
"""Bump on any change to `INDEX_SCHEMA`, `MAP_CHANNELS` or the layout."""
INDEX_FILE = "index.parquet"
MANIFEST_FILE = "manifest.json"
FLAME_COLUMNS = ("shape", "expr", "rotation", "translation", "neck_pose", "jaw_pose", "eyes_pose")
"""Tracked FLAME parameters of the sample's timestep (`FlameParams` names), float32 lists."""
QUALITY_COLUMNS = ("sfm_residual_px", "tracking_residual", "surface_distance_m", "valid_fraction")
"""Quality figures, NaN when unknown: the timestep's SfM reprojection error (px), the
tracker's final residual, this view's median depth-point distance to the tracked FLAME
surface (m), and its fraction of pixels with a canonical coordinate."""
MAP_CHANNELS = {"depth": 1, "canonical": 3, "normal": 3, "mask": 1}
"""Channels every maps EXR holds, with their component counts."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_KEY = ("subject", "sequence", "frame", "serial")
INDEX_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("subject", pa.string()),
        ("sequence", pa.string()),
        ("frame", pa.int32()),
        ("serial", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("K", pa.list_(pa.float64(), 9)),
        ("world_2_cam", pa.list_(pa.float64(), 16)),
        *[(name, pa.list_(pa.float32())) for name in FLAME_COLUMNS],
        *[(name, pa.float32()) for name in QUALITY_COLUMNS],
        ("image_file", pa.string()),
        ("maps_file", pa.string()),
        ("image_sha256", pa.string()),
        ("maps_sha256", pa.string()),
    ]
)
"""The index: K row-major (3, 3), world_2_cam row-major (4, 4), files relative to the shard."""

DEPTH_RANGE = (1e-3, 100.0)
"""Valid depth (m) lies in this range."""
CANONICAL_BOX = 0.4
"""Valid canonical coordinates lie within +-this (m) on each FLAME axis (head ~ +-0.15)."""
RIGID_TOLERANCE = 1e-4
"""Allowed |R R^T - I| and |det R - 1| of world_2_cam (as `tasks.formats.nersemble` reads them)."""
_NAME_RE = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_+.-]*")


class ShardError(ValueError):
    """A shard could not be written or read as the schema says."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardSample:
    """One view sample to write: its metadata and the files to copy in."""

    subject: str
    """Subject id."""
    sequence: str
    """Sequence name."""
    frame: int
    """Frame (timestep) number in the sequence."""
    camera: Camera
    """The view's camera at the stored image size."""
    flame: Mapping[str, np.ndarray]
    """Tracked FLAME parameters of the timestep, one array per `FLAME_COLUMNS` name."""
    quality: Mapping[str, float]
    """Known quality figures by `QUALITY_COLUMNS` name; the rest are stored as NaN."""
    image: Path
    """RGB image file (PNG or JPEG) of `camera`'s size."""
    maps: Path
    """EXR with `MAP_CHANNELS` at `camera`'s size."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """A written shard, as the manifest lists it."""

    path: Path
    """The shard folder."""
    samples: int
    """Rows in its index."""
    index_sha256: str
    """Checksum of its index file."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with a shard or dataset."""

    file: str
    """The file (relative to the validated folder) or index row at fault."""
    message: str
    """What is wrong."""

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def write_shard(
    *,
    samples: Sequence[ShardSample],
    path: str | os.PathLike,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ShardInfo:
    """Copy the samples' files into a new shard with its index, validate it, and rename it into
    place (a temporary sibling first, so a half-written shard never looks complete)."""
    final = Path(path)
    if final.exists() and not overwrite:
        raise FileExistsError(f"shard already exists: {final}")
    report = progress or silent
    with atomic_dir(final) as tmp:
        count = _fill_shard(samples, tmp, report)
    report(1.0, f"{count} samples written")
    return ShardInfo(path=final, samples=count, index_sha256=sha256(final / INDEX_FILE))


def _fill_shard(samples: Sequence[ShardSample], tmp: Path, report: Progress) -> int:
    """Copy the files and write the index into `tmp`; raise unless the result validates.
    No samples (a subject whose every timestep was dropped) make a valid empty shard."""
    rows = []
    for sample in samples:
        rows.append(_write_sample(sample, tmp))
        report(0.5 * len(rows) / len(samples), f"copied {len(rows)}/{len(samples)} samples")
    pq.write_table(
        pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), tmp / INDEX_FILE, compression="zstd"
    )
    report(0.5, "validating")
    problems = validate_shard(tmp)
    if problems:
        listed = "\n  ".join(str(p) for p in problems[:20])
        raise ShardError(f"{tmp}: the written shard is not valid:\n  {listed}")
    return len(rows)


def sample_stem(*, subject: str, sequence: str, frame: int, serial: str) -> str:
    """A sample's file path in a shard without suffix; refuses names that are not plain."""
    for what, name in (("sequence", sequence), ("serial", serial)):
        if not _NAME_RE.fullmatch(name):
            raise ShardError(f"{what} {name!r} is not a plain name")
    subject = validate_subject_id(subject)
    return f"{subject}/{sequence}/frame_{int(frame):05d}/cam_{serial}"


def _write_sample(sample: ShardSample, shard: Path) -> dict[str, object]:
    camera = sample.camera
    stem = sample_stem(
        subject=sample.subject, sequence=sample.sequence, frame=sample.frame, serial=camera.serial
    )
    suffix = Path(sample.image).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ShardError(f"{sample.image}: image must be one of {IMAGE_SUFFIXES}")
    unknown = (set(sample.flame) - set(FLAME_COLUMNS)) | (
        set(sample.quality) - set(QUALITY_COLUMNS)
    )
    missing = set(FLAME_COLUMNS) - set(sample.flame)
    if unknown or missing:
        raise ShardError(f"{stem}: unknown fields {sorted(unknown)}, missing {sorted(missing)}")
    files = {"image": f"{stem}{suffix}", "maps": f"{stem}.exr"}
    (shard / stem).parent.mkdir(parents=True, exist_ok=True)
    for kind, name in files.items():
        shutil.copyfile(getattr(sample, kind), shard / name)
    return {
        "schema_version": SCHEMA_VERSION,
        "subject": validate_subject_id(sample.subject),
        "sequence": sample.sequence,
        "frame": int(sample.frame),
        "serial": camera.serial,
        "width": camera.width,
        "height": camera.height,
        "K": np.asarray(camera.K, dtype=np.float64).ravel().tolist(),
        "world_2_cam": np.asarray(camera.world_2_cam, dtype=np.float64).ravel().tolist(),
        **{
            n: np.asarray(sample.flame[n], dtype=np.float32).ravel().tolist() for n in FLAME_COLUMNS
        },
        **{n: float(sample.quality.get(n, np.nan)) for n in QUALITY_COLUMNS},
        "image_file": files["image"],
        "maps_file": files["maps"],
        "image_sha256": sha256(shard / files["image"]),
        "maps_sha256": sha256(shard / files["maps"]),
    }


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_index(shard: str | os.PathLike) -> pd.DataFrame:
    """A shard's index, one row per sample; ShardError unless it has this schema."""
    path = Path(shard) / INDEX_FILE
    if not path.is_file():
        raise ShardError(f"{path}: missing shard index")
    table = pq.read_table(path)
    if not table.schema.equals(INDEX_SCHEMA, check_metadata=False):
        theirs = {f.name: f.type for f in table.schema}
        differ = [f.name for f in INDEX_SCHEMA if theirs.pop(f.name, None) != f.type]
        raise ShardError(
            f"{path}: not schema version {SCHEMA_VERSION}: columns {differ} missing or of "
            f"another type, {sorted(theirs)} unexpected"
        )
    index = table.to_pandas()
    versions = set(index.schema_version.unique())
    if versions - {SCHEMA_VERSION}:
        raise ShardError(f"{path}: schema version {sorted(versions)}, want {SCHEMA_VERSION}")
    return index


def load_sample(shard: str | os.PathLike, row: pd.Series) -> dict[str, object]:
    """One sample as arrays: image (H, W, 3) uint8 RGB, the maps' channels (float32), K (3, 3),
    world_2_cam (4, 4), FLAME parameters and quality figures, and its key fields."""
    shard = Path(shard)
    maps = read_exr(shard / row.maps_file)
    return {
        **{k: row[k] for k in _KEY},
        "image": read_image(shard / row.image_file),
        **maps,
        "K": np.asarray(row.K, dtype=np.float64).reshape(3, 3),
        "world_2_cam": np.asarray(row.world_2_cam, dtype=np.float64).reshape(4, 4),
        **{n: np.asarray(row[n], dtype=np.float32) for n in FLAME_COLUMNS},
        **{n: float(row[n]) for n in QUALITY_COLUMNS},
    }


def iter_samples(shard: str | os.PathLike) -> Iterator[dict[str, object]]:
    """Every sample of a shard in index order (see `load_sample`)."""
    for _, row in read_index(shard).iterrows():
        yield load_sample(shard, row)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PNG or JPEG file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ShardError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_manifest(*, root: str | os.PathLike, shards: Sequence[ShardInfo]) -> Path:
    """`{root}/manifest.json` listing `shards` (folders inside `root`), written atomically."""
    root = Path(root)
    entries = [
        {
            "path": Path(os.path.relpath(s.path, root)).as_posix(),
            "samples": s.samples,
            "index_sha256": s.index_sha256,
        }
        for s in shards
    ]
    for entry in entries:
        if entry["path"].startswith(".."):
            raise ShardError(f"shard {entry['path']} is not inside the dataset folder {root}")
    path = root / MANIFEST_FILE
    return write_json(path, {"schema_version": SCHEMA_VERSION, "shards": entries})


def read_manifest(root: str | os.PathLike) -> list[ShardInfo]:
    """The shards a dataset folder's manifest lists."""
    path = Path(root) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
        if data["schema_version"] != SCHEMA_VERSION:
            raise ShardError(f"{path}: schema version {data['schema_version']}")
        return [
            ShardInfo(
                path=Path(root) / e["path"], samples=e["samples"], index_sha256=e["index_sha256"]
            )
            for e in data["shards"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ShardError(f"{path}: not a readable manifest ({err})") from err


def validate(path: str | os.PathLike) -> list[Problem]:
    """Problems of a shard folder, or of a dataset folder and every shard its manifest lists
    (missing or altered files, schema, value ranges); empty when all is well."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return _validate_dataset(path)
    if (path / INDEX_FILE).is_file() or not path.is_dir():
        return validate_shard(path)
    return [Problem(file=".", message=f"neither a shard ({INDEX_FILE}) nor a dataset folder")]


def _validate_dataset(root: Path) -> list[Problem]:
    try:
        shards = read_manifest(root)
    except ShardError as err:
        return [Problem(file=MANIFEST_FILE, message=str(err))]
    problems = []
    for info in shards:
        name = Path(os.path.relpath(info.path, root)).as_posix()
        index = info.path / INDEX_FILE
        if index.is_file() and sha256(index) != info.index_sha256:
            problems.append(Problem(file=f"{name}/{INDEX_FILE}", message="altered (checksum)"))
        for p in validate_shard(info.path):
            problems.append(Problem(file=f"{name}/{p.file}", message=p.message))
    return problems


def validate_shard(shard: str | os.PathLike) -> list[Problem]:
    """Problems of one shard: its index, every listed file, files it does not list."""
    shard = Path(shard)
    try:
        index = read_index(shard)
    except (ShardError, OSError, pa.ArrowException) as err:
        return [Problem(file=INDEX_FILE, message=str(err).removeprefix(f"{shard / INDEX_FILE}: "))]
    problems = []
    if index.duplicated(list(_KEY)).any():
        problems.append(
            Problem(file=INDEX_FILE, message="duplicate (subject, sequence, frame, serial)")
        )
    listed = {INDEX_FILE}
    for i, row in index.iterrows():
        where = f"{INDEX_FILE} row {i} ({row.sequence} {row.frame} {row.serial})"
        problems += [Problem(file=where, message=m) for m in check_camera_values(row)]
        listed |= {row.image_file, row.maps_file}
        problems += _check_files(shard, row)
    on_disk = {p.relative_to(shard).as_posix() for p in shard.rglob("*") if p.is_file()}
    problems += [
        Problem(file=f, message="not listed in the index") for f in sorted(on_disk - listed)
    ]
    return problems


def check_camera_values(row: pd.Series) -> list[str]:
    """What is wrong with a row's K (a pinhole for its size) and world_2_cam (rigid)."""
    K = np.asarray(row.K, dtype=np.float64).reshape(3, 3)
    T = np.asarray(row.world_2_cam, dtype=np.float64).reshape(4, 4)
    found = []
    if not (np.isfinite(K).all() and np.array_equal(K[2], [0, 0, 1])):
        found.append("K must be finite with last row 0 0 1")
    elif not (K[0, 0] > 0 and K[1, 1] > 0 and 0.5 < K[0, 0] / K[1, 1] < 2):
        found.append(f"K focal lengths {K[0, 0]:.6g}, {K[1, 1]:.6g} are not sane")
    elif abs(K[0, 1]) > 1e-3 * K[0, 0] or not (
        0 <= K[0, 2] <= row.width and 0 <= K[1, 2] <= row.height
    ):
        found.append(f"K skew or principal point ({K[0, 2]:.6g}, {K[1, 2]:.6g}) is not sane")
    R = T[:3, :3]
    rigid = (
        np.isfinite(T).all()
        and np.allclose(T[3], [0, 0, 0, 1])
        and np.allclose(R @ R.T, np.eye(3), atol=RIGID_TOLERANCE)
        and abs(np.linalg.det(R) - 1) < RIGID_TOLERANCE
    )
    if not rigid:
        found.append("world_2_cam is not rigid (R R^T = I, det R = 1, bottom row 0 0 0 1)")
    return found


def _check_files(shard: Path, row: pd.Series) -> list[Problem]:
    problems = []
    for kind, check in (("image", _check_image), ("maps", _check_maps)):
        name, digest = row[f"{kind}_file"], row[f"{kind}_sha256"]
        path = shard / name
        if not path.is_file():
            problems.append(Problem(file=name, message="missing"))
        elif sha256(path) != digest:
            problems.append(Problem(file=name, message="altered (checksum differs from the index)"))
        else:
            problems += [Problem(file=name, message=m) for m in check(path, row)]
    return problems


def _check_image(path: Path, row: pd.Series) -> list[str]:
    try:
        image = read_image(path)
    except ShardError as err:
        return [str(err)]
    if image.shape != (row.height, row.width, 3):
        return [f"image is {image.shape}, index says {row.width}x{row.height}"]
    return []


def _check_maps(path: Path, row: pd.Series) -> list[str]:
    try:
        maps = read_exr(path)
    except (ValueError, OSError) as err:
        return [str(err)]
    size = (row.height, row.width)
    wrong = [
        f"channel {name} missing or not {size} x {n}"
        for name, n in MAP_CHANNELS.items()
        if name not in maps or maps[name].shape != (size if n == 1 else (*size, n))
    ]
    return wrong or check_map_values(maps)


def check_map_values(maps: Mapping[str, np.ndarray]) -> list[str]:
    """What is wrong with a view's maps' values (see the module docstring for what they hold)."""
    depth, canonical, normal, mask = (maps[n] for n in ("depth", "canonical", "normal", "mask"))
    valid = mask == 1
    found = []
    if not np.isin(mask, (0.0, 1.0)).all():
        found.append("mask holds values other than 0 and 1")
    with np.errstate(invalid="ignore"):
        in_range = (depth >= DEPTH_RANGE[0]) & (depth <= DEPTH_RANGE[1])
        unit = np.abs(np.linalg.norm(normal, axis=-1) - 1) < 1e-3
    if np.isinf(depth).any() or (np.isfinite(depth) & ~in_range).any():
        found.append(f"depth outside {DEPTH_RANGE} m or infinite")
    if not np.isfinite(depth[valid]).all():
        found.append("depth missing where mask is 1")
    finite = np.isfinite(canonical).all(axis=-1)
    if not np.array_equal(finite, valid) or np.isfinite(canonical[~finite]).any():
        found.append("canonical is not finite exactly where mask is 1")
    elif (np.abs(canonical[valid]) > CANONICAL_BOX).any():
        found.append(f"canonical outside the +-{CANONICAL_BOX} m box around the FLAME head")
    normal_finite = np.isfinite(normal).all(axis=-1)
    if np.isfinite(normal[~normal_finite]).any() or not unit[normal_finite].all():
        found.append("normals are not unit vectors (or partly NaN)")
    return found


def main(argv: list[str] | None = None) -> int:
    """`validate DIR ...`: print each problem; 0 when every folder is valid, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="python -m tasks.formats.shards", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="check shards or dataset folders")
    check.add_argument("paths", nargs="+", type=Path, help="shard or dataset folders")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.paths:
        problems = validate(path)
        for problem in problems:
            print(f"{path}/{problem}")
        print(f"{path}: {'valid' if not problems else f'{len(problems)} problems'}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())


def shard_info(path: str | os.PathLike) -> ShardInfo:
    """The manifest entry of a written shard."""
    path = Path(path)
    return ShardInfo(
        path=path, samples=len(read_index(path)), index_sha256=sha256(path / INDEX_FILE)
    )
