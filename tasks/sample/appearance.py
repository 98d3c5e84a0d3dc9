"""The sample head's albedo texture, baked into whatever UV layout the model has.

Each texel is traced back to its 3D point on the template (the UV mesh is rasterized by a
pinhole camera looking straight down at the z = 0 plane, an exact affine map). The front of
the face takes a real photo (`skimage.data.astronaut()`, public domain) warped onto the
template by a thin-plate spline through matching keypoints; the rest is skin of the photo's
cheek tone with 3D noise so that multi-view feature matching finds texture everywhere and no
UV seam shows, and above the hairline the hair's own colour (`tasks.sample.hair`), which its
shell of real geometry covers a few millimetres further up. Colours are linear RGB in [0, 1].
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import trimesh
from scipy import ndimage
from skimage import data, draw
from skimage.transform import ThinPlateSplineTransform

from flame_tracking.model import FlameModel
from flame_tracking.sample_model import template_keypoints
from tasks.formats.cameras import Camera
from tasks.formats.color import srgb_to_linear
from tasks.pictures.render import Scene, interpolate, rasterize
from tasks.sample.hair import HairStyle, hair_style

PHOTO_KEYPOINTS: dict[str, tuple[float, float]] = {
    "eye_left": (246.4, 103.8),
    "eye_right": (203.9, 101.5),
    "eye_left_inner": (236.4, 104.9),
    "eye_left_outer": (255.3, 103.8),
    "eye_right_inner": (213.6, 103.6),
    "eye_right_outer": (195.3, 100.6),
    "nose_tip": (223.5, 131.1),
    "mouth_left": (244.5, 140.6),
    "mouth_right": (202.3, 139.2),
    "mouth_center": (223.1, 146.2),
    "chin": (221.4, 177.4),
    "forehead": (226.0, 72.2),
}
"""Pixel (x, y) of the template keypoints in `skimage.data.astronaut()`, measured with the
Face Landmarker (eye = mean of the eye contour, eye corners 362 / 263 / 133 / 33, nose tip 1,
mouth corners 291 / 61, mouth centre = mean of 13 and 14, chin 152, forehead 10). The
subject's left (+x) is the image's right. The tests measure them again."""

PHOTO_FACE_OVAL: tuple[tuple[float, float], ...] = (
    *((226.0, 72.2), (238.8, 73.1), (249.5, 75.0), (258.9, 78.6), (264.7, 83.7)),
    *((268.0, 90.2), (269.7, 97.1), (270.2, 105.9), (269.8, 114.4), (269.0, 123.5)),
    *((267.7, 133.3), (265.0, 143.9), (260.9, 152.7), (256.1, 159.4), (249.7, 165.5)),
    *((244.1, 170.1), (238.0, 174.1), (230.7, 176.9), (221.4, 177.4), (212.2, 175.9)),
    *((205.3, 172.3), (199.7, 167.7), (194.6, 162.7), (189.1, 156.1), (185.3, 149.0)),
    *((182.6, 139.8), (181.3, 128.8), (180.9, 118.9), (180.9, 109.9), (180.9, 101.3)),
    *((181.9, 92.5), (183.9, 85.6), (187.6, 79.6), (193.6, 75.1), (203.0, 72.6)),
    (213.5, 71.8),
)
"""MediaPipe's face-oval landmarks (10, 338, ..., 109) in the photo, pixel (x, y)."""

PHOTO_CHEEKS = ((204.0, 124.0), (245.0, 125.0))
"""Photo pixels (x, y) on both cheeks whose median colour sets the synthetic skin tone."""
_UV_RELIEF = 1e-4


@dataclasses.dataclass(frozen=True, kw_only=True)
class TexelGeometry:
    """What each texel of a (S, S) texture shows on the template."""

    position: np.ndarray
    """(S, S, 3) template point (metres, FLAME axes); uncovered texels copy the nearest one."""
    normal: np.ndarray
    """(S, S, 3) unit template normal, filled like `position`."""


def uv_camera(size: int) -> Camera:
    """A camera that sees the UV square [0, 1]^2 on the z = 0 plane as a (size, size) image
    with column = u * (size - 1) and row = (1 - v) * (size - 1), like `sample_texture`."""
    K = np.array([[size - 1.0, 0, (size - 1) / 2], [0, size - 1.0, (size - 1) / 2], [0, 0, 1]])
    world_2_cam = np.array([[1.0, 0, 0, -0.5], [0, -1, 0, 0.5], [0, 0, -1, 1], [0, 0, 0, 1]])
    return Camera(serial="uv", K=K, world_2_cam=world_2_cam, width=size, height=size)


def texel_geometry(*, model: FlameModel, size: int) -> TexelGeometry:
    """Trace every texel to the template through the model's UV layout (`vt`, `ft`)."""
    if model.vt is None or model.ft is None:
        raise ValueError(f"model {model.source!r} has no UV layout (vt/ft)")
    # Where charts overlap (eyeballs behind the lids), the texel shows the front-most point:
    # a relief of 1e-4 x template z moves texels by well under 0.01 texel.
    relief = _UV_RELIEF * model.v_template[model.f][..., 2:]
    corners = np.concatenate([model.vt[model.ft], relief], axis=2).reshape(-1, 3)
    faces = np.arange(len(corners)).reshape(-1, 3)
    fragments = rasterize(scene=Scene(vertices=corners, faces=faces), camera=uv_camera(size))
    fragments = dataclasses.replace(fragments, faces=model.f)
    mesh = trimesh.Trimesh(vertices=model.v_template, faces=model.f, process=False)
    position = interpolate(fragments=fragments, attribute=model.v_template[model.f])
    normal = interpolate(fragments=fragments, attribute=mesh.vertex_normals[model.f])
    nearest = ndimage.distance_transform_edt(
        ~fragments.mask, return_distances=False, return_indices=True
    )
    position, normal = position[nearest[0], nearest[1]], normal[nearest[0], nearest[1]]
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return TexelGeometry(position=position, normal=normal)


@functools.cache
def _photo_linear() -> np.ndarray:
    """The photo in linear RGB, (512, 512, 3), read-only (it is shared)."""
    photo = srgb_to_linear(data.astronaut() / 255.0)
    photo.flags.writeable = False
    return photo


def _sample_photo(photo: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear (N, C) samples of (H, W, C) `photo` at pixel (x, y) (N, 2), edge-clamped."""
    coords = [xy[:, 1], xy[:, 0]]
    return np.stack(
        [ndimage.map_coordinates(photo[..., c], coords, order=1, mode="nearest") for c in range(3)],
        axis=1,
    )


def _skin_tone(photo: np.ndarray) -> np.ndarray:
    """(3,) median linear skin colour of the photo's cheeks."""
    cheeks = np.concatenate(
        [
            photo[int(y) - 5 : int(y) + 6, int(x) - 5 : int(x) + 6].reshape(-1, 3)
            for x, y in PHOTO_CHEEKS
        ]
    )
    return np.median(cheeks, axis=0)


def _oval_depth(shape: tuple[int, int]) -> np.ndarray:
    """(H, W) distance in photo pixels from each pixel to the face oval, 0 outside it."""
    oval = np.asarray(PHOTO_FACE_OVAL)
    inside = np.zeros(shape, dtype=bool)
    rows, cols = draw.polygon(oval[:, 1], oval[:, 0], shape=shape)
    inside[rows, cols] = True
    return ndimage.distance_transform_edt(inside)


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _value_noise(points: np.ndarray, *, cell: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) smooth random field of unit standard deviation at (N, D) `points`: a random
    lattice of spacing `cell` interpolated with cubic splines (position based, so seamless)."""
    lo = points.min(axis=0) - 2 * cell
    shape = tuple(np.ceil(np.ptp(points, axis=0) / cell).astype(int) + 5)
    lattice = rng.standard_normal(shape)
    values = ndimage.map_coordinates(lattice, ((points - lo) / cell).T, order=3, mode="nearest")
    return values / max(values.std(), 1e-12)


def _photo_weight(
    texels: TexelGeometry, photo_xy: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """(N,) how much of the photo each texel shows: inside the face oval (feathered over
    8 photo pixels, about 1 cm on the face), facing the front, and below the photo's own
    fringe (faded out from 1 to 2 cm above the brows: the sample's hairline is higher)."""
    depth = ndimage.map_coordinates(_oval_depth(shape), photo_xy[:, ::-1].T, order=1, cval=0.0)
    facing = _smoothstep(texels.normal.reshape(-1, 3)[:, 2], 0.15, 0.45)
    below_fringe = 1.0 - _smoothstep(texels.position.reshape(-1, 3)[:, 1], 0.054, 0.064)
    return _smoothstep(depth, 1.0, 9.0) * facing * below_fringe


def _skin(position: np.ndarray, tone: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3) skin: the tone with multi-scale brightness noise, a slow redness variation and
    sparse darker freckles (blobs that feature detectors find)."""
    brightness = sum(
        amplitude * _value_noise(position, cell=cell, rng=rng)
        for cell, amplitude in ((0.0015, 0.06), (0.004, 0.05), (0.012, 0.03))
    )
    freckles = np.clip(_value_noise(position, cell=0.002, rng=rng) - 2.0, 0.0, None)
    redness = 0.03 * _value_noise(position, cell=0.025, rng=rng)
    tint = np.array([1.0, -0.3, -0.3])
    return (
        tone * (1 + brightness[:, None] + redness[:, None] * tint) * (1 - 0.3 * freckles)[:, None]
    )


def bake_texture(
    *, model: FlameModel, size: int = 1024, seed: int, style: HairStyle | None = None
) -> np.ndarray:
    """(size, size, 3) linear RGB albedo in [0, 1] for `model`'s UV layout, deterministic in
    `seed` (the photo part is the same for every seed, the noise differs); above the hairline
    of `style` (default `hair_style(model, seed)`) the scalp is painted with its hair."""
    texels = texel_geometry(model=model, size=size)
    position = texels.position.reshape(-1, 3)
    keypoints = {k: np.asarray(v, dtype=np.float64) for k, v in template_keypoints(model).items()}
    names = sorted(PHOTO_KEYPOINTS.keys() & keypoints.keys())
    tps = ThinPlateSplineTransform.from_estimate(
        np.array([keypoints[n][:2] for n in names]), np.array([PHOTO_KEYPOINTS[n] for n in names])
    )
    if not tps:
        raise RuntimeError(f"thin-plate spline fit failed: {tps}")
    photo = _photo_linear()
    photo_xy = tps(position[:, :2])
    rng = np.random.default_rng(seed)
    style = style if style is not None else hair_style(model=model, seed=seed)
    skin = _skin(position, _skin_tone(photo), rng)
    painted = _smoothstep(style.above_hairline(position), -0.002, 0.002)[:, None]
    base = skin + painted * (style.albedo(position) - skin)
    face = (
        _sample_photo(photo, photo_xy)
        * (1 + 0.03 * _value_noise(position, cell=0.0015, rng=rng))[:, None]
    )
    weight = _photo_weight(texels, photo_xy, photo.shape[:2])[:, None]
    albedo = base + weight * (face - base)
    return np.clip(albedo, 0.0, 1.0).reshape(size, size, 3)
