"""OpenEXR maps: the one place float32 maps are written and read (ZIP, scanline).

Channel names are the dict keys; an (H, W, 3) array becomes one three-component channel.
Avoid a lone channel named "A": OpenEXR merges it into RGBA on reading.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import OpenEXR

from tasks.formats.atomic import atomic_file


def write_exr(path: str | os.PathLike, channels: dict[str, np.ndarray]) -> Path:
    """Write (H, W) or (H, W, 3) float maps atomically (temporary file, then rename).

    float16 arrays are stored as HALF channels, everything else as FLOAT (float32)."""
    path = Path(path)
    shapes = {name: a.shape[:2] for name, a in channels.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{path}: channels differ in size: {shapes}")
    if "A" in channels:
        raise ValueError(f"{path}: a channel named 'A' would be read back as part of RGBA")
    # A non-contiguous array is written wrong with no error: always make a contiguous copy.
    data = {
        name: np.ascontiguousarray(a, dtype=np.float16 if a.dtype == np.float16 else np.float32)
        for name, a in channels.items()
    }
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with atomic_file(path) as tmp:
        OpenEXR.File(header, data).write(str(tmp))
    return path


def read_exr(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All channels of an EXR file as float32 arrays; a clear error naming a bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EXR file not found: {path}")
    try:
        with OpenEXR.File(str(path)) as f:
            return {
                name: np.array(ch.pixels, dtype=np.float32) for name, ch in f.channels().items()
            }
    except (OSError, RuntimeError) as err:
        raise ValueError(f"{path}: not a readable EXR file ({err})") from err
