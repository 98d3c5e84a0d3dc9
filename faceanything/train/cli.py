"""`python -m faceanything.train`: the command line of `faceanything.train.loop`.

    python -m faceanything.train --shards out/shards --out runs/small --size small \\
        --init DA3-SMALL/model.safetensors
    torchrun --standalone --nproc_per_node 8 -m faceanything.train ...   # DDP, one node

Under torchrun every process runs this; rank 0 alone prints, logs and saves
(`faceanything.train.distributed`).
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist

from faceanything.data.batches import DataConfig
from faceanything.train.distributed import init_from_env
from faceanything.train.loop import TrainConfig, train
from faceanything.train.losses import LossConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m faceanything.train", description="Train Face Anything from shards."
    )
    add = parser.add_argument
    add("--shards", nargs="*", default=[], help="shard, dataset or shard-parent folders")
    add("--out", required=True, help="run folder (resumed when it holds a run)")
    add("--size", default="small", choices=["tiny", "small", "base", "large", "giant"])
    add("--init", help="DA3 or Face Anything checkpoint to start from (default: random)")
    add(
        "--trust-checkpoint",
        action="store_true",
        help="--init may run pickled code when loaded (only a file from a source you trust)",
    )
    add("--steps", type=int, default=24_000, help="optimizer steps")
    add("--accumulation", type=int, default=3, help="batches per optimizer step")
    add("--lr", type=float, default=2e-5, help="peak learning rate")
    add("--lr-min", type=float, default=1e-8, help="final learning rate (cosine)")
    add(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on CUDA)",
    )
    add(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute backbone blocks in backward",
    )
    add("--freeze-backbone", action="store_true", help="train the heads only")
    add(
        "--stage",
        choices=["full", "monocular"],
        default="full",
        help="full: the whole model on shards (stage 2); monocular: masked-L1 depth "
        "pretraining on single images (stage 1; then stage 2 with --init its checkpoint)",
    )
    add("--david", nargs="*", default=[], help="SynthHuman (DAViD) folders for stage 1")
    add("--david-bodies", action="store_true", help="stage 1 also takes SynthHuman's bodies")
    add("--monocular-batch", type=int, default=8, help="images per stage-1 batch")
    add(
        "--strategies",
        nargs="+",
        choices=["multiview", "temporal"],
        default=["multiview", "temporal"],
        help="batch kinds (multiview alone: the paper's static ablation)",
    )
    add("--lambda-c", type=float, default=5.0, help="canonical weight lambda_C (eq. 6)")
    add("--depth-weight", type=float, default=1.0, help="weight of the depth terms (eq. 6)")
    add("--split", nargs="*", default=["manifests/eval_split.json"], help="split files (held out)")
    add("--max-images", type=int, default=48, help="images per batch at most")
    add(
        "--views",
        type=int,
        nargs=2,
        default=(2, 16),
        metavar=("MIN", "MAX"),
        help="images per sequence",
    )
    add("--scale", type=float, default=1.0, help="factor on B.1's resolutions (CPU: 0.25)")
    add("--no-augment", action="store_true", help="no co-jitter, centred crops")
    add("--workers", type=int, default=2, help="data worker processes")
    add("--eval-every", type=int, default=500, help="steps between evaluations")
    add("--eval-batches", type=int, default=4, help="held-out batches per evaluation")
    add("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    add("--keep-checkpoints", action="store_true", help="keep a copy of every checkpoint")
    add("--seed", type=int, default=0)
    add("--device", default="auto")
    add("--threads", type=int, help="torch CPU threads")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """TrainConfig from the command line (see the module docstring)."""
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = DataConfig(
        scale=args.scale,
        max_images=args.max_images,
        views=tuple(args.views),
        strategies=tuple(args.strategies),
        augment=not args.no_augment,
        seed=args.seed,
    )
    return TrainConfig(
        shards=tuple(args.shards),
        out=args.out,
        size=args.size,
        init=args.init,
        trust_checkpoint=args.trust_checkpoint,
        steps=args.steps,
        accumulation=args.accumulation,
        lr=args.lr,
        lr_min=args.lr_min,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        freeze_backbone=args.freeze_backbone,
        stage=args.stage,
        david=tuple(args.david),
        david_faces_only=not args.david_bodies,
        monocular_batch=args.monocular_batch,
        loss=LossConfig(lambda_canonical=args.lambda_c, depth_weight=args.depth_weight),
        splits=tuple(args.split),
        data=data,
        workers=args.workers,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    ranks = init_from_env(config.device)
    try:
        rows = train(config)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    evaluations = [r for r in rows if r["split"] == "eval"]
    if evaluations and ranks.main:
        last = evaluations[-1]
        print(
            f"step {last['step']}: held-out loss {last['loss']:.4f}, depth AbsRel "
            f"{last['abs_rel']:.4f} (constant {last['abs_rel_constant']:.4f}), EPE "
            f"{last['epe']:.2f} px (zero motion {last['epe_zero']:.2f} px)"
        )
    return 0
