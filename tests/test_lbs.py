"""FLAME's LBS layer against facts that must hold for any FLAME-structured model.

Each test runs on a small random model (fast, and its weights are known to have jaw-free
vertices) and on the embedded sample head model from `tests/conftest.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.model import NUM_POSE_FEATURES, FlameModel

JAW = 2
JAW_POSE_FEATURES = slice(9, 18)
"""Pose-corrective features driven by the jaw: (R - I) of joint 2 is the second 9 of 36."""


def make_toy_model(*, seed: int = 0, num_vertices: int = 80) -> FlameModel:
    """A random FLAME-structured model; the first quarter of vertices ignores the jaw."""
    rng = np.random.default_rng(seed)
    n = num_vertices
    weights = rng.dirichlet(np.ones(5), size=n)
    posedirs = rng.normal(scale=1e-3, size=(n, 3, NUM_POSE_FEATURES))
    skull = slice(0, n // 4)
    weights[skull, JAW] = 0.0
    weights[skull] /= weights[skull].sum(1, keepdims=True)
    posedirs[skull, :, JAW_POSE_FEATURES] = 0.0
    regressor = np.zeros((5, n))
    for j in range(5):
        regressor[j, rng.choice(n, size=8, replace=False)] = rng.random(8)
    regressor /= regressor.sum(1, keepdims=True)
    return FlameModel(
        v_template=rng.normal(scale=0.08, size=(n, 3)),
        f=rng.integers(0, n, size=(2 * n, 3)),
        shapedirs=rng.normal(scale=1e-3, size=(n, 3, 6)),
        exprdirs=rng.normal(scale=1e-3, size=(n, 3, 4)),
        posedirs=posedirs,
        J_regressor=regressor,
        weights=weights,
        kintree_table=np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        source="toy",
    )


def random_params(
    model: FlameModel, *, batch: int, seed: int, dtype: torch.dtype = torch.float64
) -> FlameParams:
    """Every FLAME parameter, batched, at magnitudes a tracker meets."""
    g = torch.Generator().manual_seed(seed)

    def rand(*size: int, scale: float) -> torch.Tensor:
        return (torch.randn(*size, generator=g, dtype=torch.float64) * scale).to(dtype)

    return FlameParams(
        shape=rand(batch, model.num_shape, scale=1.0),
        expr=rand(batch, model.num_expr, scale=1.0),
        rotation=rand(batch, 3, scale=0.3),
        translation=rand(batch, 3, scale=0.1),
        neck_pose=rand(batch, 3, scale=0.2),
        jaw_pose=rand(batch, 3, scale=0.2),
        eyes_pose=rand(batch, 6, scale=0.2),
        static_offset=rand(batch, model.num_vertices, 3, scale=1e-3),
    )


@pytest.fixture(scope="module")
def toy_model() -> FlameModel:
    return make_toy_model()


@pytest.fixture(params=["toy_model", "sample_model"])
def model(request: pytest.FixtureRequest) -> FlameModel:
    return request.getfixturevalue(request.param)


@pytest.fixture
def layer64(model: FlameModel) -> FlameLayer:
    return FlameLayer(model, dtype=torch.float64)


def exact(actual: torch.Tensor, expected: torch.Tensor | np.ndarray, atol: float = 1e-12) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def reference_vertices(model: FlameModel, params: FlameParams) -> np.ndarray:
    """FLAME's LBS written out in numpy, one timestep at a time, with scipy's rotations."""
    out = []
    for b in range(len(params.rotation)):
        p = {k: v[b].detach().numpy() for k, v in vars(params).items()}
        shaped = model.v_template + p["static_offset"] + model.shapedirs @ p["shape"]
        shaped = shaped + model.exprdirs @ p["expr"]
        joints = model.J_regressor @ shaped
        pose = np.concatenate([p["rotation"], p["neck_pose"], p["jaw_pose"], p["eyes_pose"]])
        rots = Rotation.from_rotvec(pose.reshape(5, 3)).as_matrix()
        posed = shaped + model.posedirs @ (rots[1:] - np.eye(3)).reshape(-1)
        world = []
        for j, parent in enumerate(model.parents):
            local = np.eye(4)
            local[:3, :3] = rots[j]
            local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0)
            world.append(local if parent < 0 else world[parent] @ local)
        skin = np.stack(world)
        skin[:, :3, 3] -= np.einsum("jrc,jc->jr", skin[:, :3, :3], joints)
        per_vertex = np.einsum("vj,jrc->vrc", model.weights, skin)
        verts = np.einsum("vrc,vc->vr", per_vertex[:, :3, :3], posed) + per_vertex[:, :3, 3]
        out.append(verts + p["translation"])
    return np.stack(out)


def test_matches_numpy_reference(model: FlameModel, layer64: FlameLayer) -> None:
    params = random_params(model, batch=2, seed=7)
    exact(layer64(params).vertices, reference_vertices(model, params))


def test_zero_parameters_give_the_template(model: FlameModel, layer64: FlameLayer) -> None:
    out = layer64(FlameParams())
    exact(out.vertices[0], model.v_template)
    exact(out.joints[0], model.J_regressor @ model.v_template)
    zeros = random_params(model, batch=2, seed=0)
    for name, value in vars(zeros).items():
        setattr(zeros, name, torch.zeros_like(value))
    exact(layer64(zeros).vertices, np.stack([model.v_template] * 2))


def test_jaw_moves_only_jaw_vertices(model: FlameModel, layer64: FlameLayer) -> None:
    jaw_free = (model.weights[:, JAW] == 0) & np.all(
        model.posedirs[:, :, JAW_POSE_FEATURES] == 0, axis=(1, 2)
    )
    assert jaw_free.any(), "a head model has vertices the jaw does not drive"
    jaw = torch.tensor([[0.25, 0.03, -0.02]], dtype=torch.float64)
    moved = layer64(FlameParams(jaw_pose=jaw)).vertices[0].numpy() - model.v_template
    np.testing.assert_allclose(moved[jaw_free], 0.0, atol=1e-12)
    distance = np.linalg.norm(moved, axis=1)
    assert (distance[model.weights[:, JAW] > 0.1] > 1e-6).all()


def test_global_rotation_is_rigid_about_the_root(model: FlameModel, layer64: FlameLayer) -> None:
    aa = np.array([0.4, -0.7, 0.2])
    rot = Rotation.from_rotvec(aa).as_matrix()
    root = model.J_regressor[0] @ model.v_template
    out = layer64(FlameParams(rotation=torch.tensor(aa[None]))).vertices[0]
    exact(out, (model.v_template - root) @ rot.T + root)
    idx = np.arange(0, model.num_vertices, max(1, model.num_vertices // 500))
    rest = torch.as_tensor(model.v_template[idx])
    mode = "donot_use_mm_for_euclid_dist"  # the matmul shortcut loses ~1e-9
    exact(
        torch.cdist(out[idx], out[idx], compute_mode=mode),
        torch.cdist(rest, rest, compute_mode=mode),
    )


def test_batched_equals_per_item(model: FlameModel, layer64: FlameLayer) -> None:
    params = random_params(model, batch=3, seed=1)
    batched = layer64(params)
    for b in range(3):
        item = FlameParams(**{k: v[b : b + 1] for k, v in vars(params).items()})
        single = layer64(item)
        exact(batched.vertices[b : b + 1], single.vertices)
        exact(batched.joints[b : b + 1], single.joints)


def test_shared_shape_and_offset_broadcast(model: FlameModel, layer64: FlameLayer) -> None:
    params = random_params(model, batch=2, seed=2)
    shared = FlameParams(**vars(params))
    shared.shape, shared.static_offset = params.shape[0], params.static_offset[0]
    params.shape = params.shape[:1].expand(2, -1)
    params.static_offset = params.static_offset[:1].expand(2, -1, -1)
    exact(layer64(shared).vertices, layer64(params).vertices)


def test_float32_agrees_with_float64(model: FlameModel, layer64: FlameLayer) -> None:
    params64 = random_params(model, batch=2, seed=3)
    params32 = FlameParams(**{k: v.float() for k, v in vars(params64).items()})
    out32 = FlameLayer(model, dtype=torch.float32)(params32).vertices
    assert out32.dtype == torch.float32
    exact(out32.double(), layer64(params64).vertices, atol=1e-5)


def test_gradients_reach_every_parameter(model: FlameModel, layer64: FlameLayer) -> None:
    params = random_params(model, batch=2, seed=4)
    for value in vars(params).values():
        value.requires_grad_(True)
    out = layer64(params).vertices
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
    (out * target).sum().backward()
    for name, value in vars(params).items():
        assert value.grad is not None, name
        assert torch.isfinite(value.grad).all(), name
        assert (value.grad != 0).all(), f"{name}: zero gradient entries"


def test_translation_adds_exactly(model: FlameModel, layer64: FlameLayer) -> None:
    params = random_params(model, batch=2, seed=6)
    translation = params.translation
    params.translation = None
    without = layer64(params)
    params.translation = translation
    moved = layer64(params)
    assert torch.equal(moved.vertices, without.vertices + translation[:, None])
    assert torch.equal(moved.joints, without.joints + translation[:, None])
