"""One optimisation stage: data association, the weighted energy, the Adam loop, residuals.

Correspondences (which fused point pulls which vertex, which landmark a camera can see) are
recomputed every `correspondence_every` steps without gradients, so each Adam step sees a
smooth energy; the per-timestep residual statistics for outlier removal come from the same
association.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from flame_tracking import energies as E
from flame_tracking.optimisation import Problem, evaluate
from flame_tracking.settings import StageConfig, TrackerConfig

MM_PER_M = 1000.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class PointSet:
    """Each timestep's fused points near the fitted region, padded to P."""

    points: np.ndarray
    """(T, P, 3) metres (padding zeros)."""
    normals: np.ndarray
    """(T, P, 3) unit normals."""
    valid: np.ndarray
    """(T, P) bool: a real point, not padding."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Association:
    """Which residuals count, fixed between correspondence updates."""

    landmark_weight: torch.Tensor
    """(T, C, L) 1 for an observed landmark whose surface faces the camera."""
    points: torch.Tensor | None = None
    """(T, P, 3) fused points."""
    target: torch.Tensor | None = None
    """(T, P) nearest 'fit' subset vertex of each point."""
    normals: torch.Tensor | None = None
    """(T, P, 3) unit normal of each point's target vertex."""
    point_weight: torch.Tensor | None = None
    """(T, P) 1 for a point that counts."""


def select_points(
    problem: Problem, variables: dict[str, torch.Tensor], *, config: TrackerConfig
) -> PointSet:
    """Per timestep, the points whose nearest vertex of the whole current mesh lies in the
    fitted region within twice `point_max_distance`, evenly thinned to `max_points`."""
    with torch.no_grad():
        full = evaluate(problem, variables, subset="full").double().numpy()
    reach = 2 * config.point_max_distance
    chosen = []
    for t, (points, _) in enumerate(problem.points):
        region = full[t][problem.region]
        box = (points > region.min(0) - reach).all(1) & (points < region.max(0) + reach).all(1)
        near = np.flatnonzero(box)
        distance, nearest = cKDTree(full[t]).query(points[near], distance_upper_bound=reach)
        hit = np.isfinite(distance)
        keep = near[hit][problem.region[nearest[hit]]]
        if len(keep) > config.max_points:
            keep = keep[np.linspace(0, len(keep) - 1, config.max_points).round().astype(np.int64)]
        chosen.append(keep)
    size = max(1, max(len(c) for c in chosen))
    shape = (len(chosen), size)
    out = PointSet(
        points=np.zeros((*shape, 3)), normals=np.zeros((*shape, 3)), valid=np.zeros(shape, bool)
    )
    for t, keep in enumerate(chosen):
        points, normals = problem.points[t]
        out.points[t, : len(keep)] = points[keep]
        out.normals[t, : len(keep)] = normals[keep]
        out.valid[t, : len(keep)] = True
    return out


def _landmark_weight(
    problem: Problem, vertices: torch.Tensor, *, subset: str, min_cos: float
) -> torch.Tensor:
    """(T, C, L) weights: observed, and the landmark's triangle faces the camera."""
    corners = vertices[:, problem.corners[subset]].detach().double().numpy()  # (T, L, 3, 3)
    normal = np.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    points = np.einsum("lk,tlkc->tlc", problem.bary.double().numpy(), corners)
    visible = E.landmark_visibility(
        points=points,
        normals=normal,
        centres=problem.centres,
        min_cos=min_cos,
    )
    return torch.as_tensor(problem.landmarks.valid & visible, dtype=vertices.dtype)


def associate(
    problem: Problem,
    variables: dict[str, torch.Tensor],
    *,
    point_set: PointSet | None,
    config: TrackerConfig,
) -> Association:
    """Landmark visibility and, with `point_set`, each point's target vertex and weight."""
    subset = "landmark" if point_set is None else "fit"
    with torch.no_grad():
        vertices = evaluate(problem, variables, subset=subset)
        weight = _landmark_weight(problem, vertices, subset=subset, min_cos=config.landmark_min_cos)
        if point_set is None:
            return Association(landmark_weight=weight)
        normals = E.vertex_normals(vertices, problem.faces).double().numpy()
    positions = vertices.double().numpy()
    candidates = problem.region[problem.subsets["fit"].vertex_ids]
    targets, weights = [], []
    for t in range(len(positions)):
        target, keep = E.nearest_vertices(
            vertices=positions[t],
            normals=normals[t],
            points=point_set.points[t],
            point_normals=point_set.normals[t],
            candidates=candidates,
            max_distance=config.point_max_distance,
            min_normal_cos=config.point_min_normal_cos,
        )
        targets.append(target)
        weights.append(keep * point_set.valid[t])
    dtype = vertices.dtype
    target = np.stack(targets)
    return Association(
        landmark_weight=weight,
        points=torch.as_tensor(point_set.points, dtype=dtype),
        target=torch.as_tensor(target),
        normals=torch.as_tensor(np.take_along_axis(normals, target[..., None], 1), dtype=dtype),
        point_weight=torch.as_tensor(np.stack(weights), dtype=dtype),
    )


def _priors(
    problem: Problem, v: dict[str, torch.Tensor], w: E.EnergyWeights, *, coefficients: float
) -> torch.Tensor:
    """Weighted sum of the identity, expression (times `coefficients`), offset and joint
    priors."""
    offsets = v["static_offset"]
    limits = sum(E.limit_term(v[name], *problem.limits[name]) for name in problem.limits)
    return (
        coefficients * w.shape * E.coefficient_prior(v["shape"])
        + coefficients * w.expr * E.coefficient_prior(v["expr"])
        + w.offset * E.offset_prior(offsets)
        + w.offset_laplacian * E.offset_laplacian(offsets, problem.laplacian)
        + w.neck * E.coefficient_prior(v["neck_pose"])
        + w.eyes * E.coefficient_prior(v["eyes_pose"])
        + w.limits * limits
    )


def stage_energy(
    problem: Problem,
    variables: dict[str, torch.Tensor],
    *,
    stage: StageConfig,
    association: Association,
    weights: E.EnergyWeights,
) -> torch.Tensor:
    """The weighted energy of one stage (points only when the stage fits them).

    Landmarks see the static offsets as constants: MediaPipe's landmarks sit a few pixels
    off the embedding in a consistent way, and offsets free to slide along the surface
    would absorb that instead of the surface detail the fused points show."""
    fixed_offsets = {**variables, "static_offset": variables["static_offset"].detach()}
    vertices = evaluate(problem, fixed_offsets, subset="landmark")
    landmarks = E.barycentric_points(vertices, problem.corners["landmark"], problem.bary)
    pixels = E.project(landmarks, problem.projection)
    scale = weights.landmark_scale_px * stage.landmark_scale
    total = (
        stage.landmark_weight
        * weights.landmark
        * E.landmark_term(pixels, problem.pixels, association.landmark_weight, scale=scale)
    )
    if stage.points:
        vertices = evaluate(problem, variables, subset="fit")
        total = total + weights.point * E.point_term(
            vertices,
            target=association.target,
            normals=association.normals,
            points=association.points,
            weight=association.point_weight,
            scale=weights.point_scale_mm * stage.point_scale,
        )
    return total + _priors(problem, variables, weights, coefficients=stage.prior_weight)


def run_stage(
    problem: Problem,
    variables: dict[str, torch.Tensor],
    *,
    stage: StageConfig,
    config: TrackerConfig,
    progress: Callable[[int], None],
) -> float:
    """Adam on `stage.variables` (cosine-decayed steps); returns the final energy."""
    if stage.steps <= 0:
        return math.nan
    for name, value in variables.items():
        value.requires_grad_(name in stage.variables)
    rates = config.learning_rates
    optimiser = torch.optim.Adam(
        [{"params": [variables[n]], "lr": getattr(rates, n)} for n in stage.variables]
    )
    f = config.final_lr_fraction
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: f + (1 - f) * 0.5 * (1 + math.cos(math.pi * k / stage.steps))
    )
    point_set = select_points(problem, variables, config=config) if stage.points else None
    energy = torch.zeros(())
    for k in range(stage.steps):
        if k % config.correspondence_every == 0:
            association = associate(problem, variables, point_set=point_set, config=config)
            progress(k)
        optimiser.zero_grad(set_to_none=True)
        energy = stage_energy(
            problem, variables, stage=stage, association=association, weights=config.weights
        )
        energy.backward()
        optimiser.step()
        schedule.step()
    progress(stage.steps)
    return float(energy.detach())


def residuals(
    problem: Problem, variables: dict[str, torch.Tensor], *, config: TrackerConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per timestep (T,): median landmark error (px) over visible observed landmarks, median
    point-to-plane distance (mm) of the fitted points (NaN without any), fitted point count."""
    point_set = select_points(problem, variables, config=config)
    association = associate(problem, variables, point_set=point_set, config=config)
    with torch.no_grad():
        vertices = evaluate(problem, variables, subset="fit")
        landmarks = E.barycentric_points(vertices, problem.corners["fit"], problem.bary)
        pixels = E.project(landmarks, problem.projection)
        errors = (pixels - problem.pixels).norm(dim=-1).double().numpy()
        index = association.target[..., None].expand(-1, -1, 3)
        anchor = torch.gather(vertices, 1, index)
        offset = (association.points - anchor) * association.normals
        distance = offset.sum(-1).abs() * MM_PER_M
    lmk_weight = association.landmark_weight.numpy() > 0
    pts_weight = association.point_weight.numpy() > 0
    distance = distance.double().numpy()
    landmark_px = np.array([_median(e[w]) for e, w in zip(errors, lmk_weight, strict=True)])
    point_mm = np.array([_median(d[w]) for d, w in zip(distance, pts_weight, strict=True)])
    return landmark_px, point_mm, pts_weight.sum(1)


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else math.nan
