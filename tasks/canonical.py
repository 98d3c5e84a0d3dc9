"""Deformation transfer into canonical FLAME space (paper 3.3; canonical space = FLAME
coordinates, appendix B.1).

Every reconstructed point p (fused cloud points, every valid depth pixel back-projected) finds
its nearest point q on the tracked FLAME surface (triangle + barycentrics) and takes the
deformation there, D(q) = sum_k b_k (tracked_k - canonical_k); its canonical position is
p - D(q). Details the reconstruction has beyond FLAME (p - q) are kept, unrotated, as the
paper's plain translation does; hair, centimetres off the scalp, is such a detail. Only
points farther than `max_distance` from the surface (shoulders, background, long hair) get no
canonical coordinate. The canonical mesh (zero expression and pose; template or tracked
identity) is the tracker's choice: its `canonical.ply` (`tasks.tracking`).

The default limit, 5 cm, was chosen on the sample subject with hair geometry (a shell 1.5 to
3.5 cm thick), built by the pipeline (`benchmarks.bench_dataset_accuracy --tracking ...`,
figures in its docstring): 1 cm, the former default, dropped 80% of the hair's depth pixels
(31% of all); 3 cm kept 99.7% of all, 5 cm all of them, with room for fuller hair than the
sample's. Shoulders and background lie farther from FLAME than that on real captures.

Output folder of a timestep (written to a temporary sibling, then renamed into place):

    cam_{serial}.exr        depth (camera z, m), canonical (m), normal (world, unit),
                            mask (1 where canonical is valid), distance (m to the surface)
    canonical_points.ply    the fused cloud in canonical space (x y z, distance, colours)
    views.parquet           per view: depth and valid fractions, median surface distance,
                            depth pixels transferred and dropped, and counted by distance band
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import trimesh
from scipy.spatial import cKDTree

from tasks.formats.atomic import atomic_dir
from tasks.formats.cameras import Camera, backproject_depth
from tasks.formats.exr import write_exr
from tasks.formats.ply import write_ply
from tasks.progress import Progress, silent

CLOUD_FILE = "canonical_points.ply"
"""The timestep's canonical point cloud in its output folder."""
VIEWS_FILE = "views.parquet"
"""The timestep's per-view figures (`CanonicalTimestep.views`) in its output folder."""
CHUNK = 16384
"""Points per nearest-triangle batch: bounds the (chunk, candidates, 3, 3) temporaries."""


def view_file(serial: str) -> str:
    """File name of one view's maps in a timestep's output folder."""
    return f"cam_{serial}.exr"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CanonicalConfig:
    """How reconstructed points are carried into canonical FLAME space."""

    correspondence: Literal["surface", "vertex"] = "surface"
    """A point's FLAME partner: its nearest surface point, or its nearest vertex (coarser)."""
    candidates: int = 4
    """'surface': triangles tried per point (those of nearest centroid). With 4, ~95% of
    points within a few mm of the surface get the exact nearest triangle and the rest a
    near-equal one (canonical positions within 0.1 mm of exact at the 99th percentile); 12
    is exact for nearly all, at three times the cost."""
    max_distance: float = 0.05
    """Metres from the tracked surface beyond which a point gets no canonical point (hair
    lies up to 3.5 cm out; see the module docstring for the measurement)."""
    distance_bands: tuple[float, ...] = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)
    """Metres: band edges of the per-view counts of depth pixels by surface distance."""

    def __post_init__(self) -> None:
        if self.candidates < 1 or not self.max_distance > 0:
            raise ValueError(f"need candidates >= 1 and max_distance > 0: {self}")
        bands = np.asarray(self.distance_bands)
        if len(bands) == 0 or bands[0] <= 0 or np.any(np.diff(bands) <= 0):
            raise ValueError(f"distance_bands must rise from above 0: {self.distance_bands}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlameMatch:
    """Where points meet the tracked FLAME mesh."""

    vertex_ids: np.ndarray
    """(N, 3) int64 vertices whose deformation a point takes."""
    weights: np.ndarray
    """(N, 3) their weights (barycentrics; (1, 0, 0) for a nearest vertex)."""
    point: np.ndarray
    """(N, 3) the matched point on the tracked mesh (world metres)."""
    distance: np.ndarray
    """(N,) distance from each point to `point` (metres)."""


class TrackedSurface:
    """A tracked FLAME mesh prepared for nearest-point queries, built once per timestep."""

    def __init__(self, *, vertices: np.ndarray, faces: np.ndarray) -> None:
        """From (V, 3) tracked vertices (world metres) and (F, 3) int faces."""
        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.faces = np.asarray(faces, dtype=np.int64)
        self.triangles = self.vertices[self.faces]
        self._centroids = cKDTree(self.triangles.mean(axis=1))
        self._vertex_tree = cKDTree(self.vertices)

    def match(self, points: np.ndarray, *, config: CanonicalConfig) -> FlameMatch:
        """The FLAME partner of each of (N, 3) world points, by `config.correspondence`."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if config.correspondence == "vertex" or len(points) == 0:
            return self._nearest_vertex(points)
        parts = [
            self._nearest_on_surface(points[i : i + CHUNK], config.candidates)
            for i in range(0, len(points), CHUNK)
        ]
        return FlameMatch(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in _FIELDS}
        )

    def _nearest_vertex(self, points: np.ndarray) -> FlameMatch:
        distance, vertex = self._vertex_tree.query(points, workers=-1)
        weights = np.zeros((len(points), 3))
        weights[:, 0] = 1.0
        return FlameMatch(
            vertex_ids=np.repeat(vertex[:, None], 3, axis=1).astype(np.int64),
            weights=weights,
            point=self.vertices[vertex],
            distance=distance,
        )

    def _nearest_on_surface(self, points: np.ndarray, candidates: int) -> FlameMatch:
        """Exact closest points (trimesh) on the `candidates` triangles with the nearest
        centroids (a k-d tree): the nearest of them is kept."""
        k = min(candidates, len(self.faces))
        _, cand = self._centroids.query(points, k=k, workers=-1)
        cand = cand.reshape(len(points), k)
        closest = trimesh.triangles.closest_point(
            self.triangles[cand].reshape(-1, 3, 3), np.repeat(points, k, axis=0)
        ).reshape(len(points), k, 3)
        offset = closest - points[:, None]
        d2 = np.einsum("nkc,nkc->nk", offset, offset)
        best = d2.argmin(axis=1)
        rows = np.arange(len(points))
        triangle, point = cand[rows, best], closest[rows, best]
        weights = trimesh.triangles.points_to_barycentric(self.triangles[triangle], point)
        return FlameMatch(
            vertex_ids=self.faces[triangle],
            weights=weights,
            point=point,
            distance=np.sqrt(d2[rows, best]),
        )


_FIELDS = dataclasses.fields(FlameMatch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CanonicalPoints:
    """Points carried into canonical space."""

    canonical: np.ndarray
    """(N, 3) canonical positions (FLAME metres); NaN where not valid."""
    distance: np.ndarray
    """(N,) distance to the tracked surface (metres); NaN for non-finite points."""
    valid: np.ndarray
    """(N,) bool: finite and within `max_distance` of the surface."""


def canonicalize_points(
    *,
    points: np.ndarray,
    surface: TrackedSurface,
    deformation: np.ndarray,
    config: CanonicalConfig,
) -> CanonicalPoints:
    """Canonical positions of (N, 3) world `points` given the (V, 3) per-vertex `deformation`
    (tracked - canonical) of `surface`'s vertices: p - D(nearest FLAME point)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    finite = np.isfinite(points).all(axis=1)
    match = surface.match(points[finite], config=config)
    moved = np.einsum("nk,nkc->nc", match.weights, deformation[match.vertex_ids])
    canonical = np.full(points.shape, np.nan)
    distance = np.full(len(points), np.nan)
    canonical[finite] = points[finite] - moved
    distance[finite] = match.distance
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(canonical).all(axis=1) & (distance <= config.max_distance)
    canonical[~valid] = np.nan
    return CanonicalPoints(canonical=canonical, distance=distance, valid=valid)


def normals_from_depth(*, depth: np.ndarray, camera: Camera) -> np.ndarray:
    """(H, W, 3) unit world normals facing the camera, from central differences of the
    back-projected (H, W) `depth`; NaN at the border and next to invalid depth."""
    return _normals(backproject_depth(depth, camera), camera.center)


def _normals(points: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Normals of (H, W, 3) back-projected points seen from `center` (see normals_from_depth)."""
    du = np.full_like(points, np.nan)
    dv = np.full_like(points, np.nan)
    du[:, 1:-1] = points[:, 2:] - points[:, :-2]
    dv[1:-1] = points[2:] - points[:-2]
    normals = np.cross(dv, du)
    with np.errstate(invalid="ignore", divide="ignore"):
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        away = np.einsum("hwc,hwc->hw", normals, center - points) < 0
    normals[away] *= -1.0
    return normals


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewDepth:
    """One view's reconstruction at the working resolution."""

    camera: Camera
    """The view's camera (its size is the maps' size)."""
    depth: np.ndarray
    """(H, W) camera z-depth in metres; NaN (or <= 0) where there is none."""
    normal: np.ndarray | None = None
    """(H, W, 3) unit world normals, or None to compute them from `depth`."""


def canonicalize_view(
    *,
    view: ViewDepth,
    surface: TrackedSurface,
    deformation: np.ndarray,
    config: CanonicalConfig,
) -> dict[str, np.ndarray]:
    """One view's maps: depth (H, W), canonical (H, W, 3), normal (H, W, 3), mask (H, W) 1
    where canonical is valid, distance (H, W) to the tracked surface; NaN where invalid."""
    camera = view.camera
    size = (camera.height, camera.width)
    if view.depth.shape != size:
        raise ValueError(f"camera {camera.serial}: depth {view.depth.shape}, camera {size}")
    with np.errstate(invalid="ignore"):
        depth = np.where(view.depth > 0, view.depth, np.nan)
    points = backproject_depth(depth, camera)
    carried = canonicalize_points(
        points=points.reshape(-1, 3), surface=surface, deformation=deformation, config=config
    )
    normal = _normals(points, camera.center) if view.normal is None else view.normal
    return {
        "depth": depth,
        "canonical": carried.canonical.reshape(*size, 3),
        "normal": np.where(np.isfinite(depth)[..., None], normal, np.nan),
        "mask": carried.valid.reshape(size).astype(np.float32),
        "distance": carried.distance.reshape(size),
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class CanonicalTimestep:
    """What `canonicalize_timestep` wrote and how it went."""

    directory: Path
    """The timestep's output folder."""
    views: pd.DataFrame
    """One row per view (also in `VIEWS_FILE`): serial, depth_fraction, valid_fraction (of
    all pixels), median_distance (m, over pixels with depth), depth_pixels =
    transferred_pixels + dropped_pixels (beyond `max_distance`) = the sum of the distance-band
    counts (`band_names`: pixels with a surface distance in [lo, hi) mm)."""
    cloud_points: int
    """Points written to the canonical cloud (those within `max_distance`)."""
    cloud_dropped: int
    """Fused points left out: farther than `max_distance` (or not finite)."""


def canonicalize_timestep(
    *,
    views: Sequence[ViewDepth],
    cloud_points: np.ndarray,
    tracked_vertices: np.ndarray,
    canonical_vertices: np.ndarray,
    faces: np.ndarray,
    config: CanonicalConfig,
    out_dir: str | os.PathLike,
    cloud_colors: np.ndarray | None = None,
    progress: Progress | None = None,
) -> CanonicalTimestep:
    """Canonicalize one timestep's views and fused cloud (N, 3) (colours (N, 3) uint8) given
    the tracked and canonical (V, 3) FLAME vertices; write them into `out_dir` atomically."""
    report = progress or silent
    final = Path(out_dir)
    surface = TrackedSurface(vertices=tracked_vertices, faces=faces)
    deformation = surface.vertices - np.asarray(canonical_vertices, dtype=np.float64)
    rows = []
    with atomic_dir(final) as tmp:
        for i, view in enumerate(views):
            report(i / (len(views) + 1), f"canonical maps of camera {view.camera.serial}")
            maps = canonicalize_view(
                view=view, surface=surface, deformation=deformation, config=config
            )
            write_exr(tmp / view_file(view.camera.serial), maps)
            rows.append(_view_row(view.camera.serial, maps, config))
        report(len(views) / (len(views) + 1), "canonical point cloud")
        cloud = canonicalize_points(
            points=cloud_points, surface=surface, deformation=deformation, config=config
        )
        write_point_ply(
            tmp / CLOUD_FILE,
            points=cloud.canonical[cloud.valid],
            distance=cloud.distance[cloud.valid],
            colors=None if cloud_colors is None else np.asarray(cloud_colors)[cloud.valid],
        )
        views_table = pd.DataFrame(rows)
        views_table.to_parquet(tmp / VIEWS_FILE, compression="zstd", index=False)
    report(1.0, "canonical maps written")
    kept = int(cloud.valid.sum())
    return CanonicalTimestep(
        directory=final,
        views=views_table,
        cloud_points=kept,
        cloud_dropped=len(cloud.valid) - kept,
    )


def band_names(bands: Sequence[float]) -> list[str]:
    """Views-table column of each distance band: `pixels_{lo}_{hi}mm`, the last open."""
    edges = [0, *(round(b * 1000, 3) for b in bands)]
    names = [f"pixels_{lo:g}_{hi:g}mm" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return [*names, f"pixels_{edges[-1]:g}mm_up"]


def _view_row(
    serial: str, maps: dict[str, np.ndarray], config: CanonicalConfig
) -> dict[str, object]:
    """One view's figures: fractions, median distance, and how many depth pixels were
    transferred, dropped, and lay in each distance band."""
    has_depth = np.isfinite(maps["depth"])
    distance = maps["distance"][has_depth]
    transferred = int(np.count_nonzero(maps["mask"] == 1))
    bands = np.searchsorted(np.asarray(config.distance_bands), distance, side="right")
    counts = np.bincount(bands, minlength=len(config.distance_bands) + 1)
    return {
        "serial": serial,
        "depth_fraction": float(has_depth.mean()),
        "valid_fraction": float(maps["mask"].mean()),
        "median_distance": float(np.median(distance)) if has_depth.any() else float("nan"),
        "depth_pixels": int(has_depth.sum()),
        "transferred_pixels": transferred,
        "dropped_pixels": int(has_depth.sum()) - transferred,
        **{n: int(c) for n, c in zip(band_names(config.distance_bands), counts, strict=True)},
    }


def write_point_ply(
    path: str | os.PathLike,
    *,
    points: np.ndarray,
    distance: np.ndarray,
    colors: np.ndarray | None = None,
) -> Path:
    """Binary little-endian PLY of (N, 3) float32 points with a per-point `distance` and
    optional (N, 3) uint8 colours, written atomically."""
    columns = {name: points[:, axis] for axis, name in enumerate("xyz")}
    columns["distance"] = distance
    if colors is not None:
        columns |= {name: colors[:, axis] for axis, name in enumerate(("red", "green", "blue"))}
    return write_ply(path, columns)
