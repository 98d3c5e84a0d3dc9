"""Learning on CPU: a small network trained for a few minutes on the sample's shards; and,
with --memory, the images per GPU each model size fits, computed from activation sizes.

    python benchmarks/bench_train.py --shards out/shards --out /tmp/bench_train
    python benchmarks/bench_train.py --memory small base large giant

Holds out every 4th timestep (manifests/sample_split.json), trains from scratch, and checks
on the held-out batches that every loss term fell from the first evaluation to the last,
that depth AbsRel beats the constant-depth predictor and that canonical-NN correspondence
EPE beats zero motion. Prints the figures, parameter counts and seconds per step; exits 1
when a check fails.

--memory counts, on CPU, the bytes autograd keeps for backward (parameters excluded) in one
bf16-autocast forward of two 504 px views with gradient checkpointing: the backbone keeps only
each block's input (fp32 residual stream); DA3's heads run in fp32 (autocast off, as on CUDA)
and keep everything. Per image, that times `MARGIN` (backward's transient gradients and one
block's recomputation), beside 18 bytes per trained parameter (fp32 weight, gradient, AdamW's
two moments, the bf16 autocast copy) and `CONTEXT` for CUDA's context and workspace.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

import torch

from faceanything.data.batches import DataConfig
from faceanything.model.network import FaceAnything, FaceAnythingConfig, parameter_count
from faceanything.train.loop import TERMS, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 1.25
"""Factor on the kept activations for backward's transients (an estimate, not measured)."""
CONTEXT = 2 * 2**30
"""Bytes of a GPU held by CUDA's context, cuBLAS/cuDNN workspaces and fragmentation."""
PARAMETER_BYTES = 18
"""fp32 weight + gradient + AdamW's two moments (16) + the bf16 autocast weight copy (2)."""
GPUS = {"H100 80 GB": 80e9, "H200 141 GB": 141e9, "A100 40 GB": 40e9}


def bench_config(shards: Path, out: Path, *, steps: int, size: str, scale: float) -> TrainConfig:
    """The run the benchmark (and the slow test) trains."""
    data = DataConfig(scale=scale, max_images=8, views=(2, 8))
    return TrainConfig(
        shards=(str(shards),),
        out=str(out),
        size=size,
        steps=steps,
        accumulation=1,
        lr=5e-4,
        lr_min=1e-5,
        splits=(
            str(ROOT / "manifests" / "eval_split.json"),
            str(ROOT / "manifests" / "sample_split.json"),
        ),
        data=data,
        workers=1,
        eval_every=max(1, steps // 4),
        eval_batches=6,
        checkpoint_every=steps,
        progress=True,
    )


def run_bench(config: TrainConfig) -> dict[str, object]:
    """Train; the first and last held-out evaluations, train-time figures and the checks."""
    shutil.rmtree(config.out, ignore_errors=True)
    trainer = Trainer(config)
    started = time.perf_counter()
    rows = trainer.run()
    seconds = time.perf_counter() - started
    evals = [r for r in rows if r["split"] == "eval"]
    steps = [r for r in rows if r["split"] == "train"]
    first, last = evals[0], evals[-1]
    checks = {f"held-out {t} fell": last[t] < first[t] for t in ["loss", *TERMS]}
    checks["depth AbsRel below constant"] = last["abs_rel"] < last["abs_rel_constant"]
    checks["canonical EPE below zero motion"] = last["epe"] < last["epe_zero"]
    return {
        "first": first,
        "last": last,
        "checks": checks,
        "parameters": parameter_count(trainer.net),
        "canonical_head": parameter_count(trainer.net.canonical_head),
        "seconds_per_step": sum(r["seconds"] for r in steps) / len(steps),
        "images_per_step": sum(r["images"] for r in steps) / len(steps),
        "seconds": seconds,
        "held_out": len(trainer.held_rows),
        "training": len(trainer.train_rows),
    }


def report(result: dict[str, object]) -> str:
    first, last = result["first"], result["last"]
    lines = [
        f"parameters {result['parameters']:,} (canonical head {result['canonical_head']:,}); "
        f"{result['training']} training / {result['held_out']} held-out views",
        f"{result['seconds_per_step']:.2f} s per step ({result['images_per_step']:.1f} images), "
        f"{result['seconds']:.0f} s in all",
        f"{'held-out term':<16}{'step ' + str(first['step']):>12}{'step ' + str(last['step']):>12}",
    ]
    lines += [f"{t:<16}{first[t]:>12.4f}{last[t]:>12.4f}" for t in ["loss", *TERMS]]
    lines += [
        f"depth AbsRel {last['abs_rel']:.4f} vs constant {last['abs_rel_constant']:.4f} "
        f"(step 0: {first['abs_rel']:.4f})",
        f"canonical-NN EPE {last['epe']:.2f} px vs zero motion {last['epe_zero']:.2f} px "
        f"(step 0: {first['epe']:.2f} px)",
    ]
    lines += [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in result["checks"].items()]
    return "\n".join(lines)


def kept_bytes_per_image(size: str, *, resolution: int = 504, views: int = 2) -> tuple[float, int]:
    """Bytes autograd keeps per image (parameters excluded) in a bf16-autocast forward with
    gradient checkpointing (module docstring), and the network's parameter count."""
    torch.manual_seed(0)
    net = FaceAnything(FaceAnythingConfig(size=size, gradient_checkpointing=True)).train()
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    images = torch.rand(1, views, 3, resolution, resolution)
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        net(images, cameras=False)
    return sum(kept.values()) / views, parameter_count(net)


def memory_table(sizes: list[str]) -> str:
    """Images per GPU at 504 px, bf16, gradient checkpointing, for each size (computed)."""
    lines = [
        "| size | parameters | static GB | kept per image MB | "
        + " | ".join(f"images per {gpu}" for gpu in GPUS)
        + " |",
        "| --- " * (4 + len(GPUS)) + "|",
    ]
    for size in sizes:
        per_image, parameters = kept_bytes_per_image(size)
        static = PARAMETER_BYTES * parameters
        fits = [int((total - CONTEXT - static) // (MARGIN * per_image)) for total in GPUS.values()]
        lines.append(
            f"| {size} | {parameters / 1e6:.0f} M | {static / 1e9:.1f} | {per_image / 2**20:.0f} | "
            + " | ".join(str(max(0, n)) for n in fits)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=Path, default=ROOT / "out" / "shards")
    parser.add_argument("--out", type=Path, default=Path("/tmp/faceanything_bench_train"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--size", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--scale", type=float, default=0.25, help="factor on B.1's resolutions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory", nargs="+", metavar="SIZE", help="images per GPU instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory:
        print(memory_table(args.memory))
        return 0
    config = bench_config(args.shards, args.out, steps=args.steps, size=args.size, scale=args.scale)
    result = run_bench(dataclasses.replace(config))
    print(report(result))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
