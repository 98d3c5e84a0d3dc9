"""How every long stage reports progress, so Luigi (`pipeline.common.progress_callback`), a
benchmark's print or nothing at all can listen through one type."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]
"""progress(fraction done in [0, 1], message)."""


def silent(fraction: float, message: str) -> None:
    """The `Progress` of a caller that does not listen."""
