"""Atomic outputs: write into a temporary sibling, then rename it into place.

The one home of this rule. A killed run leaves at most a hidden `.NAME.partial` sibling,
which the next attempt replaces; a half-written output never appears under its final name.
An exception inside the block removes the temporary sibling and leaves the old output as
it was.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; on success it replaces `final`."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


@contextmanager
def atomic_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final` with the same suffix (writers that choose the
    format by suffix still work); on success it replaces `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.partial{final.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write a whole file atomically."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, data: object, *, indent: int = 1) -> Path:
    """Write JSON atomically (values JSON cannot hold are written with `str`)."""
    return write_bytes(path, json.dumps(data, indent=indent, default=str).encode())
