"""Signal extraction throughput (frames/s, video decoding included) on this machine.

Two cases side by side in one process: the sample subject's size (550x802 video, detection at
275x401) and NeRSemble's (2200x3208 video, detection at 4x: 550x802). Frames are the
astronaut photo placed in a portrait frame and moved a little, encoded as H.264 like the kit.

    .venv/bin/python -m benchmarks.bench_signals [--frames 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from tasks.formats import nersemble
from tasks.formats.cameras import FRONTAL_SERIAL, SERIALS, Camera
from tasks.formats.video import write_video
from tasks.signals import SignalsConfig, extract_signals


def _frames(width: int, height: int, n: int) -> list[np.ndarray]:
    side = int(0.7 * width)
    head = skimage.data.astronaut()[10:250, 105:345]  # the face and hair, as a rig frames it
    face = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 90, np.uint8)
    y0, x0 = (height - side) // 2, (width - side) // 2
    out = []
    for t in range(n):
        frame = canvas.copy()
        dy, dx = 2 * (t % 7), 3 * (t % 5)
        frame[y0 + dy : y0 + dy + side, x0 + dx : x0 + dx + side] = face
        out.append(frame)
    return out


def _subject(root: Path, width: int, height: int, n: int) -> nersemble.Subject:
    k = np.array([[3.4 * width, 0, width / 2], [0, 3.4 * width, height / 2], [0, 0, 1]])
    cams = {
        s: Camera(serial=s, K=k, world_2_cam=np.eye(4), width=width, height=height) for s in SERIALS
    }
    directory = root / f"{width}"
    nersemble.write_cameras(directory, cams)
    path = nersemble.video_path(directory, sequence="EXP-1-head", serial=FRONTAL_SERIAL)
    write_video(path, _frames(width, height, n))
    return nersemble.load_subject(directory)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    cases = (("sample 550x802, /2", 550, 802, 2), ("NeRSemble 2200x3208, /4", 2200, 3208, 4))
    with tempfile.TemporaryDirectory() as tmp:
        for name, width, height, factor in cases:
            subject = _subject(Path(tmp), width, height, args.frames)
            start = time.perf_counter()
            result = extract_signals(
                subject=subject, sequence="EXP-1-head", config=SignalsConfig(downsample=factor)
            )
            seconds = time.perf_counter() - start
            n = len(result.table)
            print(
                f"{name:>26}: {n / seconds:6.1f} frames/s "
                f"({n} frames, {result.detected_frames} with a face, {seconds:.1f} s)"
            )


if __name__ == "__main__":
    main()
