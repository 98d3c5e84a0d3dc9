"""The embedded sample head model: a procedural head with FLAME's structure, built in code.

FLAME is licensed, so without a user's file the project runs on this head: same fields,
joints and LBS, FLAME's axes and scale (metres, y up, z out of the face, x to the subject's
left, origin near the head's centre). It is deterministic (no randomness, no downloads).

Geometry: the head is the zero set of a smooth implicit solid (skull, jaw, neck, ears and a
face height field with nose, brows, lids, lips and a mouth groove), sampled along one ray per
vertex of a (rows x columns) grid: horizontal rays from the vertical axis x = 0, z = RAY_Z in
the face band BAND (rows at constant y, dense at the eyes and the mouth line), ray fans from
the band's ends above (crown) and below (chin, neck and the flat neck cut), one pole vertex at
each end, so the head is a closed sphere. Two closed eyeball spheres (FLAME keeps its
eyeballs as separate parts too) sit behind the lids and show through the eye openings.

Texture layout (vt in [0, 1]^2, v up): the face chart is an orthographic frontal projection,
u = 0.3 + FACE_UV_SCALE * x, v = 0.5 + FACE_UV_SCALE * y (`face_uv`), so it lives in
u in [0, 0.6], v in [0, 1]: the subject's left eye (+x) has the larger u, the forehead the
larger v, and a frontal photo maps onto it by a 2D warp. It covers the forward-facing band
(forehead to chin, cheek to cheek) and both eyeballs. The rest of the head is a cylindrical
chart, u = 0.62 + 0.36 * (azimuth + pi) / (2 pi) (seam at the back of the head), v in
[0, 1] from the neck cut's centre to the crown, one row of texture coordinates per row.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.interpolate import PchipInterpolator

from flame_tracking.model import NUM_JOINTS, NUM_POSE_FEATURES, FlameModel, save_npz

EYE = np.array([0.031, 0.028, 0.069])
"""Centre of the subject's left eyeball (the right one mirrors x), metres."""
EYE_RADIUS = 0.0125
EYE_HALF_WIDTH = 0.012
"""Half the width of the eye opening (canthus to canthus) in x."""
MOUTH_Y = -0.040
"""Height of the mouth line (a row of the grid, the bottom of the mouth groove)."""
MOUTH_HALF_WIDTH = 0.025
BAND = (-0.062, 0.100)
"""Heights of the face band sampled by horizontal rays."""
RAY_Z = -0.01
NECK_CUT_Y = -0.17
FACE_UV_SCALE = 3.5
EYE_GRID = (10, 18)
"""Face chart texture units per metre (see the module docstring)."""

_PROFILE = PchipInterpolator(
    [-0.11, -0.095, -0.088, -0.078, -0.068, -0.058, -0.048, -0.040, -0.030, -0.018, 0.0]
    + [0.026, 0.042, 0.07, 0.09, 0.105, 0.12, 0.135],
    [0.03, 0.06, 0.072, 0.086, 0.089, 0.083, 0.088, 0.089, 0.091, 0.089, 0.087]
    + [0.085, 0.093, 0.093, 0.088, 0.078, 0.060, 0.035],
)
"""Midline depth z of the face without nose and lips, by height y."""
_WIDTH = PchipInterpolator(
    [-0.11, -0.095, -0.08, -0.06, -0.04, -0.02, 0.0, 0.02, 0.05, 0.08, 0.11, 0.14],
    [0.03, 0.034, 0.038, 0.047, 0.054, 0.061, 0.067, 0.069, 0.067, 0.064, 0.06, 0.052],
)
"""Half-width of the face's frontal arc by height y."""
_NOSE = PchipInterpolator(
    [-0.021, -0.016, -0.011, -0.006, -0.002, 0.01, 0.026, 0.036],
    [0.0, 0.01, 0.02, 0.023, 0.021, 0.013, 0.005, 0.0],
)
"""Nose height above the face along the midline, by y."""
_NOSE_WIDTH = PchipInterpolator([-0.021, -0.006, 0.01, 0.036], [0.011, 0.0095, 0.0075, 0.007])
_BUMPS = (
    (0.0145, -0.012, 0.0055, 0.0055, 0.010),  # nose alae
    (0.0, -0.005, 0.0075, 0.006, 0.003),  # nose tip lobe
    (0.026, 0.044, 0.018, 0.006, 0.003),  # brow ridges
    (0.0, 0.041, 0.009, 0.008, 0.0015),  # glabella
    (0.043, -0.006, 0.017, 0.018, 0.005),  # cheeks
    (0.055, 0.012, 0.013, 0.011, 0.004),  # cheekbones
    (0.060, 0.052, 0.012, 0.02, -0.003),  # temples
    (0.0, -0.073, 0.013, 0.011, 0.003),  # chin
    (0.0045, -0.027, 0.0018, 0.006, 0.0008),  # philtrum columns
    (MOUTH_HALF_WIDTH, MOUTH_Y, 0.003, 0.003, -0.002),  # mouth corners
)
"""(x, y, rx, ry, height) Gaussian bumps on the face height field; x > 0 ones are mirrored."""


def _density_points(n: int, lo: float, hi: float, density: Callable) -> np.ndarray:
    """n points from lo to hi (both included), spaced inversely to `density`."""
    xs = np.linspace(lo, hi, 4001)
    rho = density(xs)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (rho[1:] + rho[:-1]) * np.diff(xs))])
    return np.interp(np.linspace(0.0, cdf[-1], n), cdf, xs)


def _row_heights() -> np.ndarray:
    """Band rows (metres, increasing), dense at the eyes and the mouth; MOUTH_Y is a row."""

    def rho(y: np.ndarray) -> np.ndarray:
        eyes = 2.2 * np.exp(-(((y - EYE[1]) / 0.011) ** 2))
        mouth = 3.0 * np.exp(-(((y - MOUTH_Y) / 0.004) ** 2))
        return 1.0 + eyes + mouth + 0.8 * np.exp(-(((y + 0.01) / 0.012) ** 2))

    low = _density_points(12, BAND[0], MOUTH_Y, rho)
    return np.concatenate([low, _density_points(47, MOUTH_Y, BAND[1], rho)[1:]])


def _azimuths(n_half: int) -> np.ndarray:
    """(2 n_half,) column azimuths in [-pi, pi), mirror symmetric, dense at the front."""

    def rho(a: np.ndarray) -> np.ndarray:
        return 0.3 + np.exp(-((a / 0.9) ** 4)) + 0.8 * np.exp(-((a / 0.3) ** 2))

    half = _density_points(n_half + 1, 0.0, np.pi, rho)
    return np.concatenate([-half[::-1][:-1], half[:-1]])


def _directions(el: np.ndarray, az: np.ndarray) -> np.ndarray:
    """(R, C, 3) unit vectors at elevations (R,) and azimuths (C,) (azimuth 0 is +z, the face)."""
    el, az = np.meshgrid(el, az, indexing="ij")
    return np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], -1)


def _with_poles(grid: np.ndarray, bottom: np.ndarray, top: np.ndarray) -> np.ndarray:
    """(R * C + 2, 3) rows of a (R, C, 3) grid between a bottom and a top pole."""
    return np.concatenate([bottom[None], grid.reshape(-1, 3), top[None]])


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of two fields, blending within k (a fillet instead of a crease)."""
    h = np.clip(k - np.abs(a - b), 0, None) / k
    return np.minimum(a, b) - h * h * k / 4


def _ellipsoid(p: np.ndarray, c: tuple, r: tuple, power: float = 2.0) -> np.ndarray:
    """Approximate signed distance to a (super-)ellipsoid."""
    q = np.abs((p - np.asarray(c)) / np.asarray(r))
    return ((q**power).sum(-1) ** (1 / power) - 1) * min(r)


def _ramp(t: np.ndarray) -> np.ndarray:
    """Smooth step from 0 (t <= -1) to 1 (t >= 1): exact zeros keep deformations local."""
    t = np.clip(0.5 * (t + 1), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _eye_margins(dx: np.ndarray, *, sign: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid margin heights at dx from the eye centre (outer corner higher)."""
    s2 = np.clip(dx / EYE_HALF_WIDTH, -1, 1) ** 2
    tilt = EYE[1] + 0.08 * dx * sign
    return tilt + 0.005 * (1 - s2), tilt - 0.004 * (1 - s2)


def _eyeball_front(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """z of the eyeball's front surface at (dx, dy) from its centre (its centre z outside)."""
    return EYE[2] + np.sqrt(np.clip(EYE_RADIUS**2 - dx**2 - dy**2, 0, None))


def _with_eye(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, sign: float) -> np.ndarray:
    """Blend the face height into lids over the eyeball, with a deep pocket in the opening
    so that the eyeball (a separate mesh) shows through it."""
    dx, dy = x - sign * EYE[0], y - EYE[1]
    zs = _eyeball_front(dx, dy)
    upper, lower = _eye_margins(dx, sign=sign)
    opening = _ramp((upper - y) / 0.0008) * _ramp((y - lower) / 0.0008)
    opening = opening * (np.abs(dx) < EYE_HALF_WIDTH)
    lids = zs + 0.0016 - 0.0056 * opening
    m = np.exp(-((dx / 0.0145) ** 4 + (dy / 0.011) ** 4))
    return z * (1 - m) + lids * m


def _face_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """z of the face surface at frontal position (x, y): a frontal arc plus features."""
    ax, y = np.abs(x), np.clip(y, -0.11, 0.14)
    w = _WIDTH(y)
    arc = np.sqrt(np.clip(1 - (ax / w) ** 2.5, 0, None))
    z = _PROFILE(y) - 0.085 * (1 - arc) - 3 * np.clip(ax - w, 0, None)
    yn = np.clip(y, -0.021, 0.036)
    z = z + _NOSE(yn) * np.exp(-((x / _NOSE_WIDTH(yn)) ** 2))
    for bx, by, rx, ry, h in _BUMPS:
        for sx in (1, -1) if bx > 0 else (1,):
            z = z + h * np.exp(-(((x - sx * bx) / rx) ** 2) - ((y - by) / ry) ** 2)
    bow = 0.0012 * np.exp(-((x / 0.006) ** 2))
    upper = 0.0075 * np.exp(-(((y + 0.0335 + bow) / 0.0045) ** 2))
    lower = 0.0085 * np.exp(-(((y + 0.048) / 0.0055) ** 2))
    lips = (upper + lower) * np.clip(1 - (x / 0.028) ** 2, 0, None) ** 1.2
    groove = 0.008 * np.exp(-(((y - MOUTH_Y) / 0.0006) ** 2))
    z = z + lips - groove * _ramp((MOUTH_HALF_WIDTH - 0.001 - ax) / 0.002)
    return _with_eye(x, y, _with_eye(x, y, z, sign=1.0), sign=-1.0)


def _solid(p: np.ndarray) -> np.ndarray:
    """(...,) signed field of the head, negative inside, for points p (..., 3)."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    skull = _ellipsoid(p, (0, 0.025, -0.015), (0.075, 0.112, 0.092), 2.4)
    jaw = _ellipsoid(p, (0, -0.035, 0.0), (0.056, 0.05, 0.07))
    face = np.maximum(np.maximum(z - _face_height(x, y), -z), y - 0.14)
    face = np.maximum(face, -0.089 + 7 * x**2 - y)
    neck = np.maximum(np.hypot(x, z + 0.022) - 0.05, y)
    ear = (0.011, 0.028, 0.016)
    ears = np.minimum(
        _ellipsoid(p, (0.074, 0.005, -0.018), ear), _ellipsoid(p, (-0.074, 0.005, -0.018), ear)
    )
    f = _smin(_smin(skull, jaw, 0.02), face, 0.012)
    f = _smin(_smin(f, neck, 0.025), ears, 0.006)
    return np.maximum(f, NECK_CUT_Y - y)


def _cast(o: np.ndarray, d: np.ndarray, *, t_max: float = 0.25, step: float = 0.003) -> np.ndarray:
    """(N,) distance along each ray (N, 3) to the outermost surface crossing: march in from
    t_max until inside, then bisect."""
    ts = np.arange(t_max, 0, -step)
    first = np.argmax(_solid(o[:, None] + ts[None, :, None] * d[:, None]) < 0, axis=1)
    hi, lo = ts[first - 1], ts[first]
    for _ in range(32):
        mid = 0.5 * (hi + lo)
        inside = _solid(o + mid[:, None] * d) < 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return 0.5 * (hi + lo)


def _grid_faces(idx: np.ndarray, bottom: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Outward triangles of an index grid (R, M), rows bottom to top, columns by increasing
    azimuth, closed by a fan to `bottom` / `top` (M - 1,) pole indices per column gap."""
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    quads = np.stack([np.stack([a, b, c], -1), np.stack([a, c, d], -1)], 2).reshape(-1, 3)
    low = np.stack([bottom, idx[0, 1:], idx[0, :-1]], -1)
    high = np.stack([idx[-1, :-1], idx[-1, 1:], top], -1)
    return np.concatenate([low, quads, high]).astype(np.int64)


def _latlong_faces(n_rows: int, n_cols: int, offset: int = 0) -> np.ndarray:
    """Faces of a closed lat-long grid stored as [bottom pole, rows x columns, top pole]."""
    idx = 1 + np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    idx = np.concatenate([idx, idx[:, :1]], axis=1)
    poles = np.full(n_cols, 0), np.full(n_cols, n_rows * n_cols + 1)
    return _grid_faces(idx, *poles) + offset


def _head() -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
    """Head vertices [bottom pole, grid rows x columns, top pole] (V, 3), the grid's shape and
    its (C,) azimuths: horizontal rays from the axis in the face band, fans from its ends."""
    az, ys = _azimuths(42), _row_heights()
    below = -np.pi / 2 * np.linspace(1, 0, 18)[1:-1] ** 1.3
    above = np.pi / 2 * np.linspace(0, 1, 15)[1:-1] ** 1.3
    d = _directions(np.concatenate([below, np.zeros(len(ys)), above]), az)
    oy = np.concatenate([np.full(len(below), BAND[0]), ys, np.full(len(above), BAND[1])])
    o = np.zeros_like(d)
    o[..., 1], o[..., 2] = oy[:, None], RAY_Z
    ends = np.array([[0, BAND[0], RAY_Z], [0, BAND[1], RAY_Z]])
    o_all = _with_poles(o, *ends)
    d_all = _with_poles(d, np.array([0, -1.0, 0]), np.array([0, 1.0, 0]))
    return o_all + _cast(o_all, d_all)[:, None] * d_all, d.shape[:2], az


def _eyeball(sign: float) -> np.ndarray:
    """Eyeball vertices [bottom pole, 10 x 18 grid, top pole] around the eye centre."""
    el = np.linspace(-np.pi / 2, np.pi / 2, EYE_GRID[0] + 2)[1:-1]
    d = _directions(el, np.linspace(-np.pi, np.pi, EYE_GRID[1], endpoint=False))
    centre = EYE * np.array([sign, 1, 1])
    return centre + EYE_RADIUS * _with_poles(d, np.array([0, -1.0, 0]), np.array([0, 1.0, 0]))


def face_uv(points: np.ndarray) -> np.ndarray:
    """(N, 2) face-chart texture coordinates of (N, 3) points: frontal orthographic."""
    points = np.asarray(points, dtype=np.float64)
    return np.stack([0.3 + FACE_UV_SCALE * points[:, 0], 0.5 + FACE_UV_SCALE * points[:, 1]], 1)


def _face_chart(grid: np.ndarray) -> np.ndarray:
    """(R, C) mask of the grid vertices in the face chart: forward-facing vertices between
    the chin and the forehead, holes (lid pockets, the nose's underside) filled, the largest
    connected piece (the under-chin, facing down, cuts the neck off)."""
    n = np.cross(np.roll(grid, -1, 1) - np.roll(grid, 1, 1), np.gradient(grid, axis=0))
    facing = n[..., 2] / np.linalg.norm(n, axis=-1) > 0.15
    y = grid[..., 1]
    labels, _ = ndimage.label(ndimage.binary_fill_holes(facing & (y > -0.11) & (y < 0.125)))
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1


def _texture(
    head: np.ndarray, *, shape: tuple[int, int], az: np.ndarray, eyes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2) vt and (F, 3) ft for the head's faces followed by the eyeballs' faces."""
    n_r, n_c = shape
    u = 0.62 + 0.36 * (np.append(az, np.pi) + np.pi) / (2 * np.pi)
    grid_vt = np.stack(np.meshgrid(u, np.arange(1, n_r + 1) / (n_r + 1)), -1).reshape(-1, 2)
    mid = 0.5 * (u[:-1] + u[1:])
    pole_vt = np.concatenate([np.stack([mid, np.full(n_c, v)], -1) for v in (0.0, 1.0)])
    n_g = len(grid_vt)
    idx = np.arange(n_g).reshape(n_r, n_c + 1)
    ft = _grid_faces(idx, n_g + np.arange(n_c), n_g + n_c + np.arange(n_c))
    chart = np.zeros(len(head), dtype=bool)
    chart[1:-1] = _face_chart(head[1:-1].reshape(n_r, n_c, 3)).ravel()
    f = _latlong_faces(n_r, n_c)
    on_chart = chart[f].all(1)
    chart_vt = n_g + 2 * n_c + np.cumsum(chart) - 1
    ft[on_chart] = chart_vt[f[on_chart]]
    vt = np.concatenate([grid_vt, pole_vt, face_uv(head[chart]), face_uv(eyes)])
    n_eye = len(eyes) // 2
    eye_ft = [_latlong_faces(*EYE_GRID, len(vt) - len(eyes) + k * n_eye) for k in (0, 1)]
    return vt, np.concatenate([ft, *eye_ft])


_Blob = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]
_Component = tuple[str, str, tuple[_Blob, ...]]
"""(kind, lip gate, blobs): kind 'mid' (as given), 'sym' (plus its mirror image) or 'pair'
(left as given, then its mirror image as a separate component); gate 'upper' or 'lower' keeps
the displacement on one side of the mouth line. A blob is (centre, radii, move): the move
(metres) fades smoothly to zero at the radii. Scaling is a pair of opposite mirrored moves."""

_IDENTITY: tuple[_Component, ...] = (
    ("sym", "", (((0.075, 0.02, -0.015), (0.09, 0.16, 0.16), (0.004, 0, 0)),)),  # head width
    ("mid", "", (((0, 0.14, -0.01), (0.15, 0.12, 0.18), (0, 0.006, 0)),)),  # head height
    ("mid", "", (((0, 0.03, -0.11), (0.14, 0.14, 0.12), (0, 0, -0.006)),)),  # head depth
    ("mid", "", (((0, -0.085, 0.06), (0.09, 0.07, 0.09), (0, -0.005, 0)),)),  # face length
    ("sym", "", (((0.062, 0.01, 0.03), (0.04, 0.05, 0.06), (0.004, 0, 0)),)),  # face width
    ("sym", "", (((0.05, -0.065, 0.0), (0.04, 0.04, 0.06), (0.004, 0, 0)),)),  # jaw width
    ("mid", "", (((0, -0.075, 0.085), (0.035, 0.03, 0.04), (0, 0, 0.004)),)),  # chin forward
    ("mid", "", (((0, -0.088, 0.07), (0.03, 0.025, 0.04), (0, -0.003, 0)),)),  # chin height
    ("mid", "", (((0, -0.008, 0.11), (0.02, 0.022, 0.04), (0, -0.003, 0)),)),  # nose length
    ("mid", "", (((0, -0.005, 0.115), (0.018, 0.022, 0.035), (0, 0, 0.004)),)),  # nose depth
    ("sym", "", (((0.015, -0.012, 0.095), (0.012, 0.012, 0.03), (0.0025, 0, 0)),)),  # alae
    ("mid", "", (((0, 0.018, 0.1), (0.012, 0.018, 0.03), (0, 0, 0.003)),)),  # nose bridge
    ("mid", "", (((0, -0.01, 0.112), (0.015, 0.012, 0.03), (0, 0.002, -0.001)),)),  # tip tilt
    ("sym", "", (((0.026, 0.044, 0.09), (0.03, 0.012, 0.03), (0, 0, 0.003)),)),  # brow ridge
    ("mid", "", (((0, 0.1, 0.08), (0.08, 0.05, 0.06), (0, 0, -0.005)),)),  # forehead slope
    ("sym", "", (((0.031, 0.028, 0.075), (0.024, 0.022, 0.04), (0.002, 0, 0)),)),  # eye spacing
    ("sym", "", (((0.031, 0.028, 0.075), (0.024, 0.022, 0.04), (0, 0.002, 0)),)),  # eye height
    ("sym", "", (((0.031, 0.028, 0.075), (0.024, 0.022, 0.04), (0, 0, -0.002)),)),  # eye depth
    ("sym", "", (((0.045, -0.015, 0.07), (0.025, 0.03, 0.04), (0.002, 0, 0.003)),)),  # cheeks
    ("sym", "", (((0.055, 0.012, 0.06), (0.025, 0.025, 0.04), (0.002, 0, 0.003)),)),  # zygoma
    ("sym", "", (((0.025, -0.04, 0.088), (0.02, 0.02, 0.04), (0.003, 0, 0)),)),  # mouth width
    ("mid", "upper", (((0, -0.034, 0.097), (0.03, 0.01, 0.03), (0, 0.0015, 0.0025)),)),
    ("mid", "lower", (((0, -0.048, 0.097), (0.03, 0.012, 0.03), (0, -0.0015, 0.003)),)),
    ("mid", "", (((0, -0.04, 0.09), (0.04, 0.025, 0.05), (0, 0.003, 0)),)),  # mouth height
    ("sym", "", (((0.05, -0.14, -0.022), (0.05, 0.06, 0.12), (0.004, 0, 0)),)),  # neck width
    ("sym", "", (((0.08, 0.005, -0.018), (0.025, 0.04, 0.03), (0.003, 0, 0)),)),  # ears
    ("sym", "", (((0.065, 0.05, 0.0), (0.03, 0.04, 0.06), (0.003, 0, 0)),)),  # temples
    ("mid", "", (((0, 0.0, 0.1), (0.06, 0.08, 0.06), (0, 0, 0.004)),)),  # midface depth
    ("sym", "", (((0.055, -0.06, -0.01), (0.03, 0.03, 0.04), (0, 0.003, 0)),)),  # jaw angle
    ("mid", "", (((0.05, 0.0, 0.04), (0.05, 0.08, 0.08), (0.002, 0, 0)),)),  # asymmetry
)
"""Identity deformers; one coefficient of 1 is about one standard deviation of people."""

EXPRESSION_NAMES = (
    "brow_inner_up_left", "brow_inner_up_right", "brow_outer_up_left", "brow_outer_up_right",
    "brow_down_left", "brow_down_right", "cheek_puff_left", "cheek_puff_right",
    "cheek_raise_left", "cheek_raise_right", "smile_left", "smile_right",
    "frown_left", "frown_right", "stretch_left", "stretch_right",
    "upper_lip_up_left", "upper_lip_up_right", "lower_lip_down_left", "lower_lip_down_right",
    "nose_wrinkle_left", "nose_wrinkle_right", "pucker", "press", "mouth_shift_left",
    "chin_raise", "nostril_flare", "eye_close_left", "eye_close_right",
    "eye_squint_left", "eye_squint_right", "jaw_forward",
)  # fmt: skip
"""Name of each expression component (exprdirs[..., k]), left = subject's left (+x)."""

# fmt: off
_EXPRESSIONS: tuple[_Component, ...] = (
    ("pair", "", (((0.014, 0.045, 0.092), (0.018, 0.022, 0.03), (0, 0.006, 0.001)),)),
    ("pair", "", (((0.042, 0.046, 0.085), (0.022, 0.02, 0.03), (0, 0.006, 0)),)),
    ("pair", "", (((0.02, 0.044, 0.09), (0.025, 0.018, 0.03), (-0.003, -0.005, 0.001)),)),
    ("pair", "", (((0.042, -0.035, 0.07), (0.028, 0.03, 0.04), (0.006, 0, 0.004)),)),
    ("pair", "", (((0.04, 0.0, 0.075), (0.025, 0.02, 0.04), (0, 0.004, 0.001)),)),
    ("pair", "", (((0.025, -0.04, 0.085), (0.018, 0.016, 0.03), (0.003, 0.005, -0.002)),)),
    ("pair", "", (((0.025, -0.04, 0.085), (0.018, 0.016, 0.03), (0, -0.005, 0)),)),
    ("pair", "", (((0.025, -0.04, 0.085), (0.02, 0.014, 0.03), (0.005, 0, -0.001)),)),
    ("pair", "upper", (((0.01, -0.033, 0.097), (0.018, 0.012, 0.03), (0, 0.004, 0.001)),)),
    ("pair", "lower", (((0.01, -0.049, 0.096), (0.018, 0.014, 0.03), (0, -0.005, 0.001)),)),
    ("pair", "", (((0.013, 0.0, 0.1), (0.014, 0.02, 0.03), (0, 0.003, 0)),)),
    ("sym", "", (((0.0, -0.041, 0.095), (0.035, 0.022, 0.04), (0, 0, 0.005)),
                 ((0.022, -0.041, 0.09), (0.02, 0.02, 0.04), (-0.005, 0, 0.002)))),
    ("mid", "", (((0, -0.034, 0.097), (0.03, 0.012, 0.03), (0, -0.0015, -0.003)),
                 ((0, -0.048, 0.097), (0.03, 0.012, 0.03), (0, 0.0015, -0.003)))),
    ("mid", "", (((0, -0.042, 0.09), (0.04, 0.024, 0.04), (0.005, 0, 0)),)),
    ("mid", "lower", (((0, -0.06, 0.09), (0.025, 0.025, 0.04), (0, 0.004, 0.002)),)),
    ("sym", "", (((0.015, -0.012, 0.095), (0.01, 0.01, 0.02), (0.002, 0, 0)),)),
)
# fmt: on
"""Local expression deformers, in the order of EXPRESSION_NAMES (lids and jaw follow)."""


def _mirror(blob: _Blob) -> _Blob:
    (cx, cy, cz), r, (mx, my, mz) = blob
    return (-cx, cy, cz), r, (-mx, my, mz)


def _displacement(points: np.ndarray, *, blobs: tuple[_Blob, ...], gate: str) -> np.ndarray:
    """(N, 3) sum of blob moves with smooth compact falloff (1 - s^2)^3, gated at the lips."""
    out = np.zeros_like(points)
    for centre, radii, move in blobs:
        s2 = (((points - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(1)
        out += np.clip(1 - s2, 0, None)[:, None] ** 3 * np.asarray(move)
    if gate:
        upper = _ramp((points[:, 1] - MOUTH_Y) / 0.0005)
        out *= (upper if gate == "upper" else 1 - upper)[:, None]
    return out


def _components(points: np.ndarray, table: tuple[_Component, ...]) -> list[np.ndarray]:
    """The (N, 3) displacement of each component of a deformer table, pairs expanded."""
    out = []
    for kind, gate, blobs in table:
        mirrored = tuple(_mirror(b) for b in blobs)
        if kind == "sym":
            blobs = blobs + mirrored
        out.append(_displacement(points, blobs=blobs, gate=gate))
        if kind == "pair":
            out.append(_displacement(points, blobs=mirrored, gate=gate))
    return out


def _lid_motion(v: np.ndarray, *, sign: float, upper: bool) -> np.ndarray:
    """(N, 3) displacement closing the upper lid (or raising the lower lid halfway) of one eye:
    the lid slides over the eyeball sphere, the pocket behind it folds away."""
    x, y = v[:, 0], v[:, 1]
    dx = x - sign * EYE[0]
    top, bottom = _eye_margins(dx, sign=sign)
    fold = 1 - np.clip(dx / EYE_HALF_WIDTH, -1, 1) ** 2
    if upper:
        y0, y1, y2, y1_new = bottom, top, top + 0.005 * fold, bottom + 0.0006 * fold
    else:
        y0, y1, y2 = bottom - 0.006 * fold, bottom, top
        y1_new = 0.5 * (bottom + top)
    below = y0 + (y - y0) * (y1_new - y0) / np.maximum(y1 - y0, 1e-9)
    above = y2 - (y2 - y) * (y2 - y1_new) / np.maximum(y2 - y1, 1e-9)
    y_new = np.where(y < y1, below, above)
    moving = (np.abs(dx) < EYE_HALF_WIDTH) & (y > y0) & (y < y2) & (v[:, 2] > EYE[2])
    dy = np.where(moving, y_new - y, 0.0)
    dz = _eyeball_front(dx, y + dy - EYE[1]) - _eyeball_front(dx, y - EYE[1])
    return np.stack([np.zeros_like(dy), dy, np.where(moving, dz, 0.0)], 1)


def _jaw_weight(v: np.ndarray) -> np.ndarray:
    """(N,) how much each head vertex follows the jaw: below the mouth line (sharp between the
    lips), below a line from the mouth corners up to the hinge (soft on the cheeks), in front
    of the ears, fading down the throat; the mouth corners follow halfway, so the mouth opens
    as an oval."""
    x, y, z = v.T
    lateral = np.clip(np.abs(x) - MOUTH_HALF_WIDTH + 0.001, 0, None)
    line = np.minimum(MOUTH_Y + 0.6 * lateral, -0.02)
    width = np.minimum(0.0002 + 0.8 * lateral, 0.01)
    throat = _ramp((y + 0.115) / 0.02)
    jaw = _ramp((line - y) / (2 * width)) * _ramp((z + 0.005) / 0.008) * throat
    d2 = ((np.abs(x) - MOUTH_HALF_WIDTH) ** 2 + (y - MOUTH_Y) ** 2) / 0.012**2
    corner = np.clip(1 - d2, 0, None) ** 3
    return jaw * (1 - corner) + 0.5 * corner


def _joint_regressor(v: np.ndarray, *, n_head: int, n_eye: int) -> np.ndarray:
    """(5, V): global, neck and jaw joints average mirror-symmetric patches where a line along
    x at the joint's (y, z) meets the sides of the head; eyes average their eyeball."""
    reg = np.zeros((NUM_JOINTS, len(v)))
    head = v[:n_head]
    for j, (y, z) in enumerate(((-0.12, -0.022), (-0.05, -0.025), (-0.012, 0.005))):
        w = np.exp(-((head[:, 1] - y) ** 2 + (head[:, 2] - z) ** 2) / (2 * 0.004**2))
        w *= np.abs(head[:, 0]) > 0.02
        reg[j, :n_head] = w / w.sum()
    reg[3, n_head : n_head + n_eye] = 1.0 / n_eye
    reg[4, n_head + n_eye :] = 1.0 / n_eye
    return reg


def _skinning_weights(v: np.ndarray, *, n_head: int, n_eye: int) -> np.ndarray:
    """(V, 5): the lower neck stays with the body (global), the head follows the neck joint,
    the lower face the jaw; each eyeball follows its eye joint."""
    head = v[:n_head]
    above = _ramp((head[:, 1] - NECK_CUT_Y - 0.045) / 0.03)
    jaw = _jaw_weight(head)
    w = np.zeros((len(v), NUM_JOINTS))
    w[:n_head] = np.stack([1 - above, above * (1 - jaw), above * jaw, 0 * jaw, 0 * jaw], 1)
    w[n_head : n_head + n_eye, 3] = 1.0
    w[n_head + n_eye :, 4] = 1.0
    return w


def _identity_dirs(v: np.ndarray, *, n_head: int, n_eye: int) -> np.ndarray:
    """(V, 3, S) principal axes of the identity deformers (orthogonal, by decreasing spread,
    scaled by it), so N(0, 1) coefficients give the deformers' N(0, 1) distribution; eyeballs
    move rigidly with their centres."""
    centres = EYE * np.array([[1.0, 1, 1], [-1, 1, 1]])
    parts = _components(np.concatenate([v[:n_head], centres]), _IDENTITY)
    d = np.zeros((len(parts), len(v), 3))
    for k, part in enumerate(parts):
        d[k, :n_head] = part[:n_head]
        d[k, n_head : n_head + n_eye] = part[n_head]
        d[k, n_head + n_eye :] = part[n_head + 1]
    flat = d.reshape(len(parts), -1).T
    _, axes = np.linalg.eigh(flat.T @ flat)
    dirs = flat @ axes[:, ::-1]
    dirs *= np.sign(dirs[np.argmax(np.abs(dirs), axis=0), np.arange(dirs.shape[1])])
    return dirs.reshape(len(v), 3, -1)


def _expression_dirs(v: np.ndarray, *, n_head: int) -> np.ndarray:
    """(V, 3, E) local expression blend shapes in the order of EXPRESSION_NAMES."""
    head = v[:n_head]
    parts = _components(head, _EXPRESSIONS)
    parts += [_lid_motion(head, sign=s, upper=True) for s in (1.0, -1.0)]
    parts += [_lid_motion(head, sign=s, upper=False) for s in (1.0, -1.0)]
    chin = (((0, -0.07, 0.08), (0.05, 0.04, 0.06), (0, 0, 0.005)),)
    parts.append(_jaw_weight(head)[:, None] * _displacement(head, blobs=chin, gate=""))
    d = np.zeros((len(v), 3, len(parts)))
    d[:n_head] = np.stack(parts, -1)
    return d


def _face_vertices(v: np.ndarray, *, n_head: int) -> np.ndarray:
    """(N,) head vertices from the hairline to the chin, in front of the ears."""
    x, y, z = v[:n_head].T
    return np.flatnonzero((z > 0.0) & (y < 0.105) & (y > -0.096 + 7 * x**2)).astype(np.int64)


def build_sample_model() -> FlameModel:
    """The sample head as a `FlameModel` (float64, about 7.7k vertices, 30 identity and 32
    expression components, zero pose correctives, no landmark embedding)."""
    head, shape, az = _head()
    eyes = np.concatenate([_eyeball(1.0), _eyeball(-1.0)])
    v = np.concatenate([head, eyes])
    n_head, n_eye = len(head), len(eyes) // 2
    eye_f = [_latlong_faces(*EYE_GRID, n_head + k * n_eye) for k in (0, 1)]
    f = np.concatenate([_latlong_faces(*shape), *eye_f])
    vt, ft = _texture(head, shape=shape, az=az, eyes=eyes)
    return FlameModel(
        v_template=v,
        f=f,
        shapedirs=_identity_dirs(v, n_head=n_head, n_eye=n_eye),
        exprdirs=_expression_dirs(v, n_head=n_head),
        posedirs=np.zeros((len(v), 3, NUM_POSE_FEATURES)),
        J_regressor=_joint_regressor(v, n_head=n_head, n_eye=n_eye),
        weights=_skinning_weights(v, n_head=n_head, n_eye=n_eye),
        kintree_table=np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        vt=vt,
        ft=ft,
        face_vertex_ids=_face_vertices(v, n_head=n_head),
        source="sample",
    )


def _keypoint_positions() -> dict[str, tuple[float, float]]:
    """Frontal (x, y) of the named keypoints on the sample head's template."""
    ex, ey = EYE[:2]
    corner = EYE_HALF_WIDTH
    return {
        "eye_left": (ex, ey),
        "eye_right": (-ex, ey),
        "eye_left_inner": (ex - corner, ey - 0.08 * corner),
        "eye_left_outer": (ex + corner, ey + 0.08 * corner),
        "eye_right_inner": (-ex + corner, ey - 0.08 * corner),
        "eye_right_outer": (-ex - corner, ey + 0.08 * corner),
        "nose_bridge": (0.0, ey),
        "mouth_left": (MOUTH_HALF_WIDTH, MOUTH_Y),
        "mouth_right": (-MOUTH_HALF_WIDTH, MOUTH_Y),
        "mouth_center": (0.0, MOUTH_Y),
        "upper_lip": (0.0, -0.0335),
        "lower_lip": (0.0, -0.048),
        "chin": (0.0, -0.084),
        "forehead": (0.0, 0.075),
    }


def _frontal_points(v: np.ndarray, *, f: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(K, 3) first surface point seen from the front (+z) at each frontal (x, y) in (K, 2)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    e1, e2 = (b - a)[:, :2], (c - a)[:, :2]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) < 1e-14, np.nan, det)
    p = xy[:, None, :] - a[None, :, :2]
    l1 = (p[..., 0] * e2[:, 1] - p[..., 1] * e2[:, 0]) / det
    l2 = (e1[:, 0] * p[..., 1] - e1[:, 1] * p[..., 0]) / det
    z = a[:, 2] + l1 * (b - a)[:, 2] + l2 * (c - a)[:, 2]
    z = np.where((l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1), z, -np.inf)
    return np.concatenate([xy, z.max(1)[:, None]], 1)


def template_keypoints(model: FlameModel) -> dict[str, np.ndarray]:
    """Named 3D points (metres) on the sample head's template, to align a face photo to its
    face chart: each is the surface point seen from the front at its frontal (x, y), so its
    texture coordinate is `face_uv` of it; eyes are the eyeballs' front (pupil) points and
    'nose_tip' the template's most forward face vertex. Left = subject's left (+x)."""
    names, xy = zip(*_keypoint_positions().items(), strict=True)
    points = _frontal_points(model.v_template, f=model.f, xy=np.array(xy))
    out = {name: point for name, point in zip(names, points, strict=True)}
    face = model.v_template[model.face_vertex_ids]
    out["nose_tip"] = face[np.argmax(face[:, 2])].copy()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the embedded sample head model (npz).")
    parser.add_argument("--out", type=Path, required=True, help="output .npz path")
    args = parser.parse_args(argv)
    save_npz(build_sample_model(), args.out)


if __name__ == "__main__":
    main()
