"""The sample subject's hair: real geometry over the scalp, dark, with strands in its colour.

FLAME (and the sample head model) has no hair, yet real heads do, and dense depth struggles
most there: dark, low contrast, centimetres off the scalp. So the sample subject wears a hair
shell: the head's triangles above the hairline, each cut into `SUBDIVISIONS`^2, pushed out
along the smoothed surface normal by a height that rises from under the skin at the hairline
to `thickness` (about 1.5 cm over the ears, 3 cm on the crown) plus a relief of locks (+-3 mm).
A shell vertex is a fixed blend of up to three head vertices plus its height along their
blended normal, so it follows the posed head exactly as the scalp under it moves.

Colour: a dark brown tone times strands (0.7 mm across, 6 mm along) and locks (3.5 mm across,
24 mm along): 3D noise lattices in template space, stretched along y (hair falling down the
sides and back) and blended into lattices stretched along z on the top (hair combed back).
The same field paints the scalp just above the hairline, so the shell grows out of painted hair.

Canonical coordinate of a hair point (the ground truth's): its posed position minus the
deformation (posed - template) of its nearest point on the posed head mesh, which is the
paper's deformation transfer (section 3.3) applied to perfect tracking. It is computed
exactly at every shell vertex and interpolated across the shell's ~1.5 mm triangles. It is
computed here (`nearest_deformation`), not by `tasks.canonical`, which does the same search:
the truth must not come from the code it scores.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np
import trimesh
from scipy import ndimage
from scipy.spatial import cKDTree

from flame_tracking.model import FlameModel
from flame_tracking.sample_model import template_keypoints

SUBDIVISIONS = 4
"""Each head triangle under the hair becomes SUBDIVISIONS^2 shell triangles."""
TONE = (0.034, 0.022, 0.015)
"""Linear RGB albedo of the hair: dark brown (sRGB about 50, 40, 33 under the studio light)."""
RAMP = 0.02
"""Metres above the hairline over which the shell rises to its full thickness."""
SINK = 0.0015
"""Metres under the skin at the hairline: the shell's edge stays hidden."""
CANDIDATES = 8
"""Head triangles (nearest centroids) searched for each shell vertex's nearest point."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lattice:
    """A smooth random field of unit standard deviation, sampled trilinearly."""

    values: np.ndarray
    """(A, B, C) float32 lattice values."""
    origin: np.ndarray
    """(3,) template position of lattice index (0, 0, 0), metres."""
    cell: np.ndarray
    """(3,) lattice spacing along x, y, z, metres."""

    def at(self, points: np.ndarray) -> np.ndarray:
        """(N,) field values at (N, 3) template points."""
        coords = ((np.asarray(points) - self.origin) / self.cell).T
        return ndimage.map_coordinates(self.values, coords, order=1, mode="nearest").astype(
            np.float64
        )


def _lattice(rng: np.random.Generator, box: np.ndarray, cell: tuple[float, ...]) -> Lattice:
    """Gaussian-blurred white noise on a lattice of `cell` spacing over `box` (2, 3)."""
    cell_a = np.asarray(cell)
    shape = tuple(np.ceil((box[1] - box[0]) / cell_a).astype(int) + 3)
    values = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.8)
    values /= values.std()
    return Lattice(values=values, origin=box[0] - cell_a, cell=cell_a)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HairStyle:
    """Where hair grows and how it looks, in template space (FLAME axes, metres)."""

    profile: tuple[tuple[float, float], ...]
    """(azimuth in degrees from the face, hairline height y) around the head."""
    centre_z: float
    """z of the vertical axis the azimuth is measured about."""
    wobble: Lattice
    """Moves the hairline up and down by a few millimetres."""
    strands: tuple[Lattice, Lattice]
    """Fine streaks along y (sides) and along z (top)."""
    locks: tuple[Lattice, Lattice]
    """Coarse clumps along y and along z (colour and relief)."""

    def above_hairline(self, points: np.ndarray) -> np.ndarray:
        """(N,) metres each (N, 3) template point lies above the hairline (negative below)."""
        azimuth = np.degrees(np.abs(np.arctan2(points[:, 0], points[:, 2] - self.centre_z)))
        hairline = np.interp(azimuth, *zip(*self.profile, strict=True))
        return points[:, 1] - hairline - 0.004 * self.wobble.at(points)

    def _field(self, pair: tuple[Lattice, Lattice], points: np.ndarray) -> np.ndarray:
        """Blend of the y- and z-stretched fields: z on the top of the head, unit variance."""
        top = _smoothstep(points[:, 1], 0.08, 0.13) * (np.pi / 2)
        return np.cos(top) * pair[0].at(points) + np.sin(top) * pair[1].at(points)

    def locks_at(self, points: np.ndarray) -> np.ndarray:
        """(N,) the lock field (unit standard deviation) at (N, 3) template points."""
        return self._field(self.locks, points)

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) linear RGB hair albedo at (N, 3) template points."""
        level = 0.30 * self._field(self.strands, points) + 0.22 * self.locks_at(points)
        return np.asarray(TONE) * np.exp(np.clip(level, -1.2, 1.2))[:, None]


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def hair_style(*, model: FlameModel, seed: int) -> HairStyle:
    """The sample's hair style: hairline about 6.5 cm above the eyes at the front, above the
    ears at the sides, down to the nape at the back; noise lattices drawn from `seed`'s own
    stream (`tasks.sample.scene.stream(seed, "hair")`)."""
    rng = np.random.default_rng([seed, zlib.crc32(b"hair")])
    keypoints = template_keypoints(model)
    eye_y = 0.5 * (keypoints["eye_left"][1] + keypoints["eye_right"][1])
    mouth_y = keypoints["mouth_center"][1]
    profile = (
        (0.0, eye_y + 0.065),
        (35.0, eye_y + 0.058),
        (60.0, eye_y + 0.038),
        (75.0, eye_y + 0.02),
        (100.0, eye_y + 0.014),
        (118.0, eye_y - 0.01),
        (140.0, mouth_y - 0.005),
        (180.0, mouth_y - 0.015),
    )
    v = model.v_template
    box = np.stack([v.min(axis=0) - 0.05, v.max(axis=0) + 0.05])
    box[0, 1] = max(box[0, 1], mouth_y - 0.08)
    return HairStyle(
        profile=profile,
        centre_z=0.5 * (v[:, 2].min() + v[:, 2].max()),
        wobble=_lattice(rng, box, (0.012, 0.012, 0.012)),
        strands=(
            _lattice(rng, box, (0.0007, 0.006, 0.0007)),
            _lattice(rng, box, (0.0007, 0.0007, 0.006)),
        ),
        locks=(
            _lattice(rng, box, (0.0035, 0.024, 0.0035)),
            _lattice(rng, box, (0.0035, 0.0035, 0.024)),
        ),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hair:
    """The hair shell: where each vertex sits on the head, its height, and the style."""

    style: HairStyle
    """Hairline and colour."""
    vertex_ids: np.ndarray
    """(N, 3) int64 head vertices each shell vertex blends."""
    weights: np.ndarray
    """(N, 3) their barycentric weights (rows sum to 1)."""
    height: np.ndarray
    """(N,) metres along the blended normal (negative: under the skin)."""
    faces: np.ndarray
    """(F, 3) int64 shell triangles (indices into the shell vertices), facing out."""
    rest: np.ndarray
    """(N, 3) shell vertices on the template (where the colour is looked up)."""

    def pose(self, *, vertices: np.ndarray, vertex_normals: np.ndarray) -> np.ndarray:
        """(N, 3) shell vertices on a head posed at (V, 3) `vertices` with (V, 3) unit
        `vertex_normals`."""
        base = np.einsum("nk,nkc->nc", self.weights, vertices[self.vertex_ids])
        normal = np.einsum("nk,nkc->nc", self.weights, vertex_normals[self.vertex_ids])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        return base + self.height[:, None] * normal


def _thickness(points: np.ndarray, style: HairStyle) -> np.ndarray:
    """(N,) full hair thickness at template points: 1.5 cm low on the sides, 3 cm on the
    crown and the back of the top, plus +-3 mm of lock relief."""
    y, z = points[:, 1], points[:, 2]
    base = 0.013 + 0.012 * _smoothstep(y, 0.03, 0.12) + 0.005 * _smoothstep(-z, 0.0, 0.08)
    return base + 0.003 * np.clip(style.locks_at(points), -2.0, 2.0)


def build_hair(*, model: FlameModel, style: HairStyle) -> Hair:
    """The shell over every head triangle reaching within 4 mm of the hairline or above it."""
    v = model.v_template
    above = style.above_hairline(v)
    faces = model.f[(above[model.f] > -0.004).any(axis=1)]
    vertex_ids, weights, sub_faces = subdivide(faces, SUBDIVISIONS)
    normals = np.asarray(trimesh.Trimesh(v, model.f, process=False).vertex_normals)
    base = np.einsum("nk,nkc->nc", weights, v[vertex_ids])
    rise = _smoothstep(style.above_hairline(base), 0.0, RAMP)
    height = rise * _thickness(base, style) - SINK
    hair = Hair(
        style=style,
        vertex_ids=vertex_ids,
        weights=weights,
        height=height,
        faces=sub_faces,
        rest=np.zeros((len(height), 3)),
    )
    return dataclasses.replace(hair, rest=hair.pose(vertices=v, vertex_normals=normals))


@functools.cache
def _lattice_triangles(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric integer weights (P, 3) of the points i + j + k = n of one triangle, and
    the (n^2, 3) sub-triangles over them, oriented like the triangle."""
    points = [(n - i - j, i, j) for i in range(n + 1) for j in range(n + 1 - i)]
    index = {p: k for k, p in enumerate(points)}
    tris = []
    for i in range(n):
        for j in range(n - i):
            a, b, c = (n - i - j, i, j), (n - i - j - 1, i + 1, j), (n - i - j - 1, i, j + 1)
            tris.append((index[a], index[b], index[c]))
            if i + j < n - 1:
                d = (n - i - j - 2, i + 1, j + 1)
                tris.append((index[b], index[d], index[c]))
    return np.array(points, dtype=np.int64), np.array(tris, dtype=np.int64)


def subdivide(faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each of (F, 3) triangles into n^2, sharing the points on shared edges: (N, 3) vertex
    ids and (N, 3) weights of the new points (blends of the old vertices) and (F n^2, 3) faces."""
    weights, tris = _lattice_triangles(n)
    ids = np.broadcast_to(faces[:, None, :], (len(faces), len(weights), 3))
    w = np.broadcast_to(weights[None], ids.shape)
    ids = np.where(w > 0, ids, -1)
    order = np.argsort(ids, axis=2, kind="stable")
    ids, w = np.take_along_axis(ids, order, 2), np.take_along_axis(w, order, 2)
    keys = np.concatenate([ids, w], axis=2).reshape(-1, 6)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(len(faces), len(weights))
    sub_faces = inverse[:, tris].reshape(-1, 3)
    return np.maximum(unique[:, :3], 0), unique[:, 3:] / n, sub_faces


def nearest_deformation(
    *, points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, deformation: np.ndarray
) -> np.ndarray:
    """(N, 3) deformation at the nearest point of the mesh (`vertices` (V, 3), `faces`) to each
    of (N, 3) `points`, interpolated from the per-vertex (V, 3) `deformation`. The nearest of
    the `CANDIDATES` triangles with the nearest centroids is taken."""
    triangles = vertices[faces]
    _, cand = cKDTree(triangles.mean(axis=1)).query(points, k=CANDIDATES)
    closest = trimesh.triangles.closest_point(
        triangles[cand].reshape(-1, 3, 3), np.repeat(points, CANDIDATES, axis=0)
    ).reshape(len(points), CANDIDATES, 3)
    best = np.linalg.norm(closest - points[:, None], axis=2).argmin(axis=1)
    rows = np.arange(len(points))
    triangle = cand[rows, best]
    bary = trimesh.triangles.points_to_barycentric(triangles[triangle], closest[rows, best])
    return np.einsum("nk,nkc->nc", bary, deformation[faces[triangle]])
