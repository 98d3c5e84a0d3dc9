"""FLAME files in their real on-disk formats go through `load_flame` / `load_flame_masks`;
hostile ones do not run.

FLAME 2020's `generic_model.pkl` is a Python 2 pickle of chumpy objects and an old-scipy
sparse matrix, and `FLAME_masks.pkl` a Python 2 pickle of a dict of int arrays. Without
chumpy or Python 2 we write the same opcodes: classes named `chumpy.ch.Ch` and
`scipy.sparse.csc.csc_matrix` carrying the state dicts those libraries pickle, and byte
strings as Python 2 `str` opcodes.
"""

from __future__ import annotations

import builtins
import codecs
import dataclasses
import os
import pickle
import struct
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.loading import (
    UnsafePickleError,
    load_flame,
    load_flame_masks,
    load_landmark_embedding,
    save_landmark_embedding,
)
from flame_tracking.model import FlameModel, FlameModelError


class FakeCh:
    """Pickles as chumpy.ch.Ch does: its `__dict__` without the '_parents'/'_cache' entries."""

    __module__, __qualname__ = "chumpy.ch", "Ch"

    def __init__(self, x: np.ndarray) -> None:
        self.x = np.asarray(x, dtype=np.float64)
        self._dirty_vars: set[str] = set()
        self._itr = None
        self._depends_on_deps: dict[str, object] = {}
        self._make_dense = False
        self._make_sparse = False


class FakeOldCsc:
    """Pickles as scipy.sparse.csc.csc_matrix did under Python 2: its `__dict__`."""

    __module__, __qualname__ = "scipy.sparse.csc", "csc_matrix"

    def __init__(self, dense: np.ndarray) -> None:
        m = sp.csc_matrix(dense)
        self._shape = m.shape
        self.maxprint = 50
        self.indices, self.indptr, self.data = m.indices, m.indptr, m.data


class Py2Pickler(pickle._Pickler):
    """Writes `bytes`/`str` as Python 2 `str` opcodes and numpy's 1.x module names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if not self.bin:
            self.write(pickle.STRING + b"'" + codecs.escape_encode(raw)[0] + b"'\n")
        elif len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "")
        if not module.startswith("numpy._core."):
            return super().save_global(obj, name)
        old = module.replace("numpy._core.", "numpy.core.")  # numpy 1.x wrote numpy.core
        self.write(pickle.GLOBAL + f"{old}\n{obj.__qualname__}\n".encode())
        self.memoize(obj)


@pytest.fixture
def py2_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make FakeCh / FakeOldCsc importable as chumpy.ch.Ch / scipy.sparse.csc.csc_matrix."""
    for cls in (FakeCh, FakeOldCsc):
        fake = types.ModuleType(cls.__module__)
        setattr(fake, cls.__qualname__, cls)
        monkeypatch.setitem(sys.modules, cls.__module__, fake)
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))


def flame_fields(model: FlameModel) -> dict[str, np.ndarray]:
    """FLAME's own layout: shapedirs (V, 3, 400) = 300 shape then 100 expression, zero padded."""
    n = model.num_vertices
    assert model.num_shape <= 300 and model.num_expr <= 100
    shapedirs = np.zeros((n, 3, 400))
    shapedirs[..., : model.num_shape] = model.shapedirs
    shapedirs[..., 300 : 300 + model.num_expr] = model.exprdirs
    kintree = model.kintree_table.copy()
    kintree[0, 0] = 4294967295  # FLAME's root parent
    return {
        "v_template": model.v_template,
        "shapedirs": shapedirs,
        "weights": model.weights,
        "J": model.J_regressor @ model.v_template,
        "f": model.f.astype(np.uint32),
        "posedirs": model.posedirs,
        "J_regressor": model.J_regressor,
        "kintree_table": kintree,
    }


def write_flame2020(model: FlameModel, path: Path, *, protocol: int) -> None:
    fields = flame_fields(model)
    payload: dict[str, object] = {
        k: FakeCh(fields[k]) for k in ("v_template", "shapedirs", "weights", "J")
    }
    payload |= {k: fields[k] for k in ("f", "posedirs", "kintree_table")}
    payload |= {
        "J_regressor": FakeOldCsc(fields["J_regressor"]),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    with path.open("wb") as fh:
        Py2Pickler(fh, protocol=protocol).dump(payload)


def write_pickle(payload: object, path: Path, *, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    return path


def assert_same_vertices(original: FlameModel, loaded: FlameModel) -> None:
    """Random values of every FLAME parameter give the same vertices (float64, 1e-10)."""
    g = torch.Generator().manual_seed(0)
    sizes = {"shape": (original.num_shape, 1.0), "expr": (original.num_expr, 1.0)}
    sizes |= {"rotation": (3, 0.3), "translation": (3, 0.1), "neck_pose": (3, 0.2)}
    sizes |= {"jaw_pose": (3, 0.2), "eyes_pose": (6, 0.2)}
    params = {k: torch.randn(3, n, generator=g).double() * s for k, (n, s) in sizes.items()}
    offset = torch.randn(3, original.num_vertices, 3, generator=g).double() * 1e-3
    flame = FlameParams(**params, static_offset=offset)
    want = FlameLayer(original, dtype=torch.float64)(flame).vertices
    got = FlameLayer(loaded, dtype=torch.float64)(flame).vertices
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("protocol", [2, pytest.param(0, marks=pytest.mark.slow)])  # 0: 300 MB
def test_flame2020_pickle_round_trip(
    sample_model: FlameModel, tmp_path: Path, py2_classes: None, protocol: int
) -> None:
    path = tmp_path / "generic_model.pkl"
    write_flame2020(sample_model, path, protocol=protocol)
    loaded = load_flame(path, num_shape=sample_model.num_shape, num_expr=sample_model.num_expr)
    assert loaded.source == str(path)
    for name in ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights", "f"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(sample_model, name), name)
    np.testing.assert_array_equal(loaded.parents, sample_model.parents)
    assert_same_vertices(sample_model, loaded)
    full = load_flame(path)
    assert (full.num_shape, full.num_expr) == (300, 100)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_flame2023_pickle_round_trip(
    sample_model: FlameModel, tmp_path: Path, protocol: int
) -> None:
    fields = flame_fields(sample_model)
    fields["J_regressor"] = sp.csc_matrix(fields["J_regressor"])
    path = write_pickle(fields, tmp_path / "flame2023.pkl", protocol=protocol)
    loaded = load_flame(path, num_shape=sample_model.num_shape, num_expr=sample_model.num_expr)
    assert_same_vertices(sample_model, loaded)


def test_dense_regressor_and_fewer_components(sample_model: FlameModel, tmp_path: Path) -> None:
    path = write_pickle(flame_fields(sample_model), tmp_path / "flame2023.pkl")
    loaded = load_flame(path, num_shape=3, num_expr=2)
    assert (loaded.num_shape, loaded.num_expr) == (3, 2)
    np.testing.assert_array_equal(loaded.J_regressor, sample_model.J_regressor)
    np.testing.assert_array_equal(loaded.exprdirs, sample_model.exprdirs[..., :2])


class RunsCode:
    """Unpickling calls `call[0](*call[1])`: what a hostile file would do."""

    def __init__(self, call: tuple[object, tuple[object, ...]]) -> None:
        self.call = call

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.call


@pytest.mark.parametrize("gadget", ["os.system", "builtins.exec", "inside_chumpy"])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_code_in_a_pickle_is_refused(
    tmp_path: Path, py2_classes: None, gadget: str, protocol: int
) -> None:
    marker = tmp_path / "MARKER"
    if gadget == "builtins.exec":
        call: tuple[object, tuple[object, ...]] = (builtins.exec, (f"open({str(marker)!r}, 'w')",))
    else:
        call = (os.system, (f"touch '{marker}'",))
    value: object = RunsCode(call)
    if gadget == "inside_chumpy":
        value = FakeCh(np.zeros(3))
        value.x = RunsCode(call)
    path = write_pickle({"v_template": value}, tmp_path / "generic_model.pkl", protocol=protocol)
    with pytest.raises(UnsafePickleError) as err:
        load_flame(path)
    message = str(err.value)
    assert str(path) in message
    assert ("exec" if gadget == "builtins.exec" else "system") in message
    assert isinstance(err.value, pickle.UnpicklingError)
    assert isinstance(err.value, FlameModelError)
    assert not marker.exists()


def test_reconstructor_only_rebuilds_chumpy_and_sparse(tmp_path: Path) -> None:
    """copy_reg._reconstructor(set, set, [...]) would call set's constructor: refused."""
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(b"ccopy_reg\n_reconstructor\n(c__builtin__\nset\nc__builtin__\nset\n(lp0\ntR.")
    with pytest.raises(FlameModelError, match="_reconstructor") as err:
        load_flame(path)
    assert str(path) in str(err.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "generic_model.pkl"
    with pytest.raises(FileNotFoundError, match=str(path)):
        load_flame(path)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (lambda fields: [1, 2, 3], "list"),
        (lambda fields: {k: v for k, v in fields.items() if k != "v_template"}, "v_template"),
        (lambda fields: fields | {"v_template": "not an array"}, "v_template"),
    ],
    ids=["list", "missing_v_template", "string_v_template"],
)
def test_not_a_flame_model(
    sample_model: FlameModel, tmp_path: Path, payload: Callable[[dict], object], field: str
) -> None:
    path = write_pickle(payload(flame_fields(sample_model)), tmp_path / "generic_model.pkl")
    with pytest.raises(FlameModelError) as err:
        load_flame(path)
    assert str(path) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("shapedirs", lambda a: a[..., :10]),
        ("v_template", lambda a: a[:, :2]),
        ("weights", lambda a: a[:-1]),
        ("posedirs", lambda a: a[..., :30]),
    ],
)
def test_wrong_shape_names_file_and_field(
    sample_model: FlameModel, tmp_path: Path, field: str, bad: Callable[[np.ndarray], np.ndarray]
) -> None:
    fields = flame_fields(sample_model)
    fields[field] = bad(fields[field])
    path = write_pickle(fields, tmp_path / "generic_model.pkl")
    with pytest.raises(FlameModelError) as err:
        load_flame(path)
    assert str(path) in str(err.value) and f"'{field}'" in str(err.value)


def test_garbage_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(FlameModelError, match="generic_model.pkl"):
        load_flame(path)


# ---------------------------------------------------------------- FLAME_masks.pkl

FLAME_REGIONS = (
    "face",
    "scalp",
    "neck",
    "eye_region",
    "boundary",
    "left_eyeball",
    "right_eyeball",
    "lips",
    "nose",
    "forehead",
    "left_ear",
    "right_ear",
    "left_eye_region",
    "right_eye_region",
)
"""The regions of FLAME 2020/2023's FLAME_masks.pkl, in its order."""


def sample_masks(model: FlameModel) -> dict[str, np.ndarray]:
    """FLAME's regions cut from the sample head (int64, as FLAME's file holds them): 'face' is
    the sample's own face region, eyeballs are the vertices skinned to one eye joint, the rest
    are boxes on the template."""
    x, y, z = model.v_template.T
    eye_left, eye_right = model.weights[:, 3] > 0.999, model.weights[:, 4] > 0.999
    head = ~(eye_left | eye_right)
    face = np.zeros(model.num_vertices, dtype=bool)
    face[model.face_vertex_ids] = True
    boundary = np.zeros(model.num_vertices, dtype=bool)  # face corners of mixed triangles
    boundary[model.f[face[model.f].any(1) & ~face[model.f].all(1)]] = True
    eyes = face & (np.abs(x) > 0.01) & (np.abs(x) < 0.06) & (y > 0.01) & (y < 0.05)
    ear = head & ~face & (np.abs(x) > 0.07) & (np.abs(z) < 0.03) & (np.abs(y) < 0.04)
    regions = {
        "face": face,
        "scalp": head & ~face & (y > 0.0),
        "neck": head & (y < -0.11),
        "eye_region": eyes,
        "boundary": face & boundary,
        "left_eyeball": eye_left,
        "right_eyeball": eye_right,
        "lips": face & (np.abs(x) < 0.03) & (y > -0.055) & (y < -0.025),
        "nose": face & (np.abs(x) < 0.02) & (np.abs(y) < 0.03) & (z > 0.09),
        "forehead": face & (y > 0.06),
        "left_ear": ear & (x > 0),
        "right_ear": ear & (x < 0),
        "left_eye_region": eyes & (x > 0),
        "right_eye_region": eyes & (x < 0),
    }
    assert tuple(regions) == FLAME_REGIONS and all(r.any() for r in regions.values())
    return {name: np.flatnonzero(mask).astype(np.int64) for name, mask in regions.items()}


def write_flame_masks(masks: dict[str, object], path: Path, *, python2: bool = True) -> Path:
    """FLAME's format: a protocol 2 pickle of the dict; `python2` writes it as Python 2 did
    (region names and array bytes as `str` opcodes, numpy.core module names)."""
    with path.open("wb") as fh:
        (Py2Pickler if python2 else pickle.Pickler)(fh, protocol=2).dump(masks)
    return path


@pytest.mark.parametrize("python2", [True, False], ids=["python2", "python3"])
def test_flame_masks_round_trip(sample_model: FlameModel, tmp_path: Path, python2: bool) -> None:
    masks = sample_masks(sample_model)
    path = write_flame_masks(masks, tmp_path / "FLAME_masks.pkl", python2=python2)
    raw = path.read_bytes()
    assert b"numpy.core.multiarray" in raw if python2 else b"_codecs" in raw
    assert raw[:2] == b"\x80\x02"  # protocol 2, as FLAME's file
    loaded = load_flame_masks(path, model=sample_model)
    assert tuple(loaded) == FLAME_REGIONS
    for name, ids in masks.items():
        assert loaded[name].dtype == np.int64
        np.testing.assert_array_equal(loaded[name], ids, name)
    np.testing.assert_array_equal(loaded["face"], sample_model.face_vertex_ids)


def test_masks_give_a_loaded_flame_model_its_face_region(
    sample_model: FlameModel, tmp_path: Path
) -> None:
    """A FLAME file has no face region of its own; the masks' 'face' becomes it."""
    fields = flame_fields(sample_model)
    flame = load_flame(write_pickle(fields, tmp_path / "flame2023.pkl", protocol=2))
    assert flame.face_vertex_ids is None
    small = {"face": np.array([40, 7, 3, 7], dtype=np.uint32), "scalp": np.arange(100, 120)}
    masks = load_flame_masks(write_flame_masks(small, tmp_path / "FLAME_masks.pkl"), model=flame)
    np.testing.assert_array_equal(masks["face"], [3, 7, 40])  # sorted, unique, int64
    with_face = flame.with_face_region(face_vertex_ids=masks["face"])
    np.testing.assert_array_equal(with_face.face_vertex_ids, [3, 7, 40])
    assert with_face.source == flame.source
    with pytest.raises(FlameModelError, match="face_vertex_ids"):
        flame.with_face_region(face_vertex_ids=np.array([0, flame.num_vertices]))


@pytest.mark.parametrize("protocol", [0, 2])
def test_code_in_a_masks_pickle_is_refused(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "MARKER"
    masks = {"face": np.arange(3), "scalp": RunsCode((os.system, (f"touch '{marker}'",)))}
    path = write_pickle(masks, tmp_path / "FLAME_masks.pkl", protocol=protocol)
    with pytest.raises(UnsafePickleError) as err:
        load_flame_masks(path)
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


def test_missing_masks_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "FLAME_masks.pkl"
    with pytest.raises(FileNotFoundError, match=str(path)):
        load_flame_masks(path)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ([np.arange(3)], "list"),
        ({"scalp": np.arange(3), "neck": np.arange(2)}, "'face' region; regions: scalp, neck"),
        ({"face": np.zeros(0, dtype=np.int64)}, "'face' region"),
        ({"face": np.arange(3.0)}, "region 'face' is float64"),
        ({"face": np.arange(6).reshape(2, 3)}, "region 'face' is int64 (2, 3)"),
        ({"face": np.array([-1, 2])}, "region 'face' has negative"),
        ({"face": np.arange(3), "nose": [1, 2]}, "region 'nose' is list"),
        ({"face": np.arange(3), 7: np.arange(3)}, "region name 7"),
    ],
    ids=["list", "no_face", "empty_face", "floats", "2d", "negative", "not_array", "int_name"],
)
def test_not_flame_masks(tmp_path: Path, payload: object, words: str) -> None:
    path = write_pickle(payload, tmp_path / "FLAME_masks.pkl", protocol=2)
    with pytest.raises(FlameModelError) as err:
        load_flame_masks(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_masks_of_another_model_are_refused(sample_model: FlameModel, tmp_path: Path) -> None:
    """FLAME's masks (5023 vertices) beside a smaller model: indices past its vertices."""
    masks = {"face": np.arange(10), "neck": np.array([5, sample_model.num_vertices + 1])}
    path = write_flame_masks(masks, tmp_path / "FLAME_masks.pkl")
    assert len(load_flame_masks(path)["neck"]) == 2  # no model: nothing to check against
    small = dataclasses.replace(sample_model, face_vertex_ids=None)
    with pytest.raises(FlameModelError) as err:
        load_flame_masks(path, model=small)
    message = str(err.value)
    assert str(path) in message and "region 'neck'" in message
    assert f"{sample_model.num_vertices} vertices" in message


@pytest.fixture
def embedding(sample_model: FlameModel) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 105  # FLAME's MediaPipe embedding has 105 landmarks
    b = rng.random((n, 3))
    return {
        "lmk_face_idx": rng.integers(0, len(sample_model.f), n),
        "lmk_b_coords": b / b.sum(1, keepdims=True),
        "lmk_mediapipe_idx": rng.choice(478, n, replace=False),
    }


def test_landmark_embedding_round_trip(
    sample_model: FlameModel, tmp_path: Path, embedding: dict[str, np.ndarray]
) -> None:
    path = tmp_path / "mediapipe_landmark_embedding.npz"
    save_landmark_embedding(path, **embedding)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["landmark_indices", "lmk_b_coords", "lmk_face_idx"]
        np.testing.assert_array_equal(data["landmark_indices"], embedding["lmk_mediapipe_idx"])
    loaded = load_landmark_embedding(path)
    assert loaded.keys() == embedding.keys()
    for key, value in embedding.items():
        np.testing.assert_array_equal(loaded[key], value, key)
    assert sample_model.with_landmarks(**loaded).lmk_face_idx is loaded["lmk_face_idx"]


def test_landmark_embedding_in_flame_written_format(
    tmp_path: Path, embedding: dict[str, np.ndarray]
) -> None:
    path = tmp_path / "mediapipe_landmark_embedding.npz"
    np.savez(
        path,
        lmk_face_idx=embedding["lmk_face_idx"].astype(np.int32),
        lmk_b_coords=embedding["lmk_b_coords"].astype(np.float32),
        landmark_indices=embedding["lmk_mediapipe_idx"],
    )
    loaded = load_landmark_embedding(path)
    assert loaded["lmk_face_idx"].dtype == np.int64
    np.testing.assert_allclose(loaded["lmk_b_coords"], embedding["lmk_b_coords"], atol=1e-7)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"landmark_indices": None}, "landmark_indices"),
        ({"landmark_indices": np.full(105, 478)}, "landmark_indices"),
        ({"lmk_b_coords": np.zeros((105, 2))}, "lmk_b_coords"),
        ({"lmk_face_idx": np.array([{"pickled": 1}] * 105, dtype=object)}, "lmk_face_idx"),
    ],
    ids=["missing", "index_478", "b_coords_shape", "object_array"],
)
def test_bad_landmark_embedding(
    tmp_path: Path, embedding: dict[str, np.ndarray], change: dict[str, object], field: str
) -> None:
    arrays: dict[str, object] = {
        "lmk_face_idx": embedding["lmk_face_idx"],
        "lmk_b_coords": embedding["lmk_b_coords"],
        "landmark_indices": embedding["lmk_mediapipe_idx"],
    } | change
    path = tmp_path / "mediapipe_landmark_embedding.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(FlameModelError) as err:
        load_landmark_embedding(path)
    assert str(path) in str(err.value) and field in str(err.value)
