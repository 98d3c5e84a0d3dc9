"""The embedded sample head model, measured: size, closure, rig behaviour and UV layout."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.model import FlameModel, load_npz, save_npz
from flame_tracking.sample_model import (
    EXPRESSION_NAMES,
    build_sample_model,
    face_uv,
    template_keypoints,
)

REQUIRED_KEYPOINTS = (
    "eye_left",
    "eye_right",
    "nose_tip",
    "mouth_left",
    "mouth_right",
    "mouth_center",
    "chin",
    "forehead",
)
EYE_LEFT, EYE_RIGHT = 3, 4


@pytest.fixture(scope="module")
def layer(sample_model: FlameModel) -> FlameLayer:
    return FlameLayer(sample_model, dtype=torch.float64)


def posed(layer: FlameLayer, **params: list[float] | np.ndarray) -> np.ndarray:
    """(V, 3) vertices for one set of parameters given as plain vectors."""
    tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float64))[None] for k, v in params.items()}
    return layer(FlameParams(**tensors)).vertices[0].numpy()


def nearest_vertex(model: FlameModel, point: np.ndarray) -> int:
    return int(np.argmin(np.linalg.norm(model.v_template - point, axis=1)))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_npz_is_byte_identical_across_generations(tmp_path: Path) -> None:
    cli = tmp_path / "cli.npz"
    subprocess.run(
        [sys.executable, "-m", "flame_tracking.sample_model", "--out", str(cli)], check=True
    )
    again = tmp_path / "again.npz"
    save_npz(build_sample_model(), again)
    assert sha256(cli) == sha256(again)
    loaded = load_npz(cli)
    np.testing.assert_array_equal(loaded.v_template, build_sample_model().v_template)


def test_fields_have_flame_structure(sample_model: FlameModel) -> None:
    m = sample_model
    assert 4000 <= m.num_vertices <= 8000
    assert 20 <= m.num_shape <= 50 and m.num_expr == len(EXPRESSION_NAMES)
    for name in ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights"):
        assert getattr(m, name).dtype == np.float64, name
    assert m.f.dtype == np.int64 and m.ft.dtype == np.int64 and m.vt.dtype == np.float64
    np.testing.assert_array_equal(m.parents, [-1, 0, 1, 1, 1])
    assert m.lmk_face_idx is None and m.lmk_b_coords is None and m.lmk_mediapipe_idx is None
    np.testing.assert_allclose(m.J_regressor.sum(1), 1.0, atol=1e-12)
    assert m.J_regressor.min() >= 0 and m.weights.min() >= 0
    np.testing.assert_allclose(m.weights.sum(1), 1.0, atol=1e-12)


def test_head_has_flame_axes_and_human_size(sample_model: FlameModel) -> None:
    v = sample_model.v_template
    lo, hi = v.min(0), v.max(0)
    assert np.all(lo > [-0.1, -0.2, -0.12]) and np.all(hi < [0.1, 0.16, 0.13])
    assert np.all(np.abs(v.mean(0)) < 0.04)  # origin near the head's centre
    face = v[sample_model.face_vertex_ids]
    assert 0.17 <= np.ptp(face[:, 1]) <= 0.21  # chin to hairline
    assert len(face) > 1000 and np.all(face[:, 2] > 0)
    k = template_keypoints(sample_model)
    assert k["eye_left"][0] > 0.02 and k["eye_right"][0] < -0.02  # subject's left is +x
    assert k["forehead"][1] > k["eye_left"][1] > k["nose_tip"][1] > k["chin"][1]
    assert k["nose_tip"][2] == face[:, 2].max()  # z points out of the face
    beside_nose = [0.025, -0.01]
    cheek = face[np.linalg.norm(face[:, :2] - beside_nose, axis=1) < 0.003][:, 2].max()
    assert 0.02 <= k["nose_tip"][2] - cheek <= 0.035


def test_surface_is_closed_and_clean(sample_model: FlameModel) -> None:
    mesh = trimesh.Trimesh(sample_model.v_template, sample_model.f, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    parts = mesh.split(only_watertight=False)
    assert len(parts) == 3  # head and two eyeballs, each a closed sphere
    assert mesh.euler_number == 2 * len(parts)
    assert mesh.volume > 0  # outward normals
    assert mesh.area_faces.min() > 1e-10
    assert len(np.unique(np.sort(sample_model.f, axis=1), axis=0)) == len(sample_model.f)


def test_eyeballs_show_through_the_lids_from_the_front(sample_model: FlameModel) -> None:
    k = template_keypoints(sample_model)
    joints = sample_model.J_regressor @ sample_model.v_template
    for name, joint in (("eye_left", EYE_LEFT), ("eye_right", EYE_RIGHT)):
        distance = np.linalg.norm(k[name] - joints[joint])
        np.testing.assert_allclose(distance, 0.0125, atol=2e-4)  # the frontal hit is on the eye


def test_jaw_rotation_opens_the_mouth(sample_model: FlameModel, layer: FlameLayer) -> None:
    k = template_keypoints(sample_model)
    lips = [nearest_vertex(sample_model, k[n]) for n in ("upper_lip", "lower_lip")]
    rest = posed(layer, jaw_pose=[0.0, 0, 0])
    open_ = posed(layer, jaw_pose=[0.25, 0, 0])
    gap = [np.linalg.norm(v[lips[0]] - v[lips[1]]) for v in (rest, open_)]
    assert gap[1] - gap[0] > 0.005
    moved = np.linalg.norm(open_ - rest, axis=1) > 1e-12
    jaw_weighted = sample_model.weights[:, 2] > 0
    assert not np.any(moved & ~jaw_weighted)
    assert np.all(moved[sample_model.weights[:, 2] > 0.5])
    chin = nearest_vertex(sample_model, k["chin"])
    assert open_[chin, 1] < rest[chin, 1] - 0.01  # positive x rotation drops the chin


def test_eye_rotation_moves_only_the_eyeballs(sample_model: FlameModel, layer: FlameLayer) -> None:
    rest = posed(layer, eyes_pose=np.zeros(6))
    turned = posed(layer, eyes_pose=[0.0, 0.3, 0, 0.1, -0.2, 0])
    moved = np.linalg.norm(turned - rest, axis=1) > 1e-12
    eyes = sample_model.weights[:, EYE_LEFT] + sample_model.weights[:, EYE_RIGHT] == 1
    np.testing.assert_array_equal(moved, eyes & moved)
    assert moved[eyes].mean() > 0.9
    joints = sample_model.J_regressor @ sample_model.v_template
    for j in (EYE_LEFT, EYE_RIGHT):
        ball = sample_model.weights[:, j] == 1
        radii = np.linalg.norm(turned[ball] - joints[j], axis=1)
        np.testing.assert_allclose(radii, 0.0125, atol=1e-9)  # rotates about its centre


def test_joints_sit_where_flame_has_them(sample_model: FlameModel) -> None:
    j = sample_model.J_regressor @ sample_model.v_template
    np.testing.assert_allclose(j[:3, 0], 0.0, atol=1e-12)  # global, neck, jaw on the midline
    np.testing.assert_allclose(j[EYE_LEFT] * [-1, 1, 1], j[EYE_RIGHT], atol=1e-12)
    k = template_keypoints(sample_model)
    assert j[0, 1] < j[1, 1] < j[2, 1] < k["nose_tip"][1]  # neck base, skull base, jaw hinge
    assert j[2, 2] < k["mouth_center"][2] - 0.05  # the hinge is far behind the mouth
    np.testing.assert_allclose(j[EYE_LEFT, :2], k["eye_left"][:2], atol=1e-12)


def test_expressions_are_local_and_move(sample_model: FlameModel) -> None:
    v = sample_model.v_template
    eyes = sample_model.weights[:, EYE_LEFT] + sample_model.weights[:, EYE_RIGHT] == 1
    for k, name in enumerate(EXPRESSION_NAMES):
        d = sample_model.exprdirs[..., k]
        size = np.linalg.norm(d, axis=1)
        assert 0.0015 < size.max() < 0.015, name
        assert np.all(size[eyes] == 0), name
        energy = size**2
        centre = (energy[:, None] * v).sum(0) / energy.sum()
        near = np.linalg.norm(v - centre, axis=1) < 0.04
        assert energy[near].sum() > 0.9 * energy.sum(), name
    flat = sample_model.exprdirs.reshape(-1, sample_model.num_expr)
    assert np.linalg.matrix_rank(flat) == sample_model.num_expr


def test_left_and_right_expressions_mirror(sample_model: FlameModel) -> None:
    v = sample_model.v_template
    left = EXPRESSION_NAMES.index("smile_left")
    right = EXPRESSION_NAMES.index("smile_right")
    moved = np.linalg.norm(sample_model.exprdirs[..., left], axis=1) > 1e-4
    assert np.all(v[moved, 0] > 0)
    moved = np.linalg.norm(sample_model.exprdirs[..., right], axis=1) > 1e-4
    assert np.all(v[moved, 0] < 0)


def test_identity_components_change_proportions(sample_model: FlameModel) -> None:
    m = sample_model
    flat = m.shapedirs.reshape(-1, m.num_shape)
    gram = flat.T @ flat
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-12)
    spread = np.sqrt(np.diag(gram))
    assert np.all(np.diff(spread) <= 0) and spread[-1] > 0
    extent = np.ptp(m.v_template, axis=0)
    bbox_change = [
        np.abs(np.ptp(m.v_template + m.shapedirs[..., k], axis=0) - extent) for k in range(3)
    ]
    assert max(c.max() for c in bbox_change) > 0.005
    sizes = np.linalg.norm(m.shapedirs, axis=1).max(0)
    assert np.all(sizes < 0.015) and np.all(sizes > 0.0005) and np.all(sizes[:6] > 0.003)
    people = np.random.default_rng(0).normal(size=(20, m.num_shape))
    shaped = m.v_template[None] + np.einsum("vcs,ps->pvc", m.shapedirs, people)
    heights = np.ptp(shaped[:, m.face_vertex_ids, 1], axis=1)
    assert np.all((heights > 0.16) & (heights < 0.22)) and heights.std() > 0.002


def test_face_chart_is_a_frontal_projection(sample_model: FlameModel) -> None:
    m = sample_model
    assert m.vt.min() >= 0 and m.vt.max() <= 1
    k = template_keypoints(m)
    uv = {name: face_uv(p[None])[0] for name, p in k.items()}
    assert uv["eye_left"][0] > uv["eye_right"][0] and uv["mouth_left"][0] > uv["mouth_right"][0]
    order = ("forehead", "eye_left", "nose_tip", "mouth_center", "chin")
    assert all(uv[a][1] > uv[b][1] for a, b in zip(order, order[1:], strict=False))
    corners_vt = m.vt[m.ft]  # (F, 3, 2)
    for name in k:
        vertex = nearest_vertex(m, k[name])
        at = corners_vt[m.f == vertex]
        np.testing.assert_allclose(at, np.broadcast_to(face_uv(m.v_template[[vertex]]), at.shape))
    projected = face_uv(m.v_template[m.f].reshape(-1, 3)).reshape(-1, 3, 2)
    chart = np.all(np.abs(corners_vt - projected) < 1e-12, axis=(1, 2))
    face_tris = np.all(np.isin(m.f, m.face_vertex_ids), axis=1)
    assert chart[face_tris].mean() > 0.9
    e1, e2 = corners_vt[:, 1] - corners_vt[:, 0], corners_vt[:, 2] - corners_vt[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    head = np.all(m.weights[m.f, EYE_LEFT] + m.weights[m.f, EYE_RIGHT] == 0, axis=1)
    assert np.all(area[head] > 0)  # no folds on the head's charts (eyeball backs are hidden)
