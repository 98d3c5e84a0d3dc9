"""FLAME evaluated at a subset of its vertices, exactly, through the same `FlameLayer`.

The tracker's energies read only some vertices (landmark triangles, the face region), and the
skinning cost grows with the vertex count. FLAME's joints are a linear function of the shaped
mesh, so five extra "joint carrier" vertices whose rest positions and blend shapes are the
regressed joints' (J_regressor @ template, J_regressor @ shapedirs, ...) let a smaller
`FlameModel` reproduce the full model's joints, and with them every kept vertex, to rounding.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flame_tracking.model import NUM_JOINTS, NUM_POSE_FEATURES, FlameModel


@dataclasses.dataclass(frozen=True, kw_only=True)
class VertexSubset:
    """A FLAME model cut down to some vertices; its last five vertices carry the joints."""

    vertex_ids: np.ndarray
    """(n,) sorted vertex ids of the full model kept, in this order."""
    model: FlameModel
    """The reduced model: n kept vertices, then 5 joint carriers (n + 5 vertices)."""
    faces: np.ndarray
    """(F', 3) the full model's triangles with all three corners kept, in local ids."""

    @property
    def num_kept(self) -> int:
        return len(self.vertex_ids)

    def local(self, ids: np.ndarray) -> np.ndarray:
        """Local indices of full-model vertex `ids` (all must be kept)."""
        where = np.searchsorted(self.vertex_ids, ids)
        where = np.clip(where, 0, self.num_kept - 1)
        if not np.array_equal(self.vertex_ids[where], ids):
            raise ValueError("vertex subset: some requested vertices were not kept")
        return where


def restrict_model(model: FlameModel, vertex_ids: np.ndarray) -> VertexSubset:
    """The subset of `model` holding `vertex_ids` (any order, duplicates allowed).

    Static offsets given to the reduced model need 5 extra rows for the carriers: the full
    model's J_regressor @ its (V, 3) offsets."""
    ids = np.unique(np.asarray(vertex_ids, dtype=np.int64))
    n = len(ids)
    regressor = model.J_regressor
    carriers = np.eye(NUM_JOINTS)
    j_reg = np.concatenate([np.zeros((NUM_JOINTS, n)), carriers], axis=1)
    weights = np.concatenate([model.weights[ids], carriers], axis=0)
    kept = np.zeros(model.num_vertices, dtype=bool)
    kept[ids] = True
    remap = np.full(model.num_vertices, -1, dtype=np.int64)
    remap[ids] = np.arange(n)
    faces = remap[model.f[kept[model.f].all(axis=1)]]
    # A FlameModel needs at least one face; a degenerate one on the carriers never renders.
    model_faces = faces if len(faces) else np.array([[n, n + 1, n + 2]])

    def rows(dirs: np.ndarray) -> np.ndarray:
        return np.concatenate([dirs[ids], np.einsum("jv,vck->jck", regressor, dirs)], axis=0)

    reduced = FlameModel(
        v_template=np.concatenate([model.v_template[ids], regressor @ model.v_template]),
        f=model_faces,
        shapedirs=rows(model.shapedirs),
        exprdirs=rows(model.exprdirs),
        posedirs=np.concatenate(
            [model.posedirs[ids], np.zeros((NUM_JOINTS, 3, NUM_POSE_FEATURES))], axis=0
        ),
        J_regressor=j_reg,
        weights=weights,
        kintree_table=model.kintree_table,
        source=f"{model.source} (subset of {n} vertices)",
    )
    return VertexSubset(vertex_ids=ids, model=reduced, faces=faces)
