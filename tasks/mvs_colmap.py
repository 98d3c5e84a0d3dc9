"""COLMAP's PatchMatch stereo, the dense depth backend "colmap" of `tasks.mvs` (CUDA only).

It runs on our neighbour choice (`stereo/patch-match.cfg`), photometric then geometric pass
with COLMAP's filter; its geometric maps stay in the workspace for the fusion.
"""

from __future__ import annotations

import zlib  # noqa: F401  zlib must load before pycolmap (tasks.formats.colmap_cameras)
from collections.abc import Mapping

import numpy as np
import pycolmap

from tasks.fusion import DenseWorkspace, read_colmap_map

COLMAP_NEEDS_CUDA = (
    "COLMAP PatchMatch needs CUDA: this pycolmap was built without it "
    "(pycolmap.has_cuda is False); use backend='torch'"
)


def patch_match(
    *,
    workspace: DenseWorkspace,
    neighbours: Mapping[str, tuple[str, ...]],
    window_radius: int,
    min_num_consistent: int,
) -> None:
    """Run PatchMatch on every view of `workspace` with the given source views (COLMAP's own
    choice for a view with none). Raises RuntimeError without CUDA."""
    if not pycolmap.has_cuda:
        raise RuntimeError(COLMAP_NEEDS_CUDA)
    lines = []
    for name, sources in neighbours.items():
        lines += [name, ", ".join(sources) or "__auto__, 20"]
    (workspace.stereo_dir / "patch-match.cfg").write_text("\n".join(lines) + "\n")
    options = pycolmap.PatchMatchOptions(
        window_radius=window_radius,
        geom_consistency=True,
        filter=True,
        filter_min_num_consistent=min_num_consistent,
    )
    pycolmap.patch_match_stereo(workspace.root, options=options)


def read_view(workspace: DenseWorkspace, name: str) -> tuple[np.ndarray, np.ndarray] | str:
    """One view's geometric maps: depth (H, W) and camera-frame normals (H, W, 3), NaN where
    invalid; or why there are none."""
    path = workspace.depth_map_path(name)
    if not path.is_file():
        return "PatchMatch wrote no map"
    depth = read_colmap_map(path)
    valid = depth > 0
    if not valid.any():
        return "PatchMatch kept no pixel"
    normal = read_colmap_map(workspace.normal_map_path(name))
    return (
        np.where(valid, depth, np.nan).astype(np.float32),
        np.where(valid[..., None], normal, np.nan).astype(np.float32),
    )
