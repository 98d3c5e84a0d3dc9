"""Load a user's FLAME 2020/2023 pickle, its face-region masks and MediaPipe landmark embedding
without running code.

FLAME ships as a pickle (licensed, not bundled). FLAME 2020's `generic_model.pkl` is a
Python 2 pickle whose arrays are chumpy `Ch` objects; FLAME 2023's is a Python 3 pickle
(plain arrays or the same objects; both load). A plain `pickle.load` would run whatever the
file names, so the unpickler below only resolves an allow-list of globals (numpy arrays, scipy
sparse matrices, stand-ins for chumpy's array classes) and refuses every other one before
anything from the file is called. FLAME's `FLAME_masks.pkl` (region name -> vertex indices, a
Python 2 pickle of plain arrays) goes through the same unpickler.
"""

from __future__ import annotations

import copyreg
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy._core.multiarray import _reconstruct, scalar
from numpy._core.numeric import _frombuffer

from flame_tracking.model import FlameModel, FlameModelError

FLAME_NUM_SHAPE = 300
"""Identity components at the front of FLAME's (V, 3, 400) `shapedirs`."""
FLAME_NUM_EXPR = 100
"""Expression components after them."""
MEDIAPIPE_NUM_LANDMARKS = 478

_REQUIRED_FIELDS = (
    "v_template",
    "f",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "weights",
    "kintree_table",
)

_EMBEDDING_KEYS = {
    "lmk_face_idx": "lmk_face_idx",
    "lmk_b_coords": "lmk_b_coords",
    "landmark_indices": "lmk_mediapipe_idx",
}
"""FLAME's npz key -> the `FlameModel.with_landmarks` argument it feeds."""


class UnsafePickleError(FlameModelError, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing from the file was called."""


class _PickledState:
    """Keeps the state dict an object was pickled with, instead of rebuilding the object."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{type(self).__name__}: state is not a dict")
        self.state = state


class _ChumpyCh(_PickledState):
    """chumpy.ch.Ch: its `__getstate__` is its `__dict__`, and the array lives under 'x'."""


class _ChumpySelect(_PickledState):
    """chumpy.reordering.Select: the value is a.ravel()[idxs].reshape(preferred_shape)."""


class _SparseCsc(_PickledState):
    """scipy csc matrix/array: data, indices, indptr and _shape in the state dict."""


class _SparseCsr(_PickledState):
    """scipy csr matrix/array: data, indices, indptr and _shape in the state dict."""


class _SparseCoo(_PickledState):
    """scipy coo matrix/array: data and coords (or row/col in old scipy) and _shape."""


_STAND_INS = (_ChumpyCh, _ChumpySelect, _SparseCsc, _SparseCsr, _SparseCoo)


def _reconstructor(cls: type, base: type, state: object) -> object:
    """`copyreg._reconstructor` as pickle protocols 0/1 use it, limited to our stand-ins."""
    if cls not in _STAND_INS or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copyreg._reconstructor refused for {cls!r}({base!r})")
    return copyreg._reconstructor(cls, base, state)


def _codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    """Python 3 writes bytes as `_codecs.encode(str, 'latin1')` in protocols below 3."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only as latin1 bytes")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    """Python 3 writes b'' as `bytes()` in protocols below 3 (an empty array's data)."""
    if args:
        raise pickle.UnpicklingError("bytes(...) is allowed only without arguments")
    return b""


def _allow_list() -> dict[tuple[str, str], Any]:
    """The globals FLAME files name, in Python 2/3 and old/new numpy and scipy spellings."""
    allowed: dict[tuple[str, str], Any] = {
        ("chumpy.ch", "Ch"): _ChumpyCh,
        ("chumpy.reordering", "Select"): _ChumpySelect,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    for builtins in ("__builtin__", "builtins"):  # Python 2 and 3 names
        allowed[(builtins, "object")] = object
        allowed[(builtins, "set")] = set
        allowed[(builtins, "frozenset")] = frozenset
        allowed[(builtins, "bytes")] = _empty_bytes
    for copyreg_module in ("copy_reg", "copyreg"):
        allowed[(copyreg_module, "_reconstructor")] = _reconstructor
    for fmt, cls in (("csc", _SparseCsc), ("csr", _SparseCsr), ("coo", _SparseCoo)):
        for module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):  # old and new scipy
            allowed[(module, f"{fmt}_matrix")] = cls
            allowed[(module, f"{fmt}_array")] = cls
    return allowed


_ALLOWED_GLOBALS = _allow_list()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED_GLOBALS`; any other global stops loading before it is called."""

    def __init__(self, file: Any, *, source: str) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 str -> latin1 keeps array bytes
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {self.source}: it names the global '{module}.{name}', "
                "which is not on the allow-list for FLAME files (numpy arrays, scipy sparse "
                "matrices, chumpy Ch); nothing from the file was run"
            ) from None


def _unpickle(path: Path) -> object:
    try:
        with path.open("rb") as fh:
            return _RestrictedUnpickler(fh, source=str(path)).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise FlameModelError(f"{path}: not a readable FLAME pickle ({exc})") from exc


def _sparse_to_dense(value: _PickledState) -> np.ndarray:
    s = value.state
    shape = tuple(s["_shape"] if "_shape" in s else s["shape"])
    if isinstance(value, _SparseCoo):
        row, col = s["coords"] if "coords" in s else (s["row"], s["col"])
        return sp.coo_matrix((s["data"], (row, col)), shape=shape).toarray()
    cls = sp.csc_matrix if isinstance(value, _SparseCsc) else sp.csr_matrix
    return cls((s["data"], s["indices"], s["indptr"]), shape=shape).toarray()


def _to_array(value: object, *, field: str, source: str) -> np.ndarray:
    """The numeric array behind a pickled value (ndarray, chumpy object or sparse matrix)."""
    where = f"FLAME field '{field}' in {source}"
    try:
        if isinstance(value, _ChumpyCh):
            value = _to_array(value.state["x"], field=field, source=source)
        elif isinstance(value, _ChumpySelect):
            s = value.state
            a = _to_array(s["a"], field=field, source=source)
            value = a.ravel()[np.asarray(s["idxs"])].reshape(s["preferred_shape"])
        elif isinstance(value, _PickledState):
            value = _sparse_to_dense(value)
    except FlameModelError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise FlameModelError(f"{where}: malformed {type(value).__name__} ({exc!r})") from exc
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        kind = getattr(value, "dtype", type(value).__name__)
        raise FlameModelError(f"{where}: expected a numeric array, got {kind}")
    return value


def load_flame(
    path: Path | str, *, num_shape: int = FLAME_NUM_SHAPE, num_expr: int = FLAME_NUM_EXPR
) -> FlameModel:
    """Read a FLAME 2020/2023 pickle into a `FlameModel`, keeping the first components.

    Args:
        path: the user's `generic_model.pkl` / `flame2023.pkl`.
        num_shape: identity components kept, at most 300.
        num_expr: expression components kept, at most 100.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FLAME model file not found: {path}")
    if not (1 <= num_shape <= FLAME_NUM_SHAPE and 1 <= num_expr <= FLAME_NUM_EXPR):
        raise ValueError(
            f"num_shape={num_shape}, num_expr={num_expr}: FLAME has "
            f"{FLAME_NUM_SHAPE} shape and {FLAME_NUM_EXPR} expression components"
        )
    raw = _unpickle(path)
    if not isinstance(raw, dict):
        raise FlameModelError(
            f"{path}: not a FLAME model: the pickle holds a {type(raw).__name__}, "
            "not a dict of FLAME fields"
        )
    missing = [name for name in _REQUIRED_FIELDS if name not in raw]
    if missing:
        raise FlameModelError(f"{path}: not a FLAME model: missing field(s) {', '.join(missing)}")
    a = {name: _to_array(raw[name], field=name, source=str(path)) for name in _REQUIRED_FIELDS}
    dirs = a["shapedirs"]
    total = FLAME_NUM_SHAPE + FLAME_NUM_EXPR
    if dirs.ndim != 3 or dirs.shape[2] != total:
        raise FlameModelError(
            f"FLAME field 'shapedirs' in {path}: shape {dirs.shape}, want (V, 3, {total}) "
            f"= {FLAME_NUM_SHAPE} shape then {FLAME_NUM_EXPR} expression components"
        )
    f64 = np.float64
    return FlameModel(
        v_template=a["v_template"].astype(f64),
        f=a["f"].astype(np.int64),
        shapedirs=dirs[..., :num_shape].astype(f64),
        exprdirs=dirs[..., FLAME_NUM_SHAPE : FLAME_NUM_SHAPE + num_expr].astype(f64),
        posedirs=a["posedirs"].astype(f64),
        J_regressor=a["J_regressor"].astype(f64),
        weights=a["weights"].astype(f64),
        kintree_table=a["kintree_table"].astype(np.int64),
        source=str(path),
    )


def _region_indices(name: object, value: object, *, source: str) -> np.ndarray:
    """One region's vertex indices as sorted, unique int64, or `FlameModelError` naming it."""
    if not isinstance(name, str):
        raise FlameModelError(f"{source}: not FLAME's masks: region name {name!r} is not text")
    kind = getattr(value, "dtype", type(value).__name__)
    shape = getattr(value, "shape", "")
    ok = isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu"
    if not ok:
        raise FlameModelError(f"{source}: region '{name}' is {kind} {shape}, want (N,) indices")
    if value.size and value.min() < 0:
        raise FlameModelError(f"{source}: region '{name}' has negative vertex indices")
    return np.unique(value).astype(np.int64)


def load_flame_masks(path: Path | str, *, model: FlameModel | None = None) -> dict[str, np.ndarray]:
    """Read FLAME's `FLAME_masks.pkl`: region name -> (N,) sorted vertex ids (int64).

    FLAME's file holds face, scalp, neck, eye_region, boundary, left/right_eyeball, lips,
    nose, forehead, left/right_ear and left/right_eye_region; the tracker needs 'face'.

    Args:
        path: the masks pickle (read through the restricted unpickler, as `load_flame`).
        model: when given, every index must be one of its vertices (masks of another
            model, e.g. FLAME's beside the sample head, are refused).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FLAME masks file not found: {path}")
    raw = _unpickle(path)
    if not isinstance(raw, dict):
        raise FlameModelError(
            f"{path}: not FLAME's masks: the pickle holds a {type(raw).__name__}, "
            "not a dict of region name -> vertex indices"
        )
    masks = {name: _region_indices(name, value, source=str(path)) for name, value in raw.items()}
    if "face" not in masks or not len(masks["face"]):
        regions = ", ".join(masks) or "none"
        raise FlameModelError(f"{path}: no (or an empty) 'face' region; regions: {regions}")
    if model is not None:
        for name, ids in masks.items():
            if len(ids) and ids[-1] >= model.num_vertices:
                raise FlameModelError(
                    f"{path}: region '{name}' holds vertex {ids[-1]}, but the FLAME model "
                    f"{model.source or ''} has {model.num_vertices} vertices: these masks "
                    "belong to another model"
                )
    return masks


def _checked_embedding(arrays: dict[str, np.ndarray], *, source: str) -> dict[str, np.ndarray]:
    """The embedding as int64/float64 arrays, or `FlameModelError` naming the field."""
    face_idx = np.asarray(arrays["lmk_face_idx"])
    b_coords = np.asarray(arrays["lmk_b_coords"])
    mp_idx = np.asarray(arrays["lmk_mediapipe_idx"])

    def fail(field: str, message: str) -> FlameModelError:
        return FlameModelError(f"landmark embedding field '{field}' in {source}: {message}")

    if face_idx.ndim != 1 or face_idx.dtype.kind not in "iu" or (face_idx < 0).any():
        raise fail("lmk_face_idx", f"{face_idx.dtype} {face_idx.shape}, want (L,) triangle ids")
    n = len(face_idx)
    if b_coords.shape != (n, 3) or b_coords.dtype.kind != "f":
        raise fail("lmk_b_coords", f"{b_coords.dtype} {b_coords.shape}, want ({n}, 3) floats")
    bad = mp_idx.shape != (n,) or mp_idx.dtype.kind not in "iu"
    if bad or (mp_idx < 0).any() or (mp_idx >= MEDIAPIPE_NUM_LANDMARKS).any():
        want = f"want ({n},) indices below {MEDIAPIPE_NUM_LANDMARKS}"
        raise fail("landmark_indices", f"(lmk_mediapipe_idx) {mp_idx.dtype} {mp_idx.shape}, {want}")
    return {
        "lmk_face_idx": face_idx.astype(np.int64),
        "lmk_b_coords": b_coords.astype(np.float64),
        "lmk_mediapipe_idx": mp_idx.astype(np.int64),
    }


def load_landmark_embedding(path: Path | str) -> dict[str, np.ndarray]:
    """Read FLAME's `mediapipe_landmark_embedding.npz` (plain arrays, pickle refused).

    Returns the keyword arguments of `FlameModel.with_landmarks`: `lmk_face_idx` (L,),
    `lmk_b_coords` (L, 3) and `lmk_mediapipe_idx` (L,) (FLAME's `landmark_indices`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark embedding file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise FlameModelError(f"{path}: not a readable landmark embedding npz ({exc})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise FlameModelError(f"{path}: not a landmark embedding npz (a single array)")
    with data:
        missing = [key for key in _EMBEDDING_KEYS if key not in data.files]
        if missing:
            raise FlameModelError(f"{path}: landmark embedding misses field(s) {missing}")
        arrays = {}
        for theirs, ours in _EMBEDDING_KEYS.items():
            try:
                arrays[ours] = data[theirs]
            except ValueError as exc:  # an object array needs pickle, which stays off
                msg = f"landmark embedding field '{theirs}' in {path}: pickled data ({exc})"
                raise FlameModelError(msg) from exc
    return _checked_embedding(arrays, source=str(path))


def save_landmark_embedding(
    path: Path | str,
    *,
    lmk_face_idx: np.ndarray,
    lmk_b_coords: np.ndarray,
    lmk_mediapipe_idx: np.ndarray,
) -> None:
    """Write an embedding in FLAME's npz format (temporary file renamed into place)."""
    path = Path(path)
    ours = {
        "lmk_face_idx": lmk_face_idx,
        "lmk_b_coords": lmk_b_coords,
        "lmk_mediapipe_idx": lmk_mediapipe_idx,
    }
    checked = _checked_embedding(ours, source=str(path))
    theirs = {key: checked[name] for key, name in _EMBEDDING_KEYS.items()}
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:  # a file object keeps numpy from appending '.npz'
        np.savez(fh, **theirs)
    os.replace(tmp, path)
