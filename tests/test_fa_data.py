"""Training data: buckets, exact intrinsics after resize/crop, DA3's scale normalisation and
ray maps against hand-made cameras, co-jitter, and batches streamed from a real shard."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fa_scene import RADIUS, one_thread, pose, write_scene_shard  # noqa: F401 (fixture)

from faceanything.data.batches import (
    BatchPlanner,
    DataConfig,
    ShardBatches,
    Split,
    batch_loader,
    bucket_sizes,
    make_batch,
    read_shards,
    split_rows,
)
from faceanything.data.jitter import JitterConfig, adjust, co_jitter, hsv_to_rgb, rgb_to_hsv
from faceanything.geometry import backproject, fit_view, normalise_scene, ray_targets

pytestmark = pytest.mark.usefixtures("one_thread")

TIMESTEPS = (("EXP-1-head", 0), ("EXP-1-head", 1), ("EXP-1-head", 2), ("EMO-1-shout", 3))


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fa_data")
    return write_scene_shard(root / "shard", timesteps=TIMESTEPS, cameras=4).path


def test_buckets_are_b1_and_scale_to_multiples_of_14():
    assert bucket_sizes(DataConfig())[:2] == [(504, 504), (378, 504)]
    small = bucket_sizes(DataConfig(scale=0.25))
    assert small == [(126, 126), (98, 126), (84, 126), (70, 126), (126, 84), (126, 196), (126, 168)]


def coordinate_sample(width: int = 200, height: int = 150) -> dict[str, np.ndarray]:
    """A view whose image and canonical map hold each pixel's own coordinates."""
    v, u = np.mgrid[:height, :width].astype(np.float32)
    mask = np.zeros((height, width), np.float32)
    mask[60:90, 120:160] = 1  # the "face", off centre
    return {
        "image": np.stack([u, v, np.zeros_like(u)], -1).astype(np.uint8),
        "depth": np.ones((height, width), np.float32),
        "canonical": np.stack([u, v, np.zeros_like(u)], -1),
        "mask": mask,
        "K": np.array([[100.0, 0, 99.5], [0, 100.0, 74.5], [0, 0, 1]]),
    }


@pytest.mark.parametrize("size", [(84, 126), (126, 84), (70, 42)])
@pytest.mark.parametrize("random_crop", [False, True])
def test_fit_view_keeps_intrinsics_exact(size, random_crop):
    sample = coordinate_sample()
    rng = np.random.default_rng(3) if random_crop else None
    view = fit_view(sample, size=size, rng=rng)
    assert view.image.shape == (size[1], size[0], 3)
    # K_fit K^-1 maps a source pixel to the fitted one; invert it for every fitted pixel
    A = view.K @ np.linalg.inv(sample["K"])
    v, u = np.mgrid[: size[1], : size[0]].astype(np.float64)
    source = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(A).T
    # maps: the nearest source pixel centre, half a pixel away at most
    assert np.abs(view.canonical[..., :2] - source[..., :2]).max() <= 0.5 + 1e-4
    # image: area/linear resampling of a ramp gives the centre's coordinate (uint8 rounding)
    inner = (slice(1, -1), slice(1, -1))
    assert np.abs(view.image[..., 0][inner] - source[..., 0][inner]).max() <= 1.0
    # the face stays in the crop
    assert view.mask.any()


def test_normalise_scene_by_hand():
    """View 0 at the origin sees a point 2 m ahead; view 1, 1 m to the right, one 4 m ahead:
    points (0, 0, 2) and (1, 0, 4), mean norm (2 + sqrt 17) / 2."""
    K = torch.tensor([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 1]]).expand(2, 3, 3)
    w2c = torch.eye(4).repeat(2, 1, 1)
    w2c[1, 0, 3] = -1.0  # centre (1, 0, 0)
    depth = torch.tensor([2.0, 4.0]).view(2, 1, 1)
    valid = torch.ones(2, 1, 1, dtype=torch.bool)
    scaled, poses, scale = normalise_scene(depth, valid, K, w2c)
    expected = 2 / (2 + math.sqrt(17))
    assert scale.item() == pytest.approx(expected, rel=1e-6)
    assert scaled.flatten().tolist() == pytest.approx([2 * expected, 4 * expected], rel=1e-6)
    assert poses[1, :3, 3].tolist() == pytest.approx([-expected, 0, 0], rel=1e-6)


def test_normalise_scene_ignores_the_world_frame():
    """Moving every camera by one rigid motion changes nothing: the first view is the frame."""
    gen = torch.Generator().manual_seed(0)
    S, H, W = 3, 5, 6
    K = torch.tensor([[8.0, 0, 2.5], [0, 8.0, 2.0], [0, 0, 1]], dtype=torch.float64).repeat(S, 1, 1)
    w2c = torch.eye(4, dtype=torch.float64).repeat(S, 1, 1)
    w2c[:, :3, 3] = torch.randn(S, 3, generator=gen, dtype=torch.float64)
    depth = 1 + torch.rand(S, H, W, generator=gen, dtype=torch.float64)
    valid = torch.rand(S, H, W, generator=gen) > 0.3
    motion = torch.eye(4, dtype=torch.float64)
    motion[:3, :3] = torch.linalg.matrix_exp(
        torch.tensor([[0, -0.3, 0.2], [0.3, 0, -0.1], [-0.2, 0.1, 0]]).double()
    )
    motion[:3, 3] = torch.tensor([0.5, -2.0, 1.0])
    a = normalise_scene(depth, valid, K, w2c)
    b = normalise_scene(depth, valid, K, w2c @ torch.linalg.inv(motion))
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x, y, atol=1e-5)
    # the mean norm of the valid points in the first camera's frame is 1 afterwards
    points = backproject(a[0].double(), K)
    first = torch.einsum("sij,shwj->shwi", torch.linalg.inv(a[1].double())[:, :3, :3], points)
    first = first + torch.linalg.inv(a[1].double())[:, None, None, :3, 3]
    assert first.norm(dim=-1)[valid].mean().item() == pytest.approx(1.0, rel=1e-5)


def test_ray_targets_of_known_cameras():
    """Camera 0: identity; camera 1: turned 90 degrees about y (its z looks along world -x...)
    and centred at (1, 2, 3)."""
    K = torch.tensor([[20.0, 0, 13.5], [0, 20.0, 6.5], [0, 0, 1]]).repeat(2, 1, 1)
    R1 = torch.tensor([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # world_2_cam rotation
    w2c = torch.eye(4).repeat(2, 1, 1)
    w2c[1, :3, :3] = R1
    w2c[1, :3, 3] = -R1 @ torch.tensor([1.0, 2.0, 3.0])
    rays = ray_targets(K, w2c, image=(14, 28), rays=(8, 16))
    assert rays.shape == (2, 8, 16, 6)
    u = v = 0.5 * 28 / 16 - 0.5  # ray pixel (0, 0): centre 0.375 in the image (both axes)
    d0 = torch.tensor([(u - 13.5) / 20, (v - 6.5) / 20, 1.0])
    assert rays[0, 0, 0, :3].tolist() == pytest.approx(d0.tolist(), abs=1e-6)
    assert rays[0, 0, 0, 3:].tolist() == pytest.approx([0, 0, 0], abs=1e-6)
    assert rays[1, 0, 0, :3].tolist() == pytest.approx((R1.T @ d0).tolist(), abs=1e-6)
    assert rays[1, 5, 7, 3:].tolist() == pytest.approx([1, 2, 3], abs=1e-5)
    # at full resolution, origin + depth * direction is the back-projected point
    full = ray_targets(K[:1], w2c[:1], image=(14, 28), rays=(14, 28))
    depth = 1 + torch.rand(1, 14, 28)
    points = backproject(depth.double(), K[:1].double()).float()
    assert torch.allclose(full[..., 3:] + depth[..., None] * full[..., :3], points, atol=1e-5)


def test_co_jitter_is_shared_and_well_formed():
    images = torch.rand(1, 3, 8, 8).repeat(3, 1, 1, 1)
    out = co_jitter(images, JitterConfig(probability=1.0), torch.Generator().manual_seed(1))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert not torch.allclose(out, images) and out.min() >= 0 and out.max() <= 1
    none = co_jitter(images, JitterConfig(probability=0.0, grayscale=0.0), torch.Generator())
    assert torch.equal(none, images)
    grey = co_jitter(images, JitterConfig(probability=0.0, grayscale=1.0), torch.Generator())
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(images)), images, atol=1e-5)
    red = torch.tensor([1.0, 0, 0]).view(3, 1, 1)
    assert adjust(red, "hue", 1 / 3).flatten().tolist() == pytest.approx([0, 1, 0], abs=1e-5)
    assert adjust(red, "saturation", 0.0).flatten().tolist() == pytest.approx([0.299] * 3)
    assert adjust(red, "brightness", 0.5).flatten().tolist() == pytest.approx([0.5, 0, 0])


def test_split_holds_out_subjects_and_timesteps(shard: Path):
    rows = read_shards([shard])
    train, held = split_rows(rows, Split(timesteps=(("901", "EMO-1-shout", 3),)))
    assert set(held.frame) == {3} and 3 not in set(train.frame) and len(held) == 4
    train, held = split_rows(rows, Split(every=2))  # sorted: EMO 3, EXP 0, EXP 1, EXP 2
    assert set(held.frame) == {0, 2}
    train, held = split_rows(rows, Split(subjects=("901",)))
    assert train.empty and len(held) == len(rows)


def test_batches_alternate_strategies_with_normalised_targets(shard: Path):
    rows = read_shards([shard])
    config = DataConfig(scale=1 / 6, max_images=6, views=(2, 3))
    planner = BatchPlanner(rows, config)
    first, second = make_batch(rows, planner, 0), make_batch(rows, planner, 1)
    assert (first["strategy"], second["strategy"]) == ("multiview", "temporal")
    for keys in first["keys"]:
        assert len({k[:3] for k in keys}) == 1 and len({k[3] for k in keys}) == len(keys)
    for keys in second["keys"]:
        assert len({k[3] for k in keys}) == 1 and len({k[:3] for k in keys}) == len(keys)
    for batch in (first, second):
        B, S, _, H, W = batch["images"].shape
        assert B * S <= 6 and H % 14 == 0 and W % 14 == 0
        assert batch["ray"].shape == (B, S, H // 14 * 8, W // 14 * 8, 6)
        assert batch["canonical"].shape == (B, S, H, W, 3)
        # scale: mean norm of the valid points in the first camera's frame is 1
        for b in range(B):
            K, poses = batch["K"][b].double(), batch["world_2_cam"][b].double()
            points = backproject(batch["depth"][b].double(), K)
            inv = torch.linalg.inv(poses)
            first_frame = (
                torch.einsum("sij,shwj->shwi", inv[:, :3, :3], points) + inv[:, None, None, :3, 3]
            )
            valid = batch["depth_valid"][b]
            assert first_frame.norm(dim=-1)[valid].mean().item() == pytest.approx(1.0, rel=1e-4)
            assert torch.allclose(poses[0], torch.eye(4, dtype=torch.float64), atol=1e-5)
        # canonical truth: on the ball's surface, valid where the depth is
        radius = batch["canonical"][batch["canonical_valid"]].norm(dim=-1)
        assert torch.allclose(radius, torch.full_like(radius, RADIUS), atol=2e-3)
        assert not (batch["canonical_valid"] & ~batch["depth_valid"]).any()
    assert pose(0)[0].shape == (3, 3)


def test_batches_repeat_and_workers_keep_order(shard: Path):
    rows = read_shards([shard])
    config = DataConfig(scale=1 / 6, max_images=4, views=(2, 2))
    here = [b["images"] for b in ShardBatches(rows, config, start=3, stop=7)]
    loader = batch_loader(ShardBatches(rows, config, start=3, stop=7), workers=2)
    there = [(b["k"], b["images"]) for b in loader]
    assert [k for k, _ in there] == [3, 4, 5, 6]
    for a, (_, b) in zip(here, there, strict=True):
        assert torch.equal(a, b)


def test_corrupt_file_is_named_and_skipped(shard: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(shard, broken)
    rows = read_shards([broken])
    victim = broken / rows.image_file[0]
    victim.write_bytes(b"not an image")
    config = DataConfig(scale=1 / 6, max_images=2, views=(2, 2), strategies=("temporal",))
    planner = BatchPlanner(rows, config)
    seen = []
    for k in range(12):
        batch = make_batch(rows, planner, k)
        seen += batch["corrupt"]
        assert batch["images"] is None or batch["images"].shape[:2] == (1, 2)
    assert seen and all(str(victim) in entry for entry in seen)
