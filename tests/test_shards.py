"""Shards written from the canonical stage's output on the sample subject: round trip,
validation (missing, altered and out-of-range files named), the torch dataset, and canonical
correspondence (paper eq. 2) against the truth."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import trimesh
from sample_truth import SERIALS_USED, Truth, along_rays, sample_truth

from faceanything.correspondence import CanonicalIndex, ShardDataset, match_views
from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.sample_model import build_sample_model
from tasks.canonical import CanonicalConfig, ViewDepth, canonicalize_timestep, view_file
from tasks.formats.cameras import SERIALS, project
from tasks.formats.exr import read_exr, write_exr
from tasks.formats.nersemble import load_subject, read_cameras, read_frames
from tasks.formats.shards import (
    INDEX_FILE,
    INDEX_SCHEMA,
    ShardError,
    ShardSample,
    iter_samples,
    main,
    read_image,
    sha256,
    validate,
    write_manifest,
    write_shard,
)
from tasks.pictures.shard import tracks_picture
from tasks.sample.scene import PARAMETER_NAMES
from tasks.sample.subject import SampleSubjectConfig, generate_sample_subject
from tasks.sample.world import ground_truth_map_path


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> Truth:
    return sample_truth(tmp_path_factory.getbasetemp() / "sample_truth")


def canonical_outputs(truth: Truth, out: Path) -> dict[tuple[str, int], Path]:
    """The canonical stage on every timestep: truth mesh as tracked mesh, truth depth with
    1 mm noise along the rays as the reconstruction; (sequence, frame) -> output folder."""
    folders = {}
    for sequence, frame in truth.timesteps:
        views = [
            ViewDepth(
                camera=truth.cameras[s],
                depth=along_rays(truth, s, truth.maps(sequence, frame, s)["depth"], 0.001),
            )
            for s in SERIALS_USED
        ]
        folders[sequence, frame] = canonicalize_timestep(
            views=views,
            cloud_points=np.zeros((0, 3)),
            tracked_vertices=truth.posed_vertices(sequence, frame),
            canonical_vertices=truth.model.v_template,
            faces=truth.model.f,
            config=CanonicalConfig(),
            out_dir=out / f"{sequence}_{frame}",
        ).directory
    return folders


def shard_samples(truth: Truth, folders: dict[tuple[str, int], Path]) -> list[ShardSample]:
    samples = []
    for (sequence, frame), folder in folders.items():
        params = truth.params[(truth.params.sequence == sequence) & (truth.params.frame == frame)]
        for serial in SERIALS_USED:
            samples.append(
                ShardSample(
                    subject="901",
                    sequence=sequence,
                    frame=frame,
                    camera=truth.cameras[serial],
                    flame={n: np.asarray(params[n].iloc[0]) for n in PARAMETER_NAMES},
                    quality={"valid_fraction": 0.5, "sfm_residual_px": 0.4},
                    image=truth.image_path(sequence, frame, serial),
                    maps=folder / view_file(serial),
                )
            )
    return samples


@pytest.fixture(scope="module")
def written(truth: Truth, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """(dataset folder holding shard `shard_000` and a manifest, the samples written)."""
    root = tmp_path_factory.mktemp("dataset")
    samples = shard_samples(truth, canonical_outputs(truth, tmp_path_factory.mktemp("canon")))
    info = write_shard(samples=samples, path=root / "shard_000")
    write_manifest(root=root, shards=[info])
    return root, samples


def broken_copy(written: tuple[Path, list], tmp_path: Path) -> Path:
    shard = tmp_path / "shard"
    shutil.copytree(written[0] / "shard_000", shard)
    return shard


def rewrite_index(shard: Path, change: dict[str, object], row: int = 0) -> None:
    """Change one row of the index (keeping the schema)."""
    index = pq.read_table(shard / INDEX_FILE).to_pandas()
    for column, value in change.items():
        index.at[row, column] = value
    table = pa.Table.from_pandas(index, schema=INDEX_SCHEMA, preserve_index=False)
    pq.write_table(table, shard / INDEX_FILE)


def test_round_trip(written: tuple[Path, list]):
    root, samples = written
    read = list(iter_samples(root / "shard_000"))
    assert len(read) == len(samples) == 24
    for sample, back in zip(samples, read, strict=True):
        assert (back["sequence"], back["frame"], back["serial"]) == (
            sample.sequence,
            sample.frame,
            sample.camera.serial,
        )
        assert np.array_equal(back["image"], read_image(sample.image))
        source = read_exr(sample.maps)
        for name in ("depth", "canonical", "normal", "mask", "distance"):
            assert np.array_equal(back[name], source[name], equal_nan=True)
        assert np.array_equal(back["K"], sample.camera.K)
        assert np.array_equal(back["world_2_cam"], sample.camera.world_2_cam)
        assert np.array_equal(back["expr"], np.float32(sample.flame["expr"]))
        assert back["valid_fraction"] == 0.5 and np.isnan(back["tracking_residual"])


def test_good_shard_and_dataset_validate(written: tuple[Path, list], capsys):
    root, _ = written
    assert validate(root / "shard_000") == []
    assert validate(root) == []
    assert main(["validate", str(root / "shard_000"), str(root)]) == 0
    assert "valid" in capsys.readouterr().out


def test_missing_and_altered_files_are_named(written: tuple[Path, list], tmp_path: Path, capsys):
    shard = broken_copy(written, tmp_path)
    index = pq.read_table(shard / INDEX_FILE).to_pandas()
    missing, altered = index.maps_file[3], index.image_file[5]
    (shard / missing).unlink()
    data = bytearray((shard / altered).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (shard / altered).write_bytes(bytes(data))
    (shard / "stray.txt").write_text("not listed")
    problems = {p.file: p.message for p in validate(shard)}
    assert problems == {
        missing: "missing",
        altered: "altered (checksum differs from the index)",
        "stray.txt": "not listed in the index",
    }
    assert main(["validate", str(shard)]) == 1
    out = capsys.readouterr().out
    assert missing in out and altered in out


def test_value_range_failures_are_named(written: tuple[Path, list], tmp_path: Path):
    shard = broken_copy(written, tmp_path)
    index = pq.read_table(shard / INDEX_FILE).to_pandas()
    maps_file = index.maps_file[2]
    maps = read_exr(shard / maps_file)
    maps["depth"] = -maps["depth"]
    maps["canonical"] = maps["canonical"] * 1000.0  # millimetres, not metres
    write_exr(shard / maps_file, maps)
    K = np.asarray(index.K[1]).copy()
    K[8] = 7.0  # last row 0 0 7
    world_2_cam = np.asarray(index.world_2_cam[4]).copy() * 2.0
    rewrite_index(shard, {"maps_sha256": sha256(shard / maps_file)}, row=2)
    rewrite_index(shard, {"K": K}, row=1)
    rewrite_index(shard, {"world_2_cam": world_2_cam}, row=4)
    messages = {}
    for p in validate(shard):
        messages.setdefault(p.file, []).append(p.message)
    assert any("depth outside" in m for m in messages[maps_file])
    assert any("canonical outside" in m for m in messages[maps_file])
    row1 = next(k for k in messages if k.startswith(f"{INDEX_FILE} row 1 "))
    row4 = next(k for k in messages if k.startswith(f"{INDEX_FILE} row 4 "))
    assert messages[row1] == ["K must be finite with last row 0 0 1"]
    assert "not rigid" in messages[row4][0]
    assert len(messages) == 3


def test_writer_refuses_bad_maps_and_leaves_nothing(written: tuple[Path, list], tmp_path: Path):
    _, samples = written
    maps = read_exr(samples[0].maps)
    del maps["canonical"]
    bad = write_exr(tmp_path / "bad.exr", maps)
    sample = samples[0]
    bad_sample = dataclasses.replace(sample, maps=bad)
    with pytest.raises(ShardError, match="channel canonical missing"):
        write_shard(samples=[bad_sample], path=tmp_path / "shard")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.exr"]
    with pytest.raises(ShardError, match="not a plain name"):
        write_shard(samples=[dataclasses.replace(sample, sequence="../x")], path=tmp_path / "s")


def test_dataset_manifest_detects_an_altered_index(written: tuple[Path, list], tmp_path: Path):
    root = tmp_path / "dataset"
    shutil.copytree(written[0], root)
    rewrite_index(root / "shard_000", {"valid_fraction": 0.25})
    problems = validate(root)
    assert [str(p) for p in problems] == [f"shard_000/{INDEX_FILE}: altered (checksum)"]
    shutil.rmtree(root / "shard_000")
    assert any(p.file == f"shard_000/{INDEX_FILE}" for p in validate(root))


def test_torch_dataset(written: tuple[Path, list]):
    dataset = ShardDataset.from_dataset(written[0])
    assert len(dataset) == 24
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    h, w = 401, 275
    assert batch["image"].shape == (2, 3, h, w) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert batch["depth"].shape == batch["mask"].shape == (2, 1, h, w)
    assert batch["canonical"].shape == batch["normal"].shape == (2, 3, h, w)
    assert batch["mask"].dtype == torch.bool and batch["mask"].any()
    assert torch.isfinite(batch["canonical"]).all() and torch.isfinite(batch["depth"]).all()
    assert (batch["depth"][batch["depth_valid"]] > 0).all()
    assert batch["K"].shape == (2, 3, 3) and batch["world_2_cam"].shape == (2, 4, 4)
    assert batch["serial"] == list(SERIALS_USED[:2])


def truth_matches(
    truth: Truth, source: tuple[str, int, str], target: tuple[str, int, str], pixels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Truth pixels (N, 2) in `target` of `pixels` (N, 2) of `source`, and whether each is
    seen there: the template point under each pixel (its triangle and barycentrics on the
    template), posed at the target's timestep, projected into its camera; seen where the
    target's truth depth there agrees within 2 mm and the face mask is 1."""
    canonical = truth.maps(*source)["canonical"][pixels[:, 1], pixels[:, 0]]
    template = trimesh.Trimesh(truth.model.v_template, truth.model.f, process=False)
    point, _, triangle = trimesh.proximity.closest_point(template, canonical)
    weights = trimesh.triangles.points_to_barycentric(template.triangles[triangle], point)
    posed = truth.posed_vertices(*target[:2])[truth.model.f[triangle]]
    camera = truth.cameras[target[2]]
    xy, z = project(np.einsum("nk,nkc->nc", weights, posed), camera)
    col, row = np.rint(xy).astype(int).T
    inside = (col >= 0) & (col < camera.width) & (row >= 0) & (row < camera.height)
    maps = truth.maps(*target)
    seen = np.zeros(len(xy), dtype=bool)
    seen[inside] = (np.abs(maps["depth"][row[inside], col[inside]] - z[inside]) < 0.002) & (
        maps["mask"][row[inside], col[inside]] == 1
    )
    return xy, seen


PAIRS = (
    (("EXP-1-head", 0, "222200037"), ("EXP-1-head", 2, "222200037")),
    (("EMO-1-shout+laugh", 0, "222200036"), ("EXP-1-head", 1, "222200036")),
    (("EXP-1-head", 0, "222200037"), ("EMO-1-shout+laugh", 2, "222200038")),
    (("EMO-1-shout+laugh", 1, "222200041"), ("EXP-1-head", 2, "222200036")),
)
"""(sequence, frame, serial) pairs of different timesteps: same camera, then different ones."""


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_canonical_correspondence_finds_the_truth(written, truth: Truth, source, target):
    """Eq. 2 on the shard's canonical maps (from 1 mm-noisy depth) against projected truth."""
    samples = {
        (s["sequence"], s["frame"], s["serial"]): s for s in iter_samples(written[0] / "shard_000")
    }
    src, tgt = samples[source], samples[target]
    rng = np.random.default_rng(0)
    face = (truth.maps(*source)["mask"] == 1) & (src["mask"] == 1)
    rows, cols = np.nonzero(face)
    pick = rng.choice(len(rows), size=min(1500, len(rows)), replace=False)
    pixels = np.stack([cols[pick], rows[pick]], axis=1)
    matches = match_views(
        source=src["canonical"],
        target=CanonicalIndex(tgt["canonical"], tgt["mask"] == 1),
        pixels=pixels,
        max_distance=0.01,
    )
    expected, seen = truth_matches(truth, source, target, pixels)
    use = seen & matches.found
    error = np.linalg.norm(matches.target[use] - expected[use], axis=1)
    print(
        f"\n{source} -> {target}: {use.sum()} seen, EPE median {np.median(error):.2f} px, "
        f"p90 {np.percentile(error, 90):.2f} px"
    )
    assert use.sum() > 200
    assert np.median(error) <= 2.0


def test_tracks_picture(written: tuple[Path, list], tmp_path: Path):
    path = tracks_picture(
        shard=written[0] / "shard_000", serial="222200037", path=tmp_path / "tracks.png"
    )
    assert path.stat().st_size > 50_000
    assert read_image(path).shape[2] == 3


def test_foreign_index_and_cli_exit_codes(written: tuple[Path, list], tmp_path: Path):
    shard = broken_copy(written, tmp_path)
    table = pq.read_table(shard / INDEX_FILE).drop_columns(["K"])
    pq.write_table(table, shard / INDEX_FILE)
    (problem,) = validate(shard)
    assert problem.file == INDEX_FILE and "['K']" in problem.message
    run = [sys.executable, "-m", "tasks.formats.shards", "validate"]
    repo = Path(__file__).parents[1]
    good = subprocess.run([*run, str(written[0])], cwd=repo, capture_output=True, text=True)
    bad = subprocess.run([*run, str(shard)], cwd=repo, capture_output=True, text=True)
    assert (good.returncode, bad.returncode) == (0, 1), good.stderr + bad.stderr
    assert "K" in bad.stdout


@pytest.mark.slow
def test_generated_sample_subject_end_to_end(tmp_path_factory: pytest.TempPathFactory):
    """The full generator's output (videos, truth on disk): one whole 16-view timestep through
    the canonical stage into a shard, with RGB decoded from the videos."""
    config = SampleSubjectConfig(
        subject="902", frames_per_sequence=2, sequences=("EMO-1-shout+laugh",)
    )
    root = tmp_path_factory.mktemp("generated")
    result = generate_sample_subject(config=config, root=root)
    gt_dir, sequence, frame = result.ground_truth_dir, config.sequences[0], 1
    cameras = read_cameras(gt_dir)
    params = pd.read_parquet(gt_dir / "params.parquet").iloc[frame]
    tensors = {n: torch.tensor(np.asarray(params[n]))[None] for n in PARAMETER_NAMES}
    model = build_sample_model()
    tracked = FlameLayer(model, torch.float64)(FlameParams(**tensors)).vertices[0].numpy()
    truth = {
        s: read_exr(ground_truth_map_path(gt_dir, sequence=sequence, frame=frame, serial=s))
        for s in SERIALS
    }
    out = canonicalize_timestep(
        views=[ViewDepth(camera=cameras[s], depth=truth[s]["depth"]) for s in SERIALS],
        cloud_points=np.zeros((0, 3)),
        tracked_vertices=tracked,
        canonical_vertices=model.v_template,
        faces=model.f,
        config=CanonicalConfig(),
        out_dir=root / "canonical",
    ).directory
    subject = load_subject(result.subject_dir)
    samples = []
    for serial in SERIALS:
        maps = read_exr(out / view_file(serial))
        error = np.linalg.norm(maps["canonical"] - truth[serial]["canonical"], axis=-1)
        assert np.median(error[truth[serial]["mask"] == 1]) < 1e-5, serial
        image = read_frames(
            subject, sequence=sequence, serial=serial, frames=[frame], downsample=2
        ).images[frame]
        png = root / "rgb" / f"cam_{serial}.png"
        png.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(png), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        samples.append(
            ShardSample(
                subject="902",
                sequence=sequence,
                frame=frame,
                camera=cameras[serial],
                flame={n: np.asarray(params[n]) for n in PARAMETER_NAMES},
                quality={},
                image=png,
                maps=out / view_file(serial),
            )
        )
    info = write_shard(samples=samples, path=root / "shards" / "shard_000")
    assert info.samples == 16 and validate(info.path) == []


def test_match_views_on_a_shifted_map():
    """A canonical map moved by (3, 2) pixels: every pixel finds itself moved; beyond
    `max_distance` or without a canonical coordinate nothing is found."""
    rows, cols = np.mgrid[0:40, 0:30]
    canonical = np.stack([cols * 0.001, rows * 0.001, np.zeros(rows.shape)], axis=-1)
    source = np.full_like(canonical, np.nan)
    source[:-2, :-3] = canonical[2:, 3:]
    matches = match_views(source=source, target=canonical)
    assert len(matches.source) == 38 * 27 and matches.found.all()
    assert np.array_equal(matches.target, matches.source + [3, 2])
    near = match_views(source=source + [0, 0, 0.004], target=canonical, max_distance=0.005)
    assert near.found.all() and np.allclose(near.distance, 0.004)
    far = match_views(source=source + [0, 0, 0.006], target=canonical, max_distance=0.005)
    assert not far.found.any()
    assert (far.target == -1).all() and np.isinf(far.distance).all()
    hole = match_views(source=source, target=canonical, pixels=np.array([[29, 39], [0, 0]]))
    assert hole.found.tolist() == [False, True]
