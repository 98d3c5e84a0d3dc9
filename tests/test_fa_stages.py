"""The paper's two stages (3.2, 4.1): stage 1 reads DAViD's SynthHuman layout (a folder written
here in that layout from the exact ball scene) and pretrains depth with the masked L1 loss;
stage 2 starts from the stage-1 checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fa_scene import one_thread, render, ring_cameras, write_scene_shard  # noqa: F401 (fixture)

from faceanything.checkpoint import read_checkpoint
from faceanything.data.batches import DataConfig
from faceanything.data.monocular import DAVID_FACES, david_items, read_david
from faceanything.train.cli import main
from faceanything.train.loop import TrainConfig, build_network, train
from faceanything.train.losses import monocular_depth_loss
from tasks.formats.exr import write_exr

pytestmark = pytest.mark.usefixtures("one_thread")
BACKGROUND_CM = 5000.0
"""Depth the SynthHuman files hold behind the person (alpha 0): never supervised."""


def write_david_sample(folder: Path, index: int, view: dict[str, np.ndarray], K: np.ndarray):
    """One sample in SynthHuman's layout: rgb/alpha PNG, depth EXR in cm (one channel), K."""
    stem = f"{index:07d}"
    hit = np.isfinite(view["depth"])
    cv2.imwrite(str(folder / f"rgb_{stem}.png"), cv2.cvtColor(view["image"], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / f"alpha_{stem}.png"), (hit * 255).astype(np.uint8))
    depth_cm = np.where(hit, view["depth"] * 100.0, BACKGROUND_CM).astype(np.float32)
    write_exr(folder / f"depth_{stem}.exr", {"Y": depth_cm})
    write_exr(folder / f"normal_{stem}.exr", {"normal": np.nan_to_num(view["normal"])})
    np.savetxt(folder / f"cam_{stem}.txt", K)


@pytest.fixture(scope="module")
def david(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`download_data.py TARGET` leaves TARGET/SynthHuman/: 8 face samples (4 timesteps x 2
    cameras), one body sample (index DAVID_FACES) and one incomplete sample (no depth)."""
    root = tmp_path_factory.mktemp("david")
    folder = root / "SynthHuman"
    folder.mkdir()
    cameras = ring_cameras(2)
    index = 0
    for frame in range(4):
        for camera in cameras:
            write_david_sample(folder, index, render(camera, frame), camera.K)
            index += 1
    write_david_sample(folder, DAVID_FACES, render(cameras[0], 5), cameras[0].K)
    write_david_sample(folder, 8, render(cameras[1], 6), cameras[1].K)
    (folder / "depth_0000008.exr").unlink()
    return root


def test_david_layout_is_read_in_metres_with_its_mask(david: Path):
    items = david_items(david)
    assert [i for _, _, i in items] == list(range(8))  # faces only, complete samples only
    assert [i for _, _, i in david_items(david, faces_only=False)][-1] == DAVID_FACES
    camera = ring_cameras(2)[1]
    truth = render(camera, 0)
    sample = read_david(david / "SynthHuman", 1)
    hit = np.isfinite(truth["depth"])
    assert np.array_equal(np.isfinite(sample["depth"]), hit) and hit.sum() > 100
    assert np.allclose(sample["depth"][hit], truth["depth"][hit], rtol=1e-6)
    assert np.array_equal(sample["mask"] == 1, hit)
    assert np.allclose(sample["K"], camera.K) and np.array_equal(sample["image"], truth["image"])


def test_masked_l1_ignores_the_background():
    true = torch.tensor([[1.0, 2.0], [3.0, 50.0]])
    valid = torch.tensor([[True, True], [True, False]])
    pred = torch.tensor([[1.5, 2.0], [2.0, -7.0]])
    loss = monocular_depth_loss({"depth": pred}, {"depth": true, "depth_valid": valid})
    assert loss["loss"].item() == pytest.approx((0.5 + 0.0 + 1.0) / 3)


def stage_config(out: Path, **changes) -> TrainConfig:
    data = DataConfig(buckets=((56, 70),), augment=False)
    config = dict(
        shards=(),
        out=str(out),
        size="tiny",
        steps=30,
        accumulation=1,
        lr=2e-3,
        lr_min=2e-4,
        splits=(),
        data=data,
        workers=0,
        eval_every=30,
        eval_batches=1,
        progress=False,
        stage="monocular",
        david_holdout_every=4,
        monocular_batch=4,
    )
    return TrainConfig(**(config | changes))


def test_stage_one_learns_depth_then_stage_two_starts_from_it(
    david: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
):
    first = stage_config(tmp_path / "stage1", david=(str(david),))
    rows = train(first)
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [0, 30]  # held out: samples 0 and 4
    assert evals[-1]["loss"] < 0.5 * evals[0]["loss"], evals
    assert evals[-1]["abs_rel"] < evals[-1]["abs_rel_constant"], evals[-1]
    stage1 = tmp_path / "stage1" / "checkpoints" / "last.pt"
    shard = write_scene_shard(tmp_path_factory.mktemp("stage2") / "shard", cameras=2).path
    args = ["--shards", str(shard), "--out", str(tmp_path / "stage2"), "--init", str(stage1)]
    args += ["--steps", "1", "--accumulation", "1", "--split", "--max-images", "2"]
    args += ["--views", "2", "2", "--scale", "0.14", "--workers", "0", "--eval-batches", "0"]
    args += ["--no-progress", "--lambda-c", "10", "--strategies", "multiview"]
    assert main(args) == 0
    with open(tmp_path / "stage2" / "log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    assert [r["split"] for r in log] == ["train"] and float(log[0]["canonical_reg"]) > 0
    start = build_network(stage_config(tmp_path / "x", init=str(stage1), stage="full"))
    saved = read_checkpoint(stage1).state
    assert all(torch.equal(v, saved[k]) for k, v in start.state_dict().items())
