"""Training: the loss falls on two samples, a run resumes exactly, and the command line writes
its log, pictures, held-out record and a checkpoint that loads for inference."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from fa_scene import one_thread, write_scene_shard  # noqa: F401 (fixture)

from faceanything.data.batches import DataConfig
from faceanything.model.network import load_checkpoint
from faceanything.train.cli import main
from faceanything.train.loop import TrainConfig, Trainer, train
from faceanything.train.validation import correspondence_epe, depth_abs_rel

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One timestep seen by two cameras."""
    root = tmp_path_factory.mktemp("fa_train_two")
    return write_scene_shard(root / "shard", timesteps=(("EXP-1-head", 0),), cameras=2).path


@pytest.fixture(scope="module")
def four_timesteps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fa_train_four")
    steps = tuple(("EXP-1-head", f) for f in range(4))
    return write_scene_shard(root / "shard", timesteps=steps, cameras=3).path


def small_run(shards: Path, out: Path, **changes) -> TrainConfig:
    data = DataConfig(buckets=((56, 70),), max_images=2, views=(2, 2), augment=False)
    config = TrainConfig(
        shards=(str(shards),),
        out=str(out),
        size="tiny",
        steps=12,
        accumulation=1,
        lr=1e-3,
        lr_min=1e-4,
        splits=(),
        data=data,
        workers=0,
        eval_batches=0,
        progress=False,
    )
    return dataclasses.replace(config, **changes)


def read_log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_loss_falls_on_two_samples(two_samples: Path, tmp_path: Path):
    rows = train(small_run(two_samples, tmp_path / "run"))
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert len(losses) == 12 and all(r["images"] == 2 for r in rows)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    canonical = [r["canonical_reg"] for r in rows]
    assert canonical[-1] < canonical[0]


def test_resume_is_exact(four_timesteps: Path, tmp_path: Path):
    straight = Trainer(small_run(four_timesteps, tmp_path / "a", steps=4, checkpoint_every=2))
    straight.run()
    stopped = small_run(four_timesteps, tmp_path / "b", steps=4, checkpoint_every=2)
    first = Trainer(stopped)
    first.config = dataclasses.replace(stopped, steps=2)  # as if killed after step 2's save
    first.run()
    resumed = Trainer(stopped)
    assert resumed.state.step == 2 and resumed.state.next_batch == 2
    resumed.run()
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log, reference = read_log(tmp_path / "b"), read_log(tmp_path / "a")
    assert [r["step"] for r in log] == ["1", "2", "3", "4"]
    assert [r["loss"] for r in log] == [r["loss"] for r in reference]


def test_command_line_run(four_timesteps: Path, tmp_path: Path):
    split = tmp_path / "split.json"
    held = [["EXP-1-head", 2], ["EXP-1-head", 3]]
    split.write_text(json.dumps({"holdout_timesteps": {"901": held}}))
    run = tmp_path / "run"
    args = ["--shards", str(four_timesteps), "--out", str(run), "--size", "tiny", "--steps", "2"]
    args += ["--accumulation", "2", "--lr", "1e-3", "--split", str(split), "--max-images", "3"]
    args += ["--views", "2", "3", "--scale", "0.14", "--workers", "1", "--eval-every", "1"]
    args += ["--eval-batches", "2", "--no-progress"]
    assert main(args) == 0
    record = json.loads((run / "split.json").read_text())
    assert record["holdout_timesteps"] == {"901": held}
    log = read_log(run)
    assert [(r["step"], r["split"]) for r in log] == [
        ("0", "eval"), ("1", "train"), ("1", "eval"), ("2", "train"), ("2", "eval"),
    ]  # fmt: skip
    assert all(float(r["abs_rel"]) >= 0 and float(r["epe_zero"]) > 0 for r in log[::2])
    pictures = sorted(p.name for p in (run / "pictures").iterdir())
    assert pictures == ["step_0000000.png", "step_0000001.png", "step_0000002.png"]
    net = load_checkpoint(run / "checkpoints" / "last.pt")
    assert net.config.size == "tiny" and net.load_report.kind == "faceanything"


@pytest.mark.slow
def test_sample_training_beats_trivial_baselines(tmp_path: Path):
    """benchmarks/bench_train.py's run on `make dataset`'s shards: every held-out loss term
    falls, depth AbsRel beats a constant depth and canonical-NN EPE beats zero motion."""
    root = Path(__file__).resolve().parents[1]
    shards = root / "out" / "shards"
    if not list(shards.glob("*/index.parquet")):
        pytest.skip("needs `make dataset` (out/shards)")
    spec = importlib.util.spec_from_file_location(
        "bench_train", root / "benchmarks" / "bench_train.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run_bench(
        bench.bench_config(shards, tmp_path / "run", steps=600, size="tiny", scale=0.25)
    )
    print(bench.report(result))
    assert all(result["checks"].values()), bench.report(result)


def test_validation_figures_by_hand():
    true = torch.arange(1.0, 13.0).view(1, 3, 4)
    valid = torch.ones(1, 3, 4, dtype=torch.bool)
    ours, constant = depth_abs_rel(2 * true, true, valid)  # scale is aligned away
    assert ours == pytest.approx([0.0], abs=1e-6)
    # the constant is the true median 6.5: mean of |6.5 - t| / t over t = 1..12
    assert constant == pytest.approx([sum(abs(6.5 - t) / t for t in range(1, 13)) / 12])
    # view 1 holds view 0's ramp moved 3 px right, in a crop whose principal point is 1 px
    # larger: 2 px of camera motion, zero motion is 2 px off, exact maps 0 px
    x = torch.arange(30.0).view(1, 30).expand(20, 30)
    y = torch.arange(20.0).view(20, 1).expand(20, 30)
    ramp = torch.stack([0.001 * x, 0.001 * y, torch.zeros_like(x)], -1)
    moved = torch.roll(ramp, shifts=3, dims=1)
    canonical = torch.stack([ramp, moved])
    valid = torch.zeros(2, 20, 30, dtype=torch.bool)
    valid[0, 5:15, 5:20] = True
    valid[1, 5:15, 8:23] = True
    K = torch.tensor([[50.0, 0, 15], [0, 50.0, 10], [0, 0, 1]]).repeat(2, 1, 1)
    K[1, 0, 2] += 1
    epe, zero = correspondence_epe(canonical, canonical, valid, K)
    assert epe == pytest.approx([0.0]) and zero == pytest.approx([2.0])
