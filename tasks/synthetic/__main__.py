"""Write a synthetic face set into the shard format (see `tasks.synthetic.dataset`).

    python -m tasks.synthetic --out out/synthetic --identities 64 --seed 0 \
        --width 176 --height 256 --views 16 --timesteps 4 --workers 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from tasks.synthetic.dataset import SPLIT_MANIFEST, SyntheticConfig, generate_synthetic


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.synthetic", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    parser.add_argument("--identities", type=int, default=8, help="training identities")
    parser.add_argument("--held-out", type=int, default=None, help="default: identities / 8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=176, help="image width (px)")
    parser.add_argument("--height", type=int, default=256, help="image height (px)")
    parser.add_argument("--views", type=int, default=16, help="cameras of the rig (1-16)")
    parser.add_argument("--timesteps", type=int, default=4, help="frames per identity")
    parser.add_argument("--texture-size", type=int, default=512, help="albedo texels per side")
    parser.add_argument("--split", type=Path, default=SPLIT_MANIFEST, help="held-out names")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering")
    parser.add_argument("--overwrite", action="store_true", help="replace other settings' set")
    parser.add_argument("--contact-sheet", type=Path, help="PNG of the first identities")
    args = parser.parse_args(argv)
    config = SyntheticConfig(
        identities=args.identities,
        held_out=args.held_out,
        seed=args.seed,
        width=args.width,
        height=args.height,
        views=args.views,
        timesteps=args.timesteps,
        texture_size=args.texture_size,
    )
    with tqdm(total=1000, unit="‰", desc="synthetic identities") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.update(round(fraction * 1000) - bar.n)
            bar.set_postfix_str(message)

        result = generate_synthetic(
            config=config,
            out=args.out,
            split=args.split,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=progress,
        )
    rate = result.images / result.seconds if result.seconds > 0 else 0.0
    print(
        f"{result.path}: {len(result.train)} training + {len(result.held_out)} held-out "
        f"identities; {result.written} shards ({result.images} images) written in "
        f"{result.seconds:.1f} s ({rate:.1f} images/s)"
    )
    if args.contact_sheet:
        from tasks.synthetic.sheet import contact_sheet

        print(contact_sheet(dataset=result.path, path=args.contact_sheet))


if __name__ == "__main__":
    main()
