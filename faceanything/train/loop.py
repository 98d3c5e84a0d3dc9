"""Training Face Anything (paper 3.1, 3.2, 4.1, B.1): stage 2, the whole model on shards, or
stage 1 (`stage="monocular"`), depth alone with the masked L1 loss on single images
(`faceanything.data.monocular`).

    python -m faceanything.train --shards out/shards --out runs/small --size small \\
        --init DA3-SMALL/model.safetensors          (command line: `faceanything.train.cli`)

AdamW, learning rate cosine from 2e-5 to 1e-8 over the run, gradient clipping 1, gradient
accumulation 3, bf16 autocast (GPU) and gradient checkpointing on request, a frozen backbone on
request (the paper's ablation). Under torchrun every process trains its share of the batches
with DistributedDataParallel (`faceanything.train.distributed`). Held-out subjects and
timesteps come from split files; their batches are evaluated every `eval_every` steps (losses,
depth AbsRel, canonical-NN EPE, a picture), on rank 0. The run folder holds:

    log.csv                one row per optimizer step ("train") and per evaluation ("eval")
    split.json             the held-out timesteps actually used
    pictures/step_*.png    input, predicted vs true depth and canonical map
    checkpoints/last.pt    model, optimizer, scheduler, world size, each rank's next batch and
                           RNG: `--out` again resumes exactly; `load_checkpoint` reads it for
                           inference
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from faceanything.checkpoint import read_checkpoint, save_checkpoint
from faceanything.data.batches import (
    BatchPlanner,
    DataConfig,
    ShardBatches,
    Split,
    batch_loader,
    make_batch,
    read_shards,
    read_split,
    split_rows,
    timestep_list,
)
from faceanything.data.monocular import (
    MonocularBatches,
    david_items,
    make_monocular_batch,
    shard_items,
)
from faceanything.model.network import FaceAnything, FaceAnythingConfig, Size, load_weights
from faceanything.train.distributed import (
    current_ranks,
    gather,
    rng_state,
    seed_rng,
    set_rng_state,
    sum_across,
)
from faceanything.train.losses import LossConfig, face_anything_loss, monocular_depth_loss
from faceanything.train.validation import Figures, figures, save_picture

TERMS = [f"{k}_{t}" for k in ("depth", "ray", "canonical") for t in ("reg", "conf", "grad")]
COLUMNS = ["step", "split", "batch", "images", "lr", "loss", *TERMS, "grad_norm", "seconds"]
COLUMNS += ["corrupt", *(f.name for f in dataclasses.fields(Figures))]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run."""

    shards: tuple[str, ...]
    """Shard folders, dataset folders (with a manifest) or folders of shards."""
    stage: Literal["full", "monocular"] = "full"
    """"full": the whole model on shards (paper stage 2); "monocular": masked-L1 depth
    pretraining on single images (stage 1: `david` folders and the shards' views)."""
    david: tuple[str, ...] = ()
    """SynthHuman (DAViD) folders for stage 1 (`faceanything.data.monocular`)."""
    david_faces_only: bool = True
    """Stage 1 takes SynthHuman's face samples only (not the bodies)."""
    david_holdout_every: int = 50
    """Stage 1 holds out SynthHuman samples whose index is a multiple of this."""
    monocular_batch: int = 8
    """Images per stage-1 batch."""
    out: str
    """Run folder (log, pictures, checkpoints); an existing run there is resumed."""
    size: Size = "small"
    """Network size (ignored when `init` is one of our checkpoints: its size is used)."""
    init: str | None = None
    """DA3 or Face Anything checkpoint to start from; None: random initialisation."""
    trust_checkpoint: bool = False
    """`init` may run pickled code when loaded (a trusted file weights_only refuses)."""
    steps: int = 24_000
    """Optimizer steps (paper: 90 epochs x 800 batches / 3 accumulated)."""
    accumulation: int = 3
    """Batches per optimizer step."""
    lr: float = 2e-5
    """Peak learning rate (cosine decay from it)."""
    lr_min: float = 1e-8
    """Learning rate at the last step."""
    weight_decay: float = 0.01
    """AdamW's decoupled weight decay (torch's default; the paper gives none)."""
    clip: float = 1.0
    """Gradient norm clipping."""
    bf16: bool | None = None
    """bfloat16 autocast of the backbone; None: on CUDA only."""
    gradient_checkpointing: bool = False
    """Recompute backbone blocks in backward."""
    freeze_backbone: bool = False
    """Train the heads only (the paper's ablation)."""
    splits: tuple[str, ...] = ("manifests/eval_split.json",)
    """Split files whose held-out subjects/timesteps are kept out of training (`read_split`)."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """Batch sampling and shaping."""
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    """Loss weights."""
    workers: int = 2
    """Data worker processes (0: load in the training process)."""
    eval_every: int = 500
    """Evaluate (and draw) every this many steps, and at the end."""
    eval_batches: int = 4
    """Held-out batches per evaluation (fixed, unaugmented, first bucket)."""
    checkpoint_every: int = 1000
    """Save `checkpoints/last.pt` every this many steps (and at the end)."""
    keep_checkpoints: bool = False
    """Also keep a `step_*.pt` copy at every save."""
    seed: int = 0
    """Seed of batches and initialisation."""
    device: str = "auto"
    """"auto" (CUDA when there is one), "cpu", "cuda", ..."""
    progress: bool = True
    """Show a tqdm progress bar."""


@dataclasses.dataclass
class _State:
    """What changes as training goes (and is saved for resuming)."""

    step: int = 0
    next_batch: int = 0


def build_network(config: TrainConfig, *, verbose: bool = True) -> FaceAnything:
    """Random, or from `init` (our checkpoint's size and canonical centre win)."""
    size, centre = config.size, (0.0, 0.0, 0.0)
    if config.init:
        loaded = read_checkpoint(config.init, trust=config.trust_checkpoint)
        if loaded.config:
            size = loaded.config.get("size", size)
            centre = tuple(loaded.config.get("canonical_center", centre))
    net_config = FaceAnythingConfig(
        size=size, canonical_center=centre, gradient_checkpointing=config.gradient_checkpointing
    )
    torch.manual_seed(config.seed)
    net = FaceAnything(net_config)
    if config.init:
        load_weights(net, config.init, loaded=loaded)
        if verbose:
            tqdm.write(str(net.load_report))
    if config.freeze_backbone:
        net.model.backbone.requires_grad_(False)
    return net


class Trainer:
    """The state of one run (this process's part of it under torchrun); `run()` trains to
    `config.steps`."""

    def __init__(self, config: TrainConfig) -> None:
        self.config, self.run_dir = config, Path(config.out)
        self.ranks = current_ranks()
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and self.ranks.world > 1:
            device = f"cuda:{self.ranks.local_rank}"
        self.device = torch.device(device)
        self.bf16 = self.device.type == "cuda" if config.bf16 is None else config.bf16
        self.net = build_network(config, verbose=self.ranks.main).to(self.device)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, config.steps), eta_min=config.lr_min
        )
        self.state = _State(next_batch=self.ranks.rank)
        self.train_rows, self.held_rows = self._split()
        if config.stage == "monocular":
            self.train_items, self.held_items = self._monocular_items()
        self.eval_batches = self._eval_batches() if self.ranks.main else []
        self.corrupt = 0
        self._resume()
        self.trained = self.net
        if self.ranks.world > 1:  # DualDPT has parameters without gradient (FACTS.md)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained = DistributedDataParallel(
                self.net, device_ids=ids, find_unused_parameters=True
            )

    def _split(self):
        if not self.config.shards and self.config.stage == "monocular":
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return pd.DataFrame(), pd.DataFrame()
        rows = read_shards(self.config.shards)
        split = Split()
        for path in self.config.splits:
            part = read_split(path)
            split = Split(
                subjects=split.subjects + part.subjects,
                timesteps=split.timesteps + part.timesteps,
                every=part.every or split.every,
            )
        train, held = split_rows(rows, split)
        if train.empty:
            raise ValueError(
                f"every sample of {self.config.shards} is held out by {self.config.splits}"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.ranks.main:
            record = {"holdout_timesteps": timestep_list(held), "training_samples": len(train)}
            (self.run_dir / "split.json").write_text(json.dumps(record, indent=1))
        return train, held

    def _monocular_items(self) -> tuple[list, list]:
        """Stage 1's training and held-out items: the shards' views (split as stage 2's) and
        the SynthHuman samples (every `david_holdout_every`-th held out)."""
        train, held = shard_items(self.train_rows), shard_items(self.held_rows)
        every = self.config.david_holdout_every
        for folder in self.config.david:
            for item in david_items(folder, faces_only=self.config.david_faces_only):
                (held if item[2] % every == 0 else train).append(item)
        if not train:
            raise ValueError(
                f"no stage-1 training image in {self.config.shards} or {self.config.david}"
            )
        return train, held

    def _eval_batches(self) -> list[dict[str, object]]:
        data = dataclasses.replace(
            self.config.data,
            augment=False,
            seed=self.config.seed + 1,
            buckets=self.config.data.buckets[:1],
        )
        if self.config.stage == "monocular":
            if not self.held_items or not self.config.eval_batches:
                return []
            size = self.config.monocular_batch
            made = [
                make_monocular_batch(self.held_items, data, k, batch_size=size)
                for k in range(self.config.eval_batches)
            ]
            return [b for b in made if b["images"] is not None]
        if self.held_rows.empty or not self.config.eval_batches:
            return []
        planner = BatchPlanner(self.held_rows, data)
        centre = self.net.config.canonical_center
        made = [
            make_batch(self.held_rows, planner, k, canonical_center=centre)
            for k in range(self.config.eval_batches)
        ]
        return [b for b in made if b["images"] is not None]

    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def _resume(self) -> None:
        if not self.last_path.is_file():
            self._start_log(keep_until=None)
            return
        loaded = read_checkpoint(self.last_path)
        self.net.load_state_dict(loaded.state)
        train = loaded.train
        self.optimizer.load_state_dict(train["optimizer"])
        self.scheduler.load_state_dict(train["scheduler"])
        step, saved = int(train["step"]), train["ranks"]
        if len(saved) == self.ranks.world:
            mine = saved[self.ranks.rank]
            self.state = _State(step=step, next_batch=int(mine["next_batch"]))
            set_rng_state(mine["rng"])
            note = ""
        else:  # another world size: see faceanything.train.distributed
            start = max(int(r["next_batch"]) for r in saved) + self.ranks.rank
            self.state = _State(step=step, next_batch=start)
            seed_rng(self.config.seed, step, self.ranks.rank)
            note = (
                f" (saved by {len(saved)} processes, now {self.ranks.world}: data resumes at "
                f"batch {start - self.ranks.rank} + rank, RNG reseeded; not bit-exact)"
            )
        self._start_log(keep_until=self.state.step)
        if self.ranks.main:
            tqdm.write(f"resumed {self.last_path} at step {self.state.step}{note}")

    def save(self) -> Path | None:
        """Write `checkpoints/last.pt` (and a `step_*.pt` copy when asked) from rank 0; every
        rank calls it (each rank's data position and RNG are gathered). None on other ranks."""
        mine = {"next_batch": self.state.next_batch, "rng": rng_state()}
        ranks = gather(mine, self.ranks)
        if not self.ranks.main:
            return None
        train = {
            "step": self.state.step,
            "world_size": self.ranks.world,
            "ranks": ranks,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": json.loads(json.dumps(dataclasses.asdict(self.config))),
        }
        config = dataclasses.asdict(self.net.config)
        path = save_checkpoint(
            self.last_path, config=config, state=self.net.state_dict(), train=train
        )
        if self.config.keep_checkpoints:
            save_checkpoint(
                path.with_name(f"step_{self.state.step:07d}.pt"),
                config=config,
                state=self.net.state_dict(),
            )
        return path

    def _start_log(self, *, keep_until: int | None) -> None:
        """A fresh log.csv, keeping the rows up to step `keep_until` of an earlier one (a
        resumed run repeats the later ones). Rank 0 only."""
        if not self.ranks.main:
            return
        path = self.run_dir / "log.csv"
        kept = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(kept)

    def _log(self, rows: list[dict[str, object]]) -> None:
        if not self.ranks.main:
            return
        with open(self.run_dir / "log.csv", "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerows(rows)

    def _batches(self) -> Iterator[dict[str, object]]:
        if self.config.stage == "monocular":
            dataset = MonocularBatches(
                self.train_items,
                self.config.data,
                batch_size=self.config.monocular_batch,
                start=self.state.next_batch,
                every=self.ranks.world,
            )
        else:
            dataset = ShardBatches(
                self.train_rows,
                self.config.data,
                start=self.state.next_batch,
                every=self.ranks.world,
                canonical_center=self.net.config.canonical_center,
            )
        for batch in batch_loader(dataset, workers=self.config.workers):
            self.state.next_batch = batch["k"] + self.ranks.world
            self.corrupt += len(batch["corrupt"])
            if batch["images"] is not None:
                yield batch

    def _autocast(self):
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _forward(
        self, batch: dict[str, object], net: torch.nn.Module
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        tensors = {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        with self._autocast():
            out = net(tensors["images"], cameras=False)
        if self.config.stage == "monocular":
            return out, monocular_depth_loss(out, tensors)
        return out, face_anything_loss(out, tensors, config=self.config.loss)

    def train_step(self, batches: Iterator[dict[str, object]]) -> dict[str, object]:
        """One optimizer step over `accumulation` batches of each rank (gradients averaged
        over the ranks at the last one); its log row, losses averaged over the ranks."""
        start = time.perf_counter()
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        images = 0
        for n in range(self.config.accumulation):
            batch = next(batches)
            last = n == self.config.accumulation - 1
            sync = nullcontext() if last or self.trained is self.net else self.trained.no_sync()
            with sync:
                _, losses = self._forward(batch, self.trained)
                (losses["loss"] / self.config.accumulation).backward()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.item() / self.config.accumulation
            images += batch["images"].shape[0] * batch["images"].shape[1]
        *means, images, corrupt = sum_across([*sums.values(), images, self.corrupt], self.ranks)
        sums = {key: value / self.ranks.world for key, value in zip(sums, means, strict=True)}
        params = [p for p in self.net.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        return {
            "step": self.state.step,
            "split": "train",
            "batch": self.state.next_batch - self.ranks.world,
            "images": int(images),
            "lr": lr,
            **sums,
            "grad_norm": grad_norm.item(),
            "seconds": time.perf_counter() - start,
            "corrupt": int(corrupt),
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, object] | None:
        """Held-out losses and figures (log row), and the picture of the first batch."""
        if not self.eval_batches:
            return None
        start = time.perf_counter()
        self.net.eval()
        outputs, sums = [], {}
        for batch in self.eval_batches:
            out, losses = self._forward(batch, self.net)
            outputs.append({k: v.float().cpu() for k, v in out.items()})
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.item() / len(self.eval_batches)
        found = figures(outputs, self.eval_batches)
        if self.config.stage == "full":  # stage 1 has no canonical truth to draw
            save_picture(
                self.run_dir / "pictures" / f"step_{self.state.step:07d}.png",
                self.eval_batches[0],
                outputs[0],
            )
        images = sum(b["images"].shape[0] * b["images"].shape[1] for b in self.eval_batches)
        return {
            "step": self.state.step,
            "split": "eval",
            "images": images,
            **sums,
            **dataclasses.asdict(found),
            "seconds": time.perf_counter() - start,
        }

    def run(self) -> list[dict[str, object]]:
        """Train from the current step to `config.steps`; the log rows written."""
        config, rows = self.config, []
        if self.state.step == 0 and (first := self.evaluate()):
            rows.append(first)
            self._log([first])
        batches = self._batches()
        bar = tqdm(
            total=config.steps,
            initial=self.state.step,
            disable=not (config.progress and self.ranks.main),
            unit="step",
        )
        while self.state.step < config.steps:
            row = self.train_step(batches)
            written = [row]
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
            done = self.state.step == config.steps
            due = done or self.state.step % config.eval_every == 0
            if due and (evaluation := self.evaluate()):
                written.append(evaluation)
            self._log(written)
            rows += written
            if done or self.state.step % config.checkpoint_every == 0:
                self.save()
        bar.close()
        return rows


def train(config: TrainConfig) -> list[dict[str, object]]:
    """Train (or resume) a run; the log rows of this call."""
    return Trainer(config).run()
