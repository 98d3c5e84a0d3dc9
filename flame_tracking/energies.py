"""The tracker's energy terms, one small function each, and their weights.

Data terms are robust (Geman-McClure) so a wrong MediaPipe landmark in one view, or a fused
point on hair, cannot pull the fit: past a few scales its cost stops growing. Each data term
is averaged per timestep first and then over timesteps, so a timestep seen by more cameras
does not weigh more in the shared shape. Units are pixels for landmarks and millimetres for
points and offsets, so the weights below are of order one.

The point term's data association (nearest vertex of the current mesh, recomputed every few
steps with a KD-tree) and the landmark visibility test live here too: they decide which
residuals each term sees.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy import sparse
from scipy.spatial import cKDTree

MM_PER_M = 1000.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnergyWeights:
    """Weights and robust scales of the energy terms."""

    landmark: float = 1.0
    """Multi-view landmark reprojection (pixels squared, robust)."""
    landmark_scale_px: float = 3.0
    """Geman-McClure scale of the landmark residual: errors well past it stop pulling."""
    point: float = 1.0
    """Point-to-plane distance of the fused points to the mesh (mm squared, robust)."""
    point_scale_mm: float = 2.0
    """Geman-McClure scale of the point residual."""
    shape: float = 0.02
    """Squared norm of the identity coefficients (unit-variance components)."""
    expr: float = 0.02
    """Squared norm of the expression coefficients, mean over timesteps."""
    offset: float = 0.01
    """Mean squared static offset (mm squared): keeps offsets from drifting."""
    offset_laplacian: float = 100.0
    """Mean squared uniform Laplacian of the offsets (mm squared): smooth detail, not noise."""
    neck: float = 1.0
    """Squared norm of the neck rotation (rad): global rotation explains the head first."""
    eyes: float = 0.1
    """Squared norm of the eye rotations (rad): gaze stays straight without iris evidence."""
    limits: float = 1000.0
    """Squared excess of jaw and eye rotations beyond their limits (rad)."""


def geman_mcclure(squared: torch.Tensor, scale: float) -> torch.Tensor:
    """Robust cost of squared residuals: r^2 near zero, tending to scale^2 for large r."""
    s2 = scale * scale
    return s2 * squared / (squared + s2)


def weighted_mean_per_timestep(cost: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over timesteps of each timestep's weighted mean; cost, weight (T, ...)."""
    t = cost.shape[0]
    num = (cost * weight).reshape(t, -1).sum(1)
    den = weight.reshape(t, -1).sum(1)
    return (num / den.clamp(min=1e-9)).mean()


def barycentric_points(
    vertices: torch.Tensor, corners: torch.Tensor, bary: torch.Tensor
) -> torch.Tensor:
    """(T, L, 3) points at barycentric `bary` (L, 3) of triangles `corners` (L, 3)."""
    return (vertices[:, corners] * bary[None, ..., None]).sum(2)


def project(points: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """(T, C, L, 2) pixels of `points` (T, L, 3) through the (T, C, 3, 4) camera matrices
    K [R | t] (OpenCV; every point must lie in front of every camera, as a head does)."""
    uv = torch.einsum("tcij,tlj->tcli", projection[..., :3], points)
    uv = uv + projection[:, :, None, :, 3]
    return uv[..., :2] / uv[..., 2:]


def landmark_term(
    pixels: torch.Tensor, observed: torch.Tensor, weight: torch.Tensor, *, scale: float
) -> torch.Tensor:
    """Robust reprojection error of projected `pixels` (T, C, L, 2) against `observed`,
    where `weight` (T, C, L) is 1 for a visible, detected landmark."""
    squared = ((pixels - observed) ** 2).sum(-1)
    return weighted_mean_per_timestep(geman_mcclure(squared, scale), weight)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(T, V, 3) unit area-weighted vertex normals of (T, V, 3) vertices and (F, 3) faces."""
    a, b, c = (vertices[:, faces[:, k]] for k in range(3))
    face_normals = torch.linalg.cross(b - a, c - a)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals = normals.index_add(1, faces[:, k], face_normals)
    return normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def point_term(
    vertices: torch.Tensor,
    *,
    target: torch.Tensor,
    normals: torch.Tensor,
    points: torch.Tensor,
    weight: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Robust point-to-plane distance (mm) of `points` (T, P, 3) to the tangent planes of
    their `target` vertices (T, P) of `vertices` (T, V, 3); the planes' unit `normals`
    (T, P, 3) are held fixed between correspondence updates, as in point-to-plane ICP."""
    anchor = torch.gather(vertices, 1, target[..., None].expand(-1, -1, 3))
    distance = ((points - anchor) * normals).sum(-1) * MM_PER_M
    return weighted_mean_per_timestep(geman_mcclure(distance**2, scale), weight)


def coefficient_prior(coefficients: torch.Tensor) -> torch.Tensor:
    """Squared norm of (K,) coefficients, or the mean over rows of (T, K) ones."""
    return (coefficients**2).sum(-1).mean()


def offset_prior(offsets: torch.Tensor) -> torch.Tensor:
    """Mean squared length (mm squared) of (V, 3) static offsets in metres."""
    return ((offsets * MM_PER_M) ** 2).sum(-1).mean()


def offset_laplacian(offsets: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    """Mean squared uniform Laplacian (mm squared) of (R, 3) offsets; `laplacian` is the
    sparse (V, R) matrix I - D^-1 A of the whole mesh graph restricted to the R offset
    columns, so a jump to the zero offsets outside them is penalised too."""
    return ((torch.sparse.mm(laplacian, offsets) * MM_PER_M) ** 2).sum(-1).mean()


def limit_term(values: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Squared excess of (T, K) `values` outside [lower, upper] (K,), mean over rows."""
    excess = torch.relu(values - upper) + torch.relu(lower - values)
    return (excess**2).sum(-1).mean()


def uniform_laplacian(faces: np.ndarray, num_vertices: int) -> sparse.csr_matrix:
    """(V, V) I - D^-1 A of the edge graph of `faces` (isolated vertices: zero rows)."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.concatenate([edges, edges[:, ::-1]]), axis=0)
    adjacency = sparse.csr_matrix(
        (np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_vertices, num_vertices)
    )
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    identity = sparse.diags((degree > 0).astype(float))
    return (identity - sparse.diags(inverse) @ adjacency).tocsr()


def nearest_vertices(
    *,
    vertices: np.ndarray,
    normals: np.ndarray,
    points: np.ndarray,
    point_normals: np.ndarray,
    candidates: np.ndarray,
    max_distance: float,
    min_normal_cos: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Data association of one timestep's point term.

    Each of the (P, 3) points takes its nearest of all (V, 3) `vertices`; it counts (weight
    1) only when that vertex is a `candidates` (V,) bool vertex, lies within `max_distance`
    metres and its normal agrees with the point's (cosine at least `min_normal_cos`), so
    hair, shoulders and the back of a thin surface are left out.

    Returns the (P,) target vertex and (P,) 0/1 weight.
    """
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    distance, target = cKDTree(vertices).query(points)
    cosine = np.einsum("pc,pc->p", normals[target], point_normals)
    keep = candidates[target] & (distance <= max_distance) & (cosine >= min_normal_cos)
    return target.astype(np.int64), keep.astype(float)


def landmark_visibility(
    *, points: np.ndarray, normals: np.ndarray, centres: np.ndarray, min_cos: float
) -> np.ndarray:
    """(T, C, L) bool: the surface at each landmark faces camera c (cosine between the
    normal and the direction to the camera at least `min_cos`). MediaPipe still places
    landmarks it cannot see; those guesses on the far side of the head are left out.

    Args:
        points, normals: (T, L, 3) landmark positions and unit surface normals.
        centres: (T, C, 3) camera centres, world metres.
    """
    to_camera = centres[:, :, None] - points[:, None]
    to_camera /= np.linalg.norm(to_camera, axis=-1, keepdims=True)
    return np.einsum("tclk,tlk->tcl", to_camera, normals) >= min_cos
