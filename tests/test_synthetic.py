"""The synthetic face set: truth maps against the posed mesh, variety, reproducibility, split,
and shards that validate and load as training batches. Real rendering at small sizes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import trimesh
from scipy import ndimage

from faceanything.data.batches import (
    DataConfig,
    ShardBatches,
    read_shards,
    read_split,
    split_rows,
)
from flame_tracking.lbs import FlameLayer, FlameParams
from tasks.formats import shards
from tasks.formats.cameras import Camera, backproject_depth, project
from tasks.formats.color import linear_to_srgb, srgb_to_linear
from tasks.pictures.render import rasterize
from tasks.sample.scene import ground_truth_maps
from tasks.synthetic.__main__ import main
from tasks.synthetic.dataset import (
    SPLIT_MANIFEST,
    SyntheticConfig,
    generate_synthetic,
    held_out_names,
    write_identity,
)
from tasks.synthetic.identity import (
    FITZPATRICK_SRGB,
    Identity,
    bake_identity_texture,
    draw_identity,
    head_model,
    identity_hair,
)
from tasks.synthetic.views import Lighting, draw_cameras, posed_frames, render_linear

CONFIG = SyntheticConfig(
    identities=3, held_out=1, seed=7, width=96, height=140, views=3, timesteps=2, texture_size=256
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CONFIG set, written by the command line (with its contact sheet)."""
    out = tmp_path_factory.mktemp("synthetic")
    c = CONFIG
    main(
        [
            *("--out", str(out), "--identities", str(c.identities), "--held-out", "1"),
            *("--seed", str(c.seed), "--width", str(c.width), "--height", str(c.height)),
            *("--views", str(c.views), "--timesteps", str(c.timesteps)),
            *("--texture-size", str(c.texture_size), "--contact-sheet", str(out / "sheet.png")),
        ]
    )
    assert (out / "sheet.png").stat().st_size > 10_000
    return out


def _camera(row: pd.Series) -> Camera:
    return Camera(
        serial=row.serial,
        K=np.asarray(row.K).reshape(3, 3),
        world_2_cam=np.asarray(row.world_2_cam).reshape(4, 4),
        width=int(row.width),
        height=int(row.height),
    )


def _posed(shard: Path, identity_name: str) -> tuple[dict[int, np.ndarray], object]:
    """Head vertices per frame from the shard's own FLAME parameters, and the hair."""
    model = head_model()
    index = shards.read_index(shard).drop_duplicates("frame")
    params = {
        n: torch.as_tensor(np.stack(index[n].to_numpy()), dtype=torch.float64)
        for n in shards.FLAME_COLUMNS
    }
    with torch.no_grad():
        vertices = FlameLayer(model, torch.float64)(FlameParams(**params)).vertices.numpy()
    identity = draw_identity(
        name=identity_name, seed=CONFIG.seed, held_out=False, num_shape=model.num_shape
    )
    _, hair = identity_hair(model=model, identity=identity)
    return dict(zip(index.frame.astype(int), vertices, strict=True)), hair


def _closest(
    vertices: np.ndarray, faces: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """trimesh's nearest surface point (N, 3), distance (N,) and triangle (N,), in metres,
    computed in millimetres: its degenerate-triangle tolerance misjudges 1 mm triangles."""
    mesh = trimesh.Trimesh(vertices * 1000, faces, process=False)
    closest, distance, triangle = trimesh.proximity.closest_point(mesh, points * 1000)
    return closest / 1000, distance / 1000, triangle


def _head_hits(points: np.ndarray, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (N,) of points to the posed head and the canonical (N, 3) of the nearest
    point (barycentric blend of the template), found by trimesh, not by the renderer."""
    model = head_model()
    closest, distance, triangle = _closest(vertices, model.f, points)
    bary = trimesh.triangles.points_to_barycentric(vertices[model.f[triangle]], closest)
    return distance, np.einsum("nk,nkc->nc", bary, model.v_template[model.f[triangle]])


def _rows(shard: Path) -> pd.DataFrame:
    return shards.read_index(shard)


def test_depth_and_canonical_match_the_posed_mesh(dataset: Path) -> None:
    shard = dataset / "syn00000"
    vertices, hair = _posed(shard, "syn00000")
    rng = np.random.default_rng(0)
    for _, row in _rows(shard).iterrows():
        sample = shards.load_sample(shard, row)
        camera = _camera(row)
        points = backproject_depth(sample["depth"].astype(np.float64), camera)
        head = (sample["mask"] == 1) & (sample["hair"] == 0)
        pick = rng.permutation(np.flatnonzero(head))[:150]
        distance, canonical = _head_hits(points.reshape(-1, 3)[pick], vertices[int(row.frame)])
        assert np.max(distance) < 2e-5, f"{row.serial}: depth {np.max(distance):.2e} m off"
        error = np.linalg.norm(canonical - sample["canonical"].reshape(-1, 3)[pick], axis=1)
        assert np.max(error) < 2e-5, f"{row.serial}: canonical {np.max(error):.2e} m off"
        if hair is not None and (sample["hair"] == 1).any():
            head = trimesh.Trimesh(vertices[int(row.frame)], head_model().f, process=False)
            shell = hair.pose(vertices=head.vertices, vertex_normals=head.vertex_normals)
            on_hair = np.flatnonzero(sample["hair"].ravel() == 1)[:150]
            _, gap, _ = _closest(shell, hair.faces, points.reshape(-1, 3)[on_hair])
            assert np.max(gap) < 2e-5, f"{row.serial}: hair depth {np.max(gap):.2e} m off"
        assert np.array_equal(np.isfinite(sample["depth"]), sample["mask"] == 1)


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    coords = [xy[:, 1], xy[:, 0]]
    return np.stack(
        [ndimage.map_coordinates(image[..., c], coords, order=1) for c in range(3)], axis=1
    )


def test_one_canonical_point_across_views_and_timesteps(dataset: Path) -> None:
    """A face pixel of view A at frame 0, moved with its triangle to frame 1 and seen by
    view B, finds the same canonical coordinate there (bilinear between pixels)."""
    shard = dataset / "syn00001"
    vertices, _ = _posed(shard, "syn00001")
    rows = _rows(shard)
    a_row = rows[(rows.frame == 0)].iloc[0]
    model = head_model()
    a = shards.load_sample(shard, a_row)
    points = backproject_depth(a["depth"].astype(np.float64), _camera(a_row)).reshape(-1, 3)
    face = np.flatnonzero(((a["face"] == 1) & (a["hair"] == 0)).ravel())
    closest, _, triangle = _closest(vertices[0], model.f, points[face])
    bary = trimesh.triangles.points_to_barycentric(vertices[0][model.f[triangle]], closest)
    moved = np.einsum("nk,nkc->nc", bary, vertices[1][model.f[triangle]])
    checked = 0
    for _, b_row in rows[(rows.frame == 1) & (rows.serial != a_row.serial)].iterrows():
        b = shards.load_sample(shard, b_row)
        xy, z = project(moved, _camera(b_row))
        inside = (xy > 1).all(1) & (xy[:, 0] < b_row.width - 2) & (xy[:, 1] < b_row.height - 2)
        seen = np.zeros(len(xy), dtype=bool)
        corners = np.floor(xy[inside]).astype(int)
        depth_near = b["depth"][corners[:, 1], corners[:, 0]]
        seen[inside] = np.abs(depth_near - z[inside]) < 0.003
        window = ndimage.minimum_filter((b["face"] == 1) & (b["hair"] == 0), size=3)
        seen[inside] &= window[corners[:, 1], corners[:, 0]]
        if seen.sum() < 20:
            continue
        found = _bilinear(b["canonical"], xy[seen])
        error = np.linalg.norm(found - a["canonical"].reshape(-1, 3)[face][seen], axis=1)
        assert np.median(error) < 1e-3 and np.quantile(error, 0.9) < 3e-3, np.quantile(error, 0.9)
        checked += 1
    assert checked >= 1


def test_variety_spans_skin_tones_and_hair_colours() -> None:
    num_shape = head_model().num_shape
    drawn = [
        draw_identity(name=f"syn{i:05d}", seed=0, held_out=False, num_shape=num_shape)
        for i in range(60)
    ]
    assert {d.fitzpatrick for d in drawn} == set(range(1, 7))
    luminance = np.array([d.skin_albedo @ (0.2126, 0.7152, 0.0722) for d in drawn])
    assert luminance.max() / luminance.min() > 8
    assert len({d.hair for d in drawn}) >= 5 and len({d.eye_color for d in drawn}) >= 4
    hair = np.array([d.hair_albedo.mean() for d in drawn])
    assert hair.min() < 0.02 and hair.max() > 0.3
    assert np.std([d.shape for d in drawn], axis=0).min() > 0.3


def _frontal_render(identity: Identity) -> tuple[np.ndarray, np.ndarray]:
    """sRGB (H, W, 3) and mask (H, W) of a frontal render, neutral, under white light."""
    model = head_model()
    style, hair = identity_hair(model=model, identity=identity)
    texture = bake_identity_texture(identity=identity, style=style, size=256)
    params = {
        n: np.zeros((1, k))
        for n, k in (("expr", model.num_expr), ("rotation", 3), ("translation", 3))
    }
    params |= {n: np.zeros((1, 3)) for n in ("neck_pose", "jaw_pose")}
    params |= {"eyes_pose": np.zeros((1, 6)), "shape": identity.shape[None]}
    frame = posed_frames(model=model, params=params, hair=hair)[0]
    camera = draw_cameras(model=model, identity=identity, views=1, width=96, height=140)
    lighting = Lighting(
        directions=np.array([[0.0, 0.3, 1.0]]) / np.hypot(0.3, 1.0),
        colors=np.ones((1, 3)) * 0.8,
        ambient=np.full(3, 0.3),
        exposure=1.0,
    )
    camera = next(iter(camera.values()))
    fragments = rasterize(scene=frame.scene, camera=camera)
    truth = ground_truth_maps(
        frame=frame, model=model, camera=camera, face_triangles=np.zeros(len(model.f), bool)
    )
    rgb = render_linear(
        fragments=fragments,
        normals=truth["normal"],
        frame=frame,
        model=model,
        texture=texture,
        camera=camera,
        lighting=lighting,
        specular=0.0,
    )
    mask = fragments.mask
    return linear_to_srgb(np.clip(np.nan_to_num(rgb), 0, 1)), mask


def test_rendered_skin_and_hair_follow_the_drawn_colours() -> None:
    """Fitzpatrick I vs VI skin and black vs blond hair, same head and light: the pictures
    differ as the drawn albedos say."""
    base = draw_identity(name="syn00000", seed=0, held_out=False, num_shape=30)
    base = dataclasses.replace(base, hair="short", hair_volume=0.9, specular=0.0)
    light_skin = np.asarray(FITZPATRICK_SRGB[0]) / 255.0
    dark_skin = np.asarray(FITZPATRICK_SRGB[-1]) / 255.0
    renders = {}
    for name, skin, hair in (
        ("fair blond", light_skin, (214, 182, 128)),
        ("dark black", dark_skin, (28, 24, 22)),
    ):
        identity = dataclasses.replace(
            base,
            skin_albedo=srgb_to_linear(skin),
            hair_albedo=srgb_to_linear(np.asarray(hair) / 255.0),
        )
        renders[name] = _frontal_render(identity)
    luma = {}
    for name, (srgb, mask) in renders.items():
        centre = np.zeros_like(mask)
        h, w = mask.shape
        centre[h // 2 - 8 : h // 2 + 8, w // 2 - 8 : w // 2 + 8] = True  # cheeks and nose
        luma[name] = srgb[centre & mask].mean()
        rows = np.flatnonzero(mask.any(axis=1))
        top = np.zeros_like(mask)
        top[rows[0] : rows[0] + max(2, len(rows) // 8)] = True  # the crown: hair
        luma[name + " top"] = srgb[top & mask].mean()
    assert luma["fair blond"] > 2 * luma["dark black"]
    assert luma["dark black top"] < 0.15, "black hair is dark"
    assert luma["fair blond top"] > 2.5 * luma["dark black top"]


def test_same_seed_same_bytes_other_seed_other_pictures(dataset: Path, tmp_path: Path) -> None:
    model = head_model()
    identity = draw_identity(
        name="syn00002", seed=CONFIG.seed, held_out=False, num_shape=model.num_shape
    )
    again = write_identity(config=CONFIG, identity=identity, out=tmp_path).path
    original = dataset / "syn00002"
    files = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for f in files:
        assert (original / f).read_bytes() == (again / f).read_bytes(), f
    other = draw_identity(
        name="syn00002", seed=CONFIG.seed + 1, held_out=False, num_shape=model.num_shape
    )
    other_config = dataclasses.replace(CONFIG, seed=CONFIG.seed + 1)
    (tmp_path / "other").mkdir()
    changed = write_identity(config=other_config, identity=other, out=tmp_path / "other").path
    first = sorted(original.rglob("*.png"))[0].relative_to(original)
    assert (original / first).read_bytes() != (changed / first).read_bytes()
    assert not np.allclose(identity.shape, other.shape)


def test_held_out_identities_are_disjoint_and_split_by_the_manifest(dataset: Path) -> None:
    table = pd.read_parquet(dataset / "identities.parquet")
    held = set(table.name[table.held_out])
    train = set(table.name[~table.held_out])
    assert held == set(held_out_names()[: CONFIG.held_out]) and len(train) == CONFIG.identities
    assert not held & train
    shapes = np.stack(table["shape"].to_numpy())
    assert len(np.unique(shapes.round(6), axis=0)) == len(table)
    rows = read_shards([dataset])
    train_rows, held_rows = split_rows(rows, read_split(SPLIT_MANIFEST))
    assert set(held_rows.subject) == held and set(train_rows.subject) == train


def test_shards_validate_and_load_as_training_batches(dataset: Path) -> None:
    assert shards.validate(dataset) == []
    assert shards.main(["validate", str(dataset)]) == 0
    assert len(shards.read_manifest(dataset)) == CONFIG.identities + CONFIG.held_out
    rows = read_shards([dataset])
    assert len(rows) == (CONFIG.identities + 1) * CONFIG.views * CONFIG.timesteps
    config = DataConfig(scale=0.25, max_images=4, views=(2, 3), augment=False)
    batches = iter(ShardBatches(rows, config, start=0, stop=2))
    for strategy in ("multiview", "temporal"):
        batch = next(batches)
        assert batch["strategy"] == strategy and batch["images"] is not None
        assert batch["corrupt"] == []
        assert torch.isfinite(batch["images"]).all()
        assert batch["canonical_valid"].any() and batch["depth_valid"].any()


def test_a_second_call_keeps_the_shards_and_other_settings_are_refused(dataset: Path) -> None:
    result = generate_synthetic(config=CONFIG, out=dataset)
    assert result.written == 0
    with pytest.raises(ValueError, match="other settings"):
        generate_synthetic(config=dataclasses.replace(CONFIG, width=64), out=dataset)
