"""Atomic outputs: write into a temporary sibling unique to the writer, then swap it into place.

The one home of this rule. Several writers of one output (worker processes, or machines
sharing an output root) each write their own hidden sibling `.STEM.HOST_PID_TOKEN.partial`;
the last to finish wins, and a reader always finds a complete output once the first is
there: a file is replaced by one rename, a folder is exchanged with the old one in one step
(Linux `renameat2(RENAME_EXCHANGE)`) and the old one removed after. Where the file system
cannot exchange (some network file systems), the old folder is moved aside first, so a
reader may find no folder for a moment, never a half one.

An exception inside the block removes the writer's sibling and leaves the old output as it
was. A killed writer's sibling is removed by the next writer of that output: at once when it
ran on this host (its process is gone), after `STALE_AFTER_S` when it ran elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STALE_AFTER_S = 24 * 3600
"""Age after which another host's unfinished sibling counts as a killed writer's."""

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname()) or "host"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_LIBC = ctypes.CDLL(None, use_errno=True)


def partial_path(final: Path, owner: str | None = None) -> Path:
    """The hidden sibling a writer fills: same suffix as `final` (writers that choose the
    format by suffix still work), named after its owner (`HOST_PID_TOKEN`)."""
    owner = owner or f"{_HOST}_{os.getpid()}_{secrets.token_hex(4)}"
    return final.with_name(f".{final.stem}.{owner}.partial{final.suffix}")


def _is_stale(sibling: Path, host: str | None, pid: str | None) -> bool:
    """Whether an unfinished sibling's writer is gone (siblings from before owners were
    named, `host` None, are always a killed run's)."""
    if host is None:
        return True
    if host != _HOST:
        with contextlib.suppress(FileNotFoundError):
            return time.time() - sibling.lstat().st_mtime > STALE_AFTER_S
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_partials(final: Path) -> list[Path]:
    """Remove the siblings of `final` that killed writers left; return them."""
    pattern = re.compile(
        rf"\.{re.escape(final.stem)}\.(?:([A-Za-z0-9]+)_(\d+)_[0-9a-f]+\.)?partial"
        rf"{re.escape(final.suffix)}"
    )
    if not final.parent.is_dir():
        return []
    removed = []
    for sibling in final.parent.iterdir():
        match = pattern.fullmatch(sibling.name)
        if match and _is_stale(sibling, *match.groups()):
            _remove(sibling)
            removed.append(sibling)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step; False where the system or file system cannot."""
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace_dir(tmp: Path, final: Path) -> None:
    """Put the complete folder `tmp` at `final`, whatever other writers do meanwhile."""
    aside = []
    try:
        while True:
            try:
                os.rename(tmp, final)  # no output there yet (or an empty folder)
                return
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            try:
                if _exchange(tmp, final):
                    aside.append(tmp)  # the old output, now under this writer's name
                    return
            except FileNotFoundError:
                continue  # the old output went away meanwhile: rename again
            aside.append(partial_path(final))
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, aside[-1])
    finally:
        for old in aside:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; on success it replaces `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = partial_path(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_dir(tmp, final)


@contextmanager
def atomic_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final` with the same suffix; on success it replaces
    `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = partial_path(final)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
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
