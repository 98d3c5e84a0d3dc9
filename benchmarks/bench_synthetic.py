"""Images per second of the synthetic face set, written into shards (rendering, truth maps,
PNG + EXR, the shard's copy and validation: everything a training set costs).

Run: python -m benchmarks.bench_synthetic [--identities 4 --views 16 --timesteps 4 --workers 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from tasks.synthetic.dataset import SyntheticConfig, generate_synthetic
from tasks.synthetic.identity import head_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--identities", type=int, default=4, help="training identities")
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--sizes", default="176x256,352x512", help="WxH,WxH,...")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    head_model()  # built once per process; not part of any set's cost
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        config = SyntheticConfig(
            identities=args.identities,
            held_out=0,
            width=width,
            height=height,
            views=args.views,
            timesteps=args.timesteps,
        )
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = generate_synthetic(config=config, out=out, workers=args.workers)
            seconds = time.perf_counter() - start
        per_identity = seconds / max(args.identities, 1)
        print(
            f"{width}x{height}: {result.images} images ({args.identities} identities x "
            f"{args.views} views x {args.timesteps} timesteps, {args.workers} worker(s)) in "
            f"{seconds:.1f} s: {result.images / seconds:.2f} images/s, "
            f"{per_identity:.1f} s per identity"
        )


if __name__ == "__main__":
    main()
