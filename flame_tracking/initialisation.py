"""A starting head pose per timestep: triangulate the landmarks, align the template to them.

Gradient descent on reprojection errors needs a start inside the basin; the calibrated world
frame may put the head anywhere and facing any way, so no fixed guess is safe. Landmarks seen
in two or more views are triangulated (linear DLT, then once more without the views that
disagree), and the template's embedded landmarks are rigidly aligned to them (Kabsch with a
scale, so a head larger than the template does not tilt the rotation).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial.transform import Rotation

from flame_tracking.observations import LandmarkBatch


@dataclasses.dataclass(frozen=True, kw_only=True)
class RigidStart:
    """Per timestep rotation and translation of the template, FLAME's convention."""

    rotation: np.ndarray
    """(T, 3) axis-angle about the root joint."""
    translation: np.ndarray
    """(T, 3) metres, added after rotating about the root joint."""
    triangulated: np.ndarray
    """(T,) number of landmarks triangulated (those with at least two agreeing views)."""


def _dlt(projections: np.ndarray, pixels: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(L, 3) points from (C, 3, 4) projections, (C, L, 2) pixels and (C, L) 0/1 weights."""
    rows_x = pixels[..., 0:1] * projections[:, None, 2] - projections[:, None, 0]
    rows_y = pixels[..., 1:2] * projections[:, None, 2] - projections[:, None, 1]
    rows = np.concatenate([rows_x, rows_y], axis=0) * np.concatenate([weight, weight])[..., None]
    a = rows.transpose(1, 0, 2)  # (L, 2C, 4)
    _, _, vt = np.linalg.svd(a, full_matrices=False)
    h = vt[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return h[:, :3] / h[:, 3:]


def triangulate(
    projections: np.ndarray, pixels: np.ndarray, valid: np.ndarray, *, max_error_px: float
) -> np.ndarray:
    """(L, 3) world points (NaN where fewer than two agreeing views) from (C, 3, 4)
    projection matrices, (C, L, 2) pixels and (C, L) validity; views reprojecting further
    than `max_error_px` from the first estimate are left out of the second."""
    weight = valid.astype(float)
    points = _dlt(projections, pixels, weight)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    projected = np.einsum("crk,lk->clr", projections, homogeneous)
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.linalg.norm(projected[..., :2] / projected[..., 2:] - pixels, axis=-1)
    weight = weight * (np.nan_to_num(error, nan=np.inf) < max_error_px)
    points = _dlt(projections, pixels, weight)
    points[weight.sum(0) < 2] = np.nan
    return points


def similarity_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3, 3) rotation R of the best similarity target ~ s R source + t (Kabsch/Umeyama)."""
    a = source - source.mean(0)
    b = target - target.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def rigid_start(
    *,
    landmarks: LandmarkBatch,
    template_points: np.ndarray,
    root_joint: np.ndarray,
    max_error_px: float,
) -> RigidStart:
    """Start pose of each timestep from its landmarks.

    Args:
        landmarks: the packed observations (T timesteps, L embedded landmarks).
        template_points: (L, 3) the embedded landmarks on the template (zero pose).
        root_joint: (3,) FLAME's root joint on the template (rotations pivot there).
        max_error_px: views further than this from a first triangulation are left out.
    """
    projections = landmarks.K @ landmarks.world_2_cam[..., :3, :]  # (T, C, 3, 4)
    rotations, translations, counts = [], [], []
    for t in range(len(projections)):
        world = triangulate(
            projections[t], landmarks.pixels[t], landmarks.valid[t], max_error_px=max_error_px
        )
        ok = np.isfinite(world).all(1)
        counts.append(int(ok.sum()))
        if ok.sum() < 3:
            rotations.append(np.zeros(3))
            translations.append(np.zeros(3))
            continue
        r = similarity_rotation(template_points[ok], world[ok])
        shift = world[ok].mean(0) - r @ template_points[ok].mean(0)
        rotations.append(Rotation.from_matrix(r).as_rotvec())
        # FLAME rotates about the root joint J: x -> R (x - J) + J + translation.
        translations.append(shift + r @ root_joint - root_joint)
    return RigidStart(
        rotation=np.array(rotations),
        translation=np.array(translations),
        triangulated=np.array(counts),
    )
