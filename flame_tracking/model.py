"""The FLAME model container: one home for FLAME's fields, shapes and validation.

Both a user's FLAME 2020/2023 file (see `loading.py`) and the embedded sample head model
(see `sample_model.py`) become a `FlameModel`, so every consumer runs one code path.
Units are metres; FLAME's five joints are global (0), neck (1), jaw (2), left eye (3),
right eye (4) with parents given by `kintree_table`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

NUM_JOINTS = 5
"""FLAME's joints: global, neck, jaw, left eye, right eye."""

JOINT_NAMES = ("global", "neck", "jaw", "eye_left", "eye_right")

NUM_POSE_FEATURES = 9 * (NUM_JOINTS - 1)
"""Pose correctives are driven by (R - I) of every joint but the root: 4 x 9 = 36."""


class FlameModelError(ValueError):
    """A FLAME file or array does not have the structure FLAME needs."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlameModel:
    """FLAME's arrays in metres, float64, as numpy (the torch layer converts once)."""

    v_template: np.ndarray
    """(V, 3) template vertices of the mean head."""
    f: np.ndarray
    """(F, 3) int64 triangle vertex indices."""
    shapedirs: np.ndarray
    """(V, 3, S) identity blend shapes."""
    exprdirs: np.ndarray
    """(V, 3, E) expression blend shapes."""
    posedirs: np.ndarray
    """(V, 3, 36) pose-corrective blend shapes, driven by (R - I) of joints 1..4."""
    J_regressor: np.ndarray
    """(5, V) dense joint regressor (rows sum to one)."""
    weights: np.ndarray
    """(V, 5) skinning weights (rows sum to one)."""
    kintree_table: np.ndarray
    """(2, 5) int64; row 0 holds each joint's parent (root's parent is any value)."""
    vt: np.ndarray | None = None
    """(T, 2) texture coordinates in [0, 1], v up (OBJ convention), or None."""
    ft: np.ndarray | None = None
    """(F, 3) int64 texture-coordinate indices per triangle corner, or None."""
    lmk_face_idx: np.ndarray | None = None
    """(L,) int64 triangle of each embedded MediaPipe landmark, or None."""
    lmk_b_coords: np.ndarray | None = None
    """(L, 3) barycentric coordinates of each embedded landmark in its triangle."""
    lmk_mediapipe_idx: np.ndarray | None = None
    """(L,) int64 index of each embedded landmark among MediaPipe's 478."""
    face_vertex_ids: np.ndarray | None = None
    """(N,) int64 vertices of the face region (points fit there), or None: FLAME's come from
    its `FLAME_masks.pkl` (`with_face_region`), the sample head's are built in."""
    source: str = ""
    """Where the model came from (a file path or 'sample'), for error messages and reports."""

    def __post_init__(self) -> None:
        validate(self)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def num_expr(self) -> int:
        return int(self.exprdirs.shape[2])

    @property
    def parents(self) -> np.ndarray:
        """(5,) parent of each joint, -1 for the root."""
        parents = self.kintree_table[0].astype(np.int64).copy()
        parents[0] = -1
        return parents

    def with_landmarks(
        self, *, lmk_face_idx: np.ndarray, lmk_b_coords: np.ndarray, lmk_mediapipe_idx: np.ndarray
    ) -> FlameModel:
        """The same model carrying a (new) MediaPipe landmark embedding."""
        return dataclasses.replace(
            self,
            lmk_face_idx=lmk_face_idx,
            lmk_b_coords=lmk_b_coords,
            lmk_mediapipe_idx=lmk_mediapipe_idx,
        )

    def with_face_region(self, *, face_vertex_ids: np.ndarray) -> FlameModel:
        """The same model with (N,) face-region vertex ids, e.g. FLAME's masks' 'face'."""
        return dataclasses.replace(self, face_vertex_ids=face_vertex_ids)


def _check(cond: bool, model: FlameModel, field: str, message: str) -> None:
    if not cond:
        where = f" in {model.source}" if model.source else ""
        raise FlameModelError(f"FLAME field '{field}'{where}: {message}")


def _shape_str(a: object) -> str:
    return str(getattr(a, "shape", type(a).__name__))


def validate(model: FlameModel) -> None:
    """Raise `FlameModelError` naming the field when an array has the wrong shape or values."""
    for name in ("v_template", "f", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights"):
        value = getattr(model, name)
        _check(isinstance(value, np.ndarray), model, name, f"expected an array, got {type(value)}")
    v = model.v_template
    _check(v.ndim == 2 and v.shape[1] == 3, model, "v_template", f"shape {v.shape}, want (V, 3)")
    n = v.shape[0]
    f = model.f
    _check(f.ndim == 2 and f.shape[1] == 3, model, "f", f"shape {f.shape}, want (F, 3)")
    _check(f.size > 0 and f.min() >= 0 and f.max() < n, model, "f", "indices outside [0, V)")
    for name in ("shapedirs", "exprdirs"):
        d = getattr(model, name)
        ok = d.ndim == 3 and d.shape[:2] == (n, 3)
        _check(ok, model, name, f"shape {d.shape}, want ({n}, 3, K)")
    p = model.posedirs
    ok = p.shape == (n, 3, NUM_POSE_FEATURES)
    _check(ok, model, "posedirs", f"shape {p.shape}, want ({n}, 3, {NUM_POSE_FEATURES})")
    j = model.J_regressor
    ok = j.shape == (NUM_JOINTS, n)
    _check(ok, model, "J_regressor", f"shape {j.shape}, want ({NUM_JOINTS}, {n})")
    w = model.weights
    _check(w.shape == (n, NUM_JOINTS), model, "weights", f"shape {w.shape}, want ({n}, 5)")
    _check(np.allclose(w.sum(1), 1.0, atol=1e-4), model, "weights", "rows must sum to 1")
    k = model.kintree_table
    ok = isinstance(k, np.ndarray) and k.shape == (2, NUM_JOINTS)
    _check(ok, model, "kintree_table", f"shape {_shape_str(k)}, want (2, 5)")
    _check(bool(np.all(k[0, 1:] < np.arange(1, NUM_JOINTS))), model, "kintree_table", "parents")
    if model.vt is not None or model.ft is not None:
        _check(model.vt is not None and model.ft is not None, model, "vt/ft", "need both")
        vt, ft = model.vt, model.ft
        _check(vt.ndim == 2 and vt.shape[1] == 2, model, "vt", f"shape {vt.shape}, want (T, 2)")
        _check(ft.shape == f.shape, model, "ft", f"shape {ft.shape}, want {f.shape}")
        _check(ft.min() >= 0 and ft.max() < len(vt), model, "ft", "indices outside [0, T)")
    if model.lmk_face_idx is not None:
        fi, bc = model.lmk_face_idx, model.lmk_b_coords
        _check(fi.ndim == 1, model, "lmk_face_idx", f"shape {fi.shape}, want (L,)")
        _check(fi.max() < len(f), model, "lmk_face_idx", "triangle index outside [0, F)")
        ok = bc is not None and bc.shape == (len(fi), 3)
        _check(ok, model, "lmk_b_coords", f"shape {_shape_str(bc)}, want ({len(fi)}, 3)")
        mi = model.lmk_mediapipe_idx
        ok = mi is not None and mi.shape == fi.shape and mi.max() < 478
        _check(ok, model, "lmk_mediapipe_idx", f"want ({len(fi)},) indices below 478")
    if model.face_vertex_ids is not None:
        ids = model.face_vertex_ids
        ok = isinstance(ids, np.ndarray) and ids.ndim == 1 and ids.size > 0
        ok = ok and ids.dtype.kind in "iu" and ids.min() >= 0 and ids.max() < n
        _check(ok, model, "face_vertex_ids", f"want (N,) indices in [0, {n}), N > 0")


_ARRAY_FIELDS = tuple(f.name for f in dataclasses.fields(FlameModel) if f.name not in ("source",))


def save_npz(model: FlameModel, path: Path) -> None:
    """Write the model as an uncompressed npz (byte-identical for identical arrays)."""
    arrays = {name: getattr(model, name) for name in _ARRAY_FIELDS}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_npz(path: Path) -> FlameModel:
    """Read a model written by `save_npz` (plain arrays only, no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FLAME model file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in _ARRAY_FIELDS if name in data}
    missing = [n for n in ("v_template", "f", "shapedirs") if n not in arrays]
    if missing:
        raise FlameModelError(f"{path}: missing FLAME fields {missing}")
    return FlameModel(**arrays, source=str(path))
