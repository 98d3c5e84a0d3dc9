"""Decoding the selected timesteps of 16 full-size camera videos: per-frame reads against one
pass per camera, side by side in one run.

One camera's video is encoded as NeRSemble's are (H.264 via libx264, yuv420p, 73 fps,
2200x3208; CRF 18, preset fast, keyframe interval `--gop`, default x264's 250) and copied to
16 files (distinct files: each is indexed on its own). `--selected` timesteps are drawn
from the video's frames. Each case runs in a fresh process, which reports its peak memory:

- before: what the per-timestep frames task did, one `decode_frames(path, [t])` per
  timestep and camera, each demuxing the whole file for a fresh index, then seeking to the
  keyframe before t and decoding forward to it.
- after: per camera, one `VideoIndex` and one forward pass over the selected frames
  (`iter_decoded`), one full-size frame held at a time.
- extract: the real stage, `extract_sequence_frames` (one pass per camera, 4x shrink,
  colour correction, PNG writes into the 50 timestep folders).

    .venv/bin/python -m benchmarks.bench_decode [--frames 73 --selected 50 --gop 250]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from tasks.formats import nersemble, video
from tasks.formats.cameras import SERIALS, Camera
from tasks.frames import FramesConfig, extract_sequence_frames

SEQUENCE = "EXP-1-head"


def _frames(width: int, height: int, n: int) -> Iterator[np.ndarray]:
    """A face moving over a shaded, lightly textured backdrop, as a capture rig frames it."""
    side = int(0.6 * width)
    head = skimage.data.astronaut()[10:250, 105:345]
    face = cv2.resize(head, (side, side), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 80 + 40 * yy / height + 6 * np.sin(xx / 23.0) * np.cos(yy / 31.0)
    backdrop = np.repeat(shade.astype(np.uint8)[..., None], 3, axis=2)
    for t in range(n):
        frame = backdrop.copy()
        y0 = (height - side) // 2 + int(40 * np.sin(t / 9))
        x0 = (width - side) // 2 + int(30 * np.cos(t / 7))
        frame[y0 : y0 + side, x0 : x0 + side] = face
        yield frame


def make_subject(root: Path, args: argparse.Namespace) -> tuple[Path, float]:
    """A subject with 16 identical camera videos; (its folder, encoding seconds)."""
    directory = root / "900"
    k = np.array([[8000.0, 0, args.width / 2], [0, 8000.0, args.height / 2], [0, 0, 1]])
    cameras = {
        s: Camera(serial=s, K=k, world_2_cam=np.eye(4), width=args.width, height=args.height)
        for s in SERIALS
    }
    nersemble.write_cameras(directory, cameras)
    cast = np.array([[0.95, 0.03, 0.0], [0.0, 1.0, 0.02], [0.04, 0.0, 0.9]])
    nersemble.write_color_calibration(directory, {s: cast for s in SERIALS})
    first = nersemble.video_path(directory, sequence=SEQUENCE, serial=SERIALS[0])
    start = time.perf_counter()
    frames = _frames(args.width, args.height, args.frames)
    video.write_video(first, frames, gop=args.gop, quality=args.crf, codec="libx264")
    seconds = time.perf_counter() - start
    for serial in SERIALS[1 : args.cameras]:
        shutil.copyfile(first, nersemble.video_path(directory, sequence=SEQUENCE, serial=serial))
    return directory, seconds


def _videos(directory: Path, cameras: int) -> list[Path]:
    serials = SERIALS[:cameras]
    return [nersemble.video_path(directory, sequence=SEQUENCE, serial=s) for s in serials]


def before(directory: Path, selected: list[int], cameras: int) -> int:
    """The old path: per timestep and camera, a fresh index and a one-frame decode."""
    count = 0
    for t in selected:
        for path in _videos(directory, cameras):
            result = video.decode_frames(path, [t], index=video.build_index(path))
            count += len(result.frames)
    return count


def after(directory: Path, selected: list[int], cameras: int) -> int:
    """The new path: per camera, one index and one pass over the selected frames."""
    count = 0
    for path in _videos(directory, cameras):
        for decoded in video.iter_decoded(path, selected, index=video.index_video(path)):
            count += decoded.image is not None
    return count


def extract(directory: Path, selected: list[int], cameras: int) -> int:
    """The frames stage on the whole selection (needs all 16 cameras for 'ok' timesteps)."""
    with tempfile.TemporaryDirectory(dir=directory) as out:
        results = extract_sequence_frames(
            subject=nersemble.load_subject(directory),
            sequence=SEQUENCE,
            frames=selected,
            outputs={t: Path(out) / f"{SEQUENCE}_{t:05d}" for t in selected},
            config=FramesConfig(),
        )
        return sum(v.state == "ok" for r in results.values() for v in r.views)


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure(case: Callable[[Path, list[int], int], int], *args) -> tuple[float, int, float, float]:
    """(seconds, frames, RSS before, peak RSS during the case; MiB) of one case, here.

    The peak is Linux's VmHWM after resetting it (clear_refs 5), so the imports' transient
    peak is not counted.
    """
    Path("/proc/self/clear_refs").write_text("5")
    start_rss = _status_mb("VmRSS")
    start = time.perf_counter()
    frames = case(*args)
    seconds = time.perf_counter() - start
    return seconds, frames, start_rss, _status_mb("VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=2200)
    parser.add_argument("--height", type=int, default=3208)
    parser.add_argument("--frames", type=int, default=73, help="frames per video")
    parser.add_argument("--selected", type=int, default=50, help="timesteps decoded")
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--gop", type=int, default=250, help="keyframe interval")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--cases", default="before,after,extract")
    parser.add_argument("--root", type=Path, default=None, help="work folder (default: temp)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    selected = sorted(int(t) for t in rng.choice(args.frames, args.selected, replace=False))
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        directory, encode_s = make_subject(Path(tmp), args)
        size = nersemble.video_path(directory, sequence=SEQUENCE, serial=SERIALS[0]).stat().st_size
        print(
            f"{args.cameras} cameras x {args.frames} frames of {args.width}x{args.height}, "
            f"libx264 crf {args.crf} preset fast, yuv420p, {video.NERSEMBLE_FPS} fps, "
            f"gop {args.gop}: {size / 2**20:.1f} MB per video ({size / args.frames / 1024:.0f} "
            f"KB/frame), encoded in {encode_s:.1f} s; {len(selected)} selected timesteps"
        )
        cases = {"before": before, "after": after, "extract": extract}
        spawn = multiprocessing.get_context("spawn")
        for name in args.cases.split(","):
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                job = pool.submit(_measure, cases[name], directory, selected, args.cameras)
                seconds, frames, start_rss, peak = job.result()
            print(
                f"{name:>8}: {seconds:7.1f} s, {frames / seconds:6.1f} frames/s ({frames} frames), "
                f"peak RSS {peak:6.0f} MB ({start_rss:.0f} MB before the case)"
            )


if __name__ == "__main__":
    main()
