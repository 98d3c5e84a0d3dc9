"""The tracker's optimisation problem: the tensors the energies read, the variables and
their start, and FLAME evaluated for them.

FLAME is evaluated only at the vertices the energies read (`subset.py`): the landmark
triangles in landmark-only stages, the fitted region when points join. Static offsets live
on the fitted region (the face, or the whole head) and are zero elsewhere. The face is the
model's `face_vertex_ids` (FLAME's masks' 'face'); asking for it on a model without one is an
error, not a silent widening to the whole head.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch
from scipy import sparse

from flame_tracking import energies as E
from flame_tracking.initialisation import rigid_start
from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.model import FlameModel, FlameModelError
from flame_tracking.observations import LandmarkBatch, TimestepObservation, pack_landmarks
from flame_tracking.settings import PER_TIMESTEP, TrackerConfig
from flame_tracking.subset import VertexSubset, restrict_model


@dataclasses.dataclass(frozen=True, kw_only=True)
class Problem:
    """Everything the optimisation reads, as tensors; per-timestep ones have T rows."""

    keys: tuple[str, ...]
    """Timestep keys, one per row."""
    model: FlameModel
    """The full model (for the point pre-selection and outputs)."""
    subsets: dict[str, VertexSubset]
    """'landmark' (landmark triangles) and 'fit' (fitted region plus landmark triangles)."""
    layers: dict[str, FlameLayer]
    """FLAME layers of 'landmark', 'fit' and 'full'."""
    corners: dict[str, torch.Tensor]
    """(L, 3) landmark triangle corners in each subset's local ids."""
    faces: torch.Tensor
    """(F', 3) triangles of the 'fit' subset (local ids), for vertex normals."""
    bary: torch.Tensor
    """(L, 3) landmark barycentric coordinates."""
    landmarks: LandmarkBatch
    """The packed landmark observations (numpy)."""
    projection: torch.Tensor
    """(T, C, 3, 4) camera matrices K [R | t]."""
    centres: np.ndarray
    """(T, C, 3) camera centres, world metres."""
    pixels: torch.Tensor
    """(T, C, L, 2) observed landmark pixels."""
    points: tuple[tuple[np.ndarray, np.ndarray], ...]
    """Per timestep (N, 3) fused points and (N, 3) normals."""
    region: np.ndarray
    """(V,) bool: vertices the points may fit."""
    regressor: torch.Tensor
    """(5, R) joint regressor columns of the offset (fit) vertices."""
    laplacian: torch.Tensor
    """Sparse (V, R) uniform Laplacian columns of the offset vertices."""
    limits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    """'jaw_pose' and 'eyes_pose' -> (lower, upper) per component."""

    @property
    def num_vertices(self) -> int:
        return self.model.num_vertices

    @property
    def offset_ids(self) -> np.ndarray:
        """(R,) full-model vertices carrying static offsets."""
        return self.subsets["fit"].vertex_ids


def _torch_sparse(matrix: sparse.sparray | sparse.spmatrix, dtype: torch.dtype) -> torch.Tensor:
    """A scipy sparse matrix as a coalesced torch COO tensor."""
    coo = matrix.tocoo()
    index = torch.as_tensor(np.stack([coo.row, coo.col]).astype(np.int64))
    values = torch.as_tensor(coo.data, dtype=dtype)
    return torch.sparse_coo_tensor(index, values, coo.shape, check_invariants=True).coalesce()


def _centres(world_2_cam: np.ndarray) -> np.ndarray:
    """(..., 3) camera centres of (..., 4, 4) world-to-camera transforms."""
    rotation, shift = world_2_cam[..., :3, :3], world_2_cam[..., :3, 3]
    return -np.einsum("...ji,...j->...i", rotation, shift)


def fitted_region(model: FlameModel, *, point_region: Literal["face", "head"]) -> np.ndarray:
    """(V,) bool: the vertices fused points may fit; raises `FlameModelError` for 'face' on a
    model without a face region (a FLAME file needs its `FLAME_masks.pkl`)."""
    region = np.zeros(model.num_vertices, dtype=bool)
    if point_region == "head":
        region[:] = True
    elif model.face_vertex_ids is None:
        raise FlameModelError(
            f"the tracker's point term fits the face region (point_region='face'), but the "
            f"FLAME model {model.source!r} has none: set `[faceanything] flame_masks` to "
            "FLAME's FLAME_masks.pkl (its 'face' region), or `[tracking] point_region = head` "
            "to fit the whole head"
        )
    else:
        region[model.face_vertex_ids] = True
    return region


def build_problem(
    *,
    model: FlameModel,
    timesteps: tuple[TimestepObservation, ...],
    config: TrackerConfig,
    dtype: torch.dtype,
) -> Problem:
    """Tensors of the usable `timesteps` and the reduced models the energies evaluate."""
    landmark_ids = np.unique(model.f[model.lmk_face_idx])
    region = fitted_region(model, point_region=config.point_region)
    subsets = {
        "landmark": restrict_model(model, landmark_ids),
        "fit": restrict_model(model, np.union1d(np.flatnonzero(region), landmark_ids)),
    }
    fit_ids = subsets["fit"].vertex_ids
    batch = pack_landmarks(timesteps, mediapipe_idx=model.lmk_mediapipe_idx)

    def tensor(values: object) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=dtype)

    lower, upper = np.array(config.jaw_limits).T
    laplacian = E.uniform_laplacian(model.f, model.num_vertices)[:, fit_ids]
    return Problem(
        keys=tuple(t.key for t in timesteps),
        model=model,
        subsets=subsets,
        layers={
            "landmark": FlameLayer(subsets["landmark"].model, dtype),
            "fit": FlameLayer(subsets["fit"].model, dtype),
            "full": FlameLayer(model, dtype),
        },
        corners={
            name: torch.as_tensor(s.local(model.f[model.lmk_face_idx]))
            for name, s in subsets.items()
        },
        faces=torch.as_tensor(subsets["fit"].faces),
        bary=tensor(model.lmk_b_coords),
        landmarks=batch,
        projection=tensor(batch.K @ batch.world_2_cam[..., :3, :]),
        centres=_centres(batch.world_2_cam),
        pixels=tensor(batch.pixels),
        points=tuple((t.points, t.normals) for t in timesteps),
        region=region,
        regressor=tensor(model.J_regressor[:, fit_ids]),
        laplacian=_torch_sparse(laplacian, dtype),
        limits={
            "jaw_pose": (tensor(lower), tensor(upper)),
            "eyes_pose": (tensor([-config.eye_limit] * 6), tensor([config.eye_limit] * 6)),
        },
    )


def initial_variables(problem: Problem, *, config: TrackerConfig) -> dict[str, torch.Tensor]:
    """Zero identity, expression and joint rotations; head pose from the landmarks."""
    model = problem.model
    corners = model.v_template[model.f[model.lmk_face_idx]]
    template_points = np.einsum("lk,lkc->lc", model.lmk_b_coords, corners)
    start = rigid_start(
        landmarks=problem.landmarks,
        template_points=template_points,
        root_joint=model.J_regressor[0] @ model.v_template,
        max_error_px=config.init_max_error_px,
    )
    t, dtype = len(problem.keys), problem.bary.dtype
    sizes = {"expr": model.num_expr, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6}
    values = {
        "shape": torch.zeros(model.num_shape, dtype=dtype),
        "static_offset": torch.zeros(len(problem.offset_ids), 3, dtype=dtype),
        "rotation": torch.as_tensor(start.rotation, dtype=dtype),
        "translation": torch.as_tensor(start.translation, dtype=dtype),
        **{name: torch.zeros(t, size, dtype=dtype) for name, size in sizes.items()},
    }
    return {name: value.requires_grad_(True) for name, value in values.items()}


def evaluate(
    problem: Problem,
    variables: dict[str, torch.Tensor],
    *,
    subset: Literal["landmark", "fit", "full"],
) -> torch.Tensor:
    """(T, n, 3) posed vertices of `subset` ('landmark', 'fit') or all of them ('full')."""
    offsets = variables["static_offset"]
    if subset == "full":
        full = torch.zeros(problem.num_vertices, 3, dtype=offsets.dtype)
        static = full.index_copy(0, torch.as_tensor(problem.offset_ids), offsets)
    else:
        rows = problem.subsets["fit"].local(problem.subsets[subset].vertex_ids)
        static = torch.cat([offsets[torch.as_tensor(rows)], problem.regressor @ offsets])
    params = FlameParams(
        shape=variables["shape"],
        static_offset=static,
        **{name: variables[name] for name in PER_TIMESTEP},
    )
    vertices = problem.layers[subset](params).vertices
    return vertices if subset == "full" else vertices[:, : problem.subsets[subset].num_kept]


def select_timesteps(
    problem: Problem, variables: dict[str, torch.Tensor], *, keep: list[int]
) -> tuple[Problem, dict[str, torch.Tensor]]:
    """The problem and variables of the timesteps `keep` (row indices), shared ones copied."""
    rows = torch.as_tensor(keep, dtype=torch.int64)
    smaller = dataclasses.replace(
        problem,
        keys=tuple(problem.keys[i] for i in keep),
        landmarks=LandmarkBatch(
            **{
                f.name: getattr(problem.landmarks, f.name)[keep]
                for f in dataclasses.fields(LandmarkBatch)
            }
        ),
        projection=problem.projection[rows],
        centres=problem.centres[keep],
        pixels=problem.pixels[rows],
        points=tuple(problem.points[i] for i in keep),
    )
    values = {
        name: (value.detach()[rows] if name in PER_TIMESTEP else value.detach()).clone()
        for name, value in variables.items()
    }
    return smaller, {name: value.requires_grad_(True) for name, value in values.items()}
