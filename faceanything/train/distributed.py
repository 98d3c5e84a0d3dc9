"""Training on several processes (paper 4.1 trains on GPUs in parallel): plain PyTorch DDP
launched by torchrun, as DUSt3R, VGGT and community DA3 training do.

    torchrun --standalone --nproc_per_node 8 -m faceanything.train ...
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \\
        --rdzv_id RUN -m faceanything.train ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training is one process. Each rank
takes batches rank, rank + W, rank + 2W, ... of the one seeded batch stream (a batch depends only
on its number, `faceanything.data.batches`), so the ranks' batches are distinct and together
are the stream a single process would take. DDP averages gradients, so a step of W ranks
equals one process accumulating the W batches. Rank 0 alone logs, draws and saves.

Checkpoints record the world size and each rank's next batch and RNG state: the same world
size resumes exactly. Another world size resumes the model, optimizer, scheduler and step
exactly, and the data stream at batch max(next batches) + rank (no batch taken twice, a few
skipped), with each rank's RNG from (seed, step, rank); the run says so.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ranks:
    """Where this process stands among the training processes."""

    rank: int = 0
    """This process's rank (0: the one that logs and saves)."""
    world: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this node: which GPU this process uses."""

    @property
    def main(self) -> bool:
        """Whether this process logs, draws and saves."""
        return self.rank == 0


def init_from_env(device: str = "auto") -> Ranks:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, gloo on
    CPU); one process when WORLD_SIZE is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    ranks = Ranks(
        rank=int(os.environ["RANK"]),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return ranks


def current_ranks() -> Ranks:
    """The process group's ranks (one process when none was initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local)


def sum_across(values: Sequence[float], ranks: Ranks) -> list[float]:
    """Each value summed over the ranks (for log rows)."""
    if ranks.world == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def gather(value: object, ranks: Ranks) -> list[object]:
    """Every rank's `value`, in rank order (all ranks must call it)."""
    if ranks.world == 1:
        return [value]
    found: list[object] = [None] * ranks.world
    dist.all_gather_object(found, value)
    return found


def rng_state() -> dict[str, object]:
    """Global RNG states as plain data (our checkpoints load with weights_only=True)."""
    numpy = np.random.get_state(legacy=False)
    numpy["state"] = {"key": numpy["state"]["key"].tolist(), "pos": int(numpy["state"]["pos"])}
    return {"torch": torch.get_rng_state(), "numpy": numpy, "python": random.getstate()}


def set_rng_state(state: dict[str, object]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = dict(state["numpy"])
    key = np.asarray(numpy["state"]["key"], dtype=np.uint32)
    numpy["state"] = {"key": key, "pos": int(numpy["state"]["pos"])}
    np.random.set_state(numpy)
    random.setstate(state["python"])


def seed_rng(seed: int, step: int, rank: int) -> None:
    """Fresh RNG states for a rank resumed under another world size."""
    value = int(np.random.default_rng([seed, step, rank]).integers(2**31))
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)
