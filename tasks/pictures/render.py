"""Mesh rendering by ray casting: one ray per pixel centre, embree for the hit triangle.

Embree (through embreex, in float32) only picks the first triangle each ray hits; depth and
barycentric coordinates are then recomputed in float64 on that triangle (Moller-Trumbore),
so depth is exact up to float64 rounding, not float32. Pixel rays come from
`tasks.formats.cameras.pixel_rays` (OpenCV axes, pixel centres at integer coordinates, metres).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import trimesh
from embreex import rtcore_scene
from embreex.mesh_construction import TriangleMesh

from tasks.formats.cameras import Camera, pixel_rays


class Scene:
    """A triangle mesh with its embree scene, built once and rendered from many cameras."""

    def __init__(self, *, vertices: np.ndarray, faces: np.ndarray) -> None:
        """Build the scene from (V, 3) world vertices (metres) and (F, 3) vertex indices.

        Vertices are centred and scaled to about unit size before the float32 conversion so
        that embree's triangle choice stays precise far from the world origin.
        """
        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.faces = np.asarray(faces, dtype=np.int64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must be (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"faces must be (F, 3), got {self.faces.shape}")
        self._offset = self.vertices.mean(axis=0)
        extent = np.ptp(self.vertices, axis=0).max()
        self._scale = 1.0 / extent if extent > 0 else 1.0
        self._embree = rtcore_scene.EmbreeScene()
        TriangleMesh(
            scene=self._embree,
            vertices=((self.vertices - self._offset) * self._scale).astype(np.float32),
            indices=self.faces.astype(np.int32),
        )

    def first_hits(self, *, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """(N,) index of the first triangle hit by each ray from `origin` (3,), -1 for none."""
        origins = np.broadcast_to(
            ((origin - self._offset) * self._scale).astype(np.float32), directions.shape
        )
        return self._embree.run(np.ascontiguousarray(origins), directions.astype(np.float32))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fragments:
    """What each pixel of one camera sees of one mesh."""

    triangle: np.ndarray
    """(H, W) int64 index of the visible triangle, -1 for background."""
    barycentric: np.ndarray
    """(H, W, 3) float64 barycentric coordinates of the hit point, NaN for background."""
    depth: np.ndarray
    """(H, W) float64 z-depth in the camera (metres), NaN for background."""
    faces: np.ndarray
    """(F, 3) the mesh's faces that `triangle` indexes, for vertex-attribute interpolation."""

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, True where the mesh is visible."""
        return self.triangle >= 0


DEFAULT_LIGHTS: tuple[tuple[tuple[float, float, float], float], ...] = (
    ((0.0, 0.3, 1.0), 0.65),
    ((-0.8, 0.5, 0.4), 0.25),
    ((0.8, 0.2, 0.4), 0.2),
)
"""(direction towards the light in world coordinates, intensity) pairs: a key light from the
front (+z, FLAME's face direction, y up) and two side fills."""


def rasterize(*, scene: Scene, camera: Camera) -> Fragments:
    """Visible triangle, barycentrics and z-depth for every pixel centre of `camera`."""
    origin, dirs = pixel_rays(camera)
    tri = scene.first_hits(origin=origin, directions=dirs).astype(np.int64)
    hit = np.flatnonzero(tri >= 0)
    corners = scene.vertices[scene.faces[tri[hit]]]
    depth, bary = _intersect(origin, dirs[hit], corners)
    n = camera.width * camera.height
    depth_full = np.full(n, np.nan)
    depth_full[hit] = depth
    bary_full = np.full((n, 3), np.nan)
    bary_full[hit] = bary
    shape = (camera.height, camera.width)
    return Fragments(
        triangle=tri.reshape(shape),
        barycentric=bary_full.reshape(*shape, 3),
        depth=depth_full.reshape(shape),
        faces=scene.faces,
    )


def _intersect(
    origin: np.ndarray, dirs: np.ndarray, corners: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Moller-Trumbore in float64: ray parameter (= z-depth for unit-z directions) and
    barycentrics (N, 3) of rays `origin + t * dirs` (N, 3) on triangles `corners` (N, 3, 3)."""
    e1 = corners[:, 1] - corners[:, 0]
    e2 = corners[:, 2] - corners[:, 0]
    s = origin - corners[:, 0]
    p = np.cross(dirs, e2)
    q = np.cross(s, e1)
    inv_det = 1.0 / np.einsum("ij,ij->i", e1, p)
    u = np.einsum("ij,ij->i", s, p) * inv_det
    v = np.einsum("ij,ij->i", dirs, q) * inv_det
    t = np.einsum("ij,ij->i", e2, q) * inv_det
    return t, np.stack([1.0 - u - v, u, v], axis=1)


def interpolate(*, fragments: Fragments, attribute: np.ndarray) -> np.ndarray:
    """(H, W, C) barycentric interpolation of a (V, C) vertex or (F, 3, C) face-corner
    attribute (e.g. canonical positions, UVs from vt[ft], normals); NaN for background."""
    attribute = np.asarray(attribute, dtype=np.float64)
    if attribute.ndim == 2:
        corner = attribute[fragments.faces]
    elif attribute.ndim == 3 and attribute.shape[:2] == (len(fragments.faces), 3):
        corner = attribute
    else:
        raise ValueError(f"attribute must be (V, C) or (F, 3, C), got {attribute.shape}")
    mask = fragments.mask
    out = np.full((*mask.shape, corner.shape[2]), np.nan)
    out[mask] = np.einsum(
        "nk,nkc->nc", fragments.barycentric[mask], corner[fragments.triangle[mask]]
    )
    return out


def smooth_normals(*, fragments: Fragments, vertices: np.ndarray) -> np.ndarray:
    """(H, W, 3) unit world normals interpolated from area-weighted vertex normals."""
    mesh = trimesh.Trimesh(vertices=vertices, faces=fragments.faces, process=False)
    normals = interpolate(fragments=fragments, attribute=mesh.vertex_normals)
    return normals / np.linalg.norm(normals, axis=-1, keepdims=True)


def sample_texture(*, texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of (Ht, Wt, C) `texture` at (..., 2) `uv` (OBJ convention, v up:
    column = u * (Wt - 1), row = (1 - v) * (Ht - 1), clamped at the border); NaN uv gives NaN."""
    ht, wt = texture.shape[:2]
    valid = np.all(np.isfinite(uv), axis=-1)
    col = np.clip(uv[valid][:, 0] * (wt - 1), 0, wt - 1)
    row = np.clip((1.0 - uv[valid][:, 1]) * (ht - 1), 0, ht - 1)
    c0 = np.minimum(col.astype(np.int64), max(wt - 2, 0))
    r0 = np.minimum(row.astype(np.int64), max(ht - 2, 0))
    c1, r1 = np.minimum(c0 + 1, wt - 1), np.minimum(r0 + 1, ht - 1)
    fc, fr = (col - c0)[:, None], (row - r0)[:, None]
    top = texture[r0, c0] * (1 - fc) + texture[r0, c1] * fc
    bottom = texture[r1, c0] * (1 - fc) + texture[r1, c1] * fc
    out = np.full((*uv.shape[:-1], texture.shape[2]), np.nan)
    out[valid] = top * (1 - fr) + bottom * fr
    return out


def shade(
    *,
    fragments: Fragments,
    texture: np.ndarray,
    uv: np.ndarray,
    normals: np.ndarray,
    camera: Camera,
    lights: tuple[tuple[tuple[float, float, float], float], ...] = DEFAULT_LIGHTS,
    ambient: float = 0.3,
    specular: float = 0.0,
    shininess: float = 32.0,
) -> np.ndarray:
    """(H, W, 3) linear RGB, NaN for background: `light` with the albedo of `texture` (Ht, Wt,
    3, linear RGB; a constant colour is a 1x1 texture) at `uv` (H, W, 2)."""
    mask = fragments.mask
    albedo = np.full((*mask.shape, 3), np.nan)
    albedo[mask] = sample_texture(texture=texture, uv=uv[mask])
    return light(
        mask=mask,
        albedo=albedo,
        normals=normals,
        camera=camera,
        lights=lights,
        ambient=ambient,
        specular=specular,
        shininess=shininess,
    )


def light(
    *,
    mask: np.ndarray,
    albedo: np.ndarray,
    normals: np.ndarray,
    camera: Camera,
    lights: tuple[tuple[tuple[float, float, float], float], ...] = DEFAULT_LIGHTS,
    ambient: float = 0.3,
    specular: float | np.ndarray = 0.0,
    shininess: float = 32.0,
) -> np.ndarray:
    """(H, W, 3) linear RGB, NaN off the (H, W) `mask`: Lambertian `albedo` (H, W, 3, linear
    RGB) lit by directional world `lights` and `ambient`, plus a white Blinn-Phong term of
    strength `specular` (a number, or (H, W) per pixel).

    Lights are fixed in the world so that a view sees the same diffuse colour as any other
    (what multi-view stereo assumes); `specular` > 0 breaks that on purpose. Normals (H, W, 3,
    world) facing away from the camera are flipped, so back faces shade like front faces.
    """
    to_cam = -pixel_rays(camera)[1][mask.ravel()]
    to_cam /= np.linalg.norm(to_cam, axis=-1, keepdims=True)
    n = normals[mask]
    n = np.where(np.sum(n * to_cam, axis=-1, keepdims=True) < 0, -n, n)
    strength = np.broadcast_to(np.asarray(specular, dtype=np.float64), mask.shape)[mask]
    diffuse = np.full(len(n), ambient)
    highlight = np.zeros(len(n))
    for direction, intensity in lights:
        towards = np.asarray(direction, dtype=np.float64)
        towards /= np.linalg.norm(towards)
        lambert = np.clip(n @ towards, 0.0, None)
        diffuse += intensity * lambert
        if strength.any():
            half = towards + to_cam
            half /= np.linalg.norm(half, axis=-1, keepdims=True)
            cos_h = np.clip(np.sum(n * half, axis=-1), 0.0, None)
            highlight += intensity * np.where(lambert > 0, cos_h**shininess, 0.0)
    out = np.full((*mask.shape, 3), np.nan)
    out[mask] = albedo[mask] * diffuse[:, None] + (strength * highlight)[:, None]
    return out


def overlay_mesh(
    *,
    image: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    camera: Camera,
    color: tuple[float, float, float] = (0.45, 0.75, 1.0),
    alpha: float = 0.6,
    style: Literal["shaded", "wireframe"] = "shaded",
) -> np.ndarray:
    """`image` (H, W, 3; uint8 or float in [0, 1]) with the mesh drawn over it, same dtype.

    "shaded" blends the mesh lit by a headlight; "wireframe" draws the visible triangle edges
    and silhouette (pixels whose triangle differs from a neighbour's), for checking a fit.
    """
    if image.shape[:2] != (camera.height, camera.width):
        raise ValueError(
            f"image {image.shape[1]}x{image.shape[0]} does not match camera {camera.serial} "
            f"({camera.width}x{camera.height})"
        )
    is_uint8 = image.dtype == np.uint8
    base = image.astype(np.float64) / 255.0 if is_uint8 else image.astype(np.float64)
    fragments = rasterize(scene=Scene(vertices=vertices, faces=faces), camera=camera)
    if style == "shaded":
        headlight = (tuple(-camera.world_2_cam[2, :3]), 0.8)
        layer = shade(
            fragments=fragments,
            texture=np.asarray(color, dtype=np.float64).reshape(1, 1, 3),
            uv=np.zeros((camera.height, camera.width, 2)),
            normals=smooth_normals(fragments=fragments, vertices=vertices),
            camera=camera,
            lights=(headlight,),
            ambient=0.2,
        )
        where = fragments.mask
    else:
        tri = fragments.triangle
        where = np.zeros(tri.shape, dtype=bool)
        where[:, :-1] |= tri[:, :-1] != tri[:, 1:]
        where[:-1, :] |= tri[:-1, :] != tri[1:, :]
        layer = np.broadcast_to(np.asarray(color, dtype=np.float64), base.shape)
    blended = np.where(where[..., None], (1 - alpha) * base + alpha * np.nan_to_num(layer), base)
    blended = np.clip(blended, 0.0, 1.0)
    return np.round(blended * 255).astype(np.uint8) if is_uint8 else blended.astype(image.dtype)
