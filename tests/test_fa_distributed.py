"""DistributedDataParallel training on CPU with gloo and two real processes: a step of two
ranks equals one process that takes both ranks' batches, every rank holds the same
parameters, rank 0 alone logs and saves, and a two-process run resumes exactly (and under
another world size, as documented)."""

from __future__ import annotations

import csv
import dataclasses
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fa_scene import one_thread, write_scene_shard  # noqa: F401 (fixture)

from faceanything.data.batches import DataConfig
from faceanything.train.distributed import init_from_env
from faceanything.train.loop import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
WORLD = 2


@pytest.fixture(scope="module")
def four_timesteps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fa_ddp")
    steps = tuple(("EXP-1-head", f) for f in range(4))
    return write_scene_shard(root / "shard", timesteps=steps, cameras=3).path


def small_run(shards: Path, out: Path, **changes) -> TrainConfig:
    data = DataConfig(buckets=((56, 70),), max_images=2, views=(2, 2), augment=False)
    config = TrainConfig(
        shards=(str(shards),),
        out=str(out),
        size="tiny",
        steps=1,
        accumulation=1,
        lr=1e-3,
        lr_min=1e-4,
        splits=(),
        data=data,
        workers=0,
        eval_batches=0,
        device="cpu",
        progress=False,
    )
    return dataclasses.replace(config, **changes)


Job = tuple[str, TrainConfig, int]
"""(name, config, steps): a run trained to `steps` (fewer than config.steps: as if killed)."""


def _rank(rank: int, port: int, jobs: list[Job], out: Path) -> None:
    """One torchrun-like process: the environment torchrun sets, the real initialisation,
    then each job's Trainer run in turn, this rank's parameters and data position written."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    init_from_env("cpu")
    for name, config, steps in jobs:
        trainer = Trainer(config)
        trainer.config = dataclasses.replace(config, steps=steps)
        trainer.run()
        state = {"model": trainer.net.state_dict(), "next_batch": trainer.state.next_batch}
        torch.save(state, out / f"{name}_rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(four_timesteps: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two processes (one spawn, since starting one costs seconds) train: one step ("step");
    two steps straight ("straight"); one step, then resumed to two ("stopped", "resumed")."""
    root = tmp_path_factory.mktemp("fa_ddp_runs")
    stopped = small_run(four_timesteps, root / "b", steps=2)
    jobs = [
        ("step", small_run(four_timesteps, root / "ddp"), 1),
        ("straight", small_run(four_timesteps, root / "a", steps=2), 2),
        ("stopped", stopped, 1),
        ("resumed", stopped, 2),
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(port, jobs, root), nprocs=WORLD, join=True)
    return root


def states(root: Path, name: str) -> list[dict[str, object]]:
    """Each rank's parameters and next batch after job `name`."""
    return [torch.load(root / f"{name}_rank{r}.pt") for r in range(WORLD)]


def read_log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_ranks_step_like_one_process_with_both_batches(
    ddp_runs: Path, four_timesteps: Path, tmp_path: Path
):
    ranks = states(ddp_runs, "step")
    single = Trainer(small_run(four_timesteps, tmp_path / "single", accumulation=WORLD))
    initial = {k: v.clone() for k, v in single.net.state_dict().items()}
    single.run()
    ours = single.net.state_dict()
    assert all(torch.equal(ranks[0]["model"][k], ranks[1]["model"][k]) for k in ours)
    assert max_difference(ours, initial) > 1e-4  # the step moved the weights
    assert max_difference(ranks[0]["model"], ours) < 1e-5
    assert [r["next_batch"] for r in ranks] == [2, 3]  # rank 0 took batch 0, rank 1 batch 1
    log = read_log(ddp_runs / "ddp")
    assert [(r["step"], r["batch"], r["images"]) for r in log] == [("1", "0", "4")]
    reference = read_log(tmp_path / "single")[0]
    assert float(log[0]["loss"]) == pytest.approx(float(reference["loss"]))
    # Adam's first step barely depends on the gradient's scale: the norm shows it was averaged.
    assert float(log[0]["grad_norm"]) == pytest.approx(float(reference["grad_norm"]), rel=1e-5)
    saved = torch.load(ddp_runs / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["train"]["world_size"] == WORLD
    assert [r["next_batch"] for r in saved["train"]["ranks"]] == [2, 3]


def test_two_ranks_resume_exactly(ddp_runs: Path):
    straight, resumed = states(ddp_runs, "straight"), states(ddp_runs, "resumed")
    assert max_difference(straight[0]["model"], resumed[0]["model"]) == 0.0
    assert [r["next_batch"] for r in resumed] == [4, 5]
    log, reference = read_log(ddp_runs / "b"), read_log(ddp_runs / "a")
    assert [r["step"] for r in log] == ["1", "2"]
    assert [r["loss"] for r in log] == [r["loss"] for r in reference]


def test_another_world_size_resumes_weights_and_step(ddp_runs: Path, four_timesteps: Path):
    """One process resuming the two-process run: weights, optimizer and step as saved; data
    from the farthest rank's next batch (none taken twice)."""
    alone = Trainer(small_run(four_timesteps, ddp_runs / "b", steps=3))
    assert alone.state.step == 2 and alone.state.next_batch == 5
    resumed = states(ddp_runs, "resumed")
    assert max_difference(alone.net.state_dict(), resumed[0]["model"]) == 0.0
