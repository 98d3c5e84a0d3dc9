"""Run a Face Anything checkpoint on a video or images: maps, point clouds, cameras, tracks.

    python -m faceanything.predict INPUT [INPUT ...] --checkpoint CKPT --out DIR

INPUT is a video file (PyAV), a folder of images, or image files (in the order given; a
folder's in name order). Frames are resized so the long side is `resolution` (sides multiples
of 14) and processed jointly in windows; every window after the first also holds frame 0 (the
anchor), so all windows share frame 0's camera as the world frame and its scale. Writes, per
frame i (maps at the network's resolution, K for it):

    maps/frame_{i:05d}.exr      depth, depth_conf, canonical (3), canonical_conf (float32)
    points/frame_{i:05d}.ply    world points of confident pixels, coloured by the image
    cameras.json                K, world_2_cam (OpenCV; world = frame 0's camera, the model's
                                normalised scale) and the source of each frame
    tracks.parquet              query points of frame 0 followed by eq. 2 (`predict.tracks`)
    tracks.png, tracks.mp4      the tracks as in the paper's fig. 6, and as a video
    preview.png                 input, depth and canonical map of a few frames
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from faceanything.model.frames import Prediction, network_size, predict_frames
from faceanything.model.network import FaceAnything, load_checkpoint
from faceanything.outputs import write_exr, write_json, write_parquet, write_ply, write_video
from faceanything.predict.tracks import (
    TrackConfig,
    draw_tracks,
    follow,
    maps_figure,
    read_queries,
    track_colors,
    tracks_figure,
    tracks_table,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictConfig:
    """How frames are read, grouped and written."""

    resolution: int = 504
    """Long side of the network input (px; rounded to a multiple of 14); B.1's base is 504."""
    window: int = 16
    """Frames per forward pass (joint prediction), the anchor included."""
    anchor: bool = True
    """Put frame 0 in every window, so all windows share its camera frame and depth scale."""
    every: int = 1
    """Take every n-th frame of a video."""
    max_frames: int | None = None
    """Stop after this many frames (None: all)."""
    device: str = "cpu"
    """Torch device of the network."""
    region_quantile: float = 0.5
    """The face region: pixels whose depth confidence is above this quantile of the frame's
    (the network is sure on the head, unsure on the background). Point clouds hold it, and
    tracks start and end in it."""
    tracks: TrackConfig = TrackConfig()
    """Query points and eq. 2 matching."""
    fps: float = 10.0
    """Frame rate of tracks.mp4."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Frames:
    """Input frames at the network's size."""

    names: list[str]
    """Where each frame came from: a file name, or "video.mp4#n" for frame n of a video."""
    images: np.ndarray
    """(T, h, w, 3) uint8 RGB, h and w multiples of 14."""
    source_size: tuple[int, int]
    """(width, height) of the first input frame, before resizing."""


def read_frames(inputs: Sequence[str | os.PathLike], config: PredictConfig) -> Frames:
    """Decode and resize the input frames (see the module docstring for what INPUT may be);
    every frame takes the first frame's network size."""
    names, images, size, source = [], [], None, None
    for pil, name in _iter_inputs([Path(p) for p in inputs], config):
        if size is None:
            source = pil.size
            size = network_size(*pil.size, config.resolution)
        images.append(np.asarray(pil.convert("RGB").resize(size, Image.Resampling.BILINEAR)))
        names.append(name)
        if config.max_frames is not None and len(names) >= config.max_frames:
            break
    if not images:
        raise ValueError(f"no frames in {[str(p) for p in inputs]}")
    return Frames(names=names, images=np.stack(images), source_size=source)


def _iter_inputs(paths: list[Path], config: PredictConfig) -> Iterator[tuple[Image.Image, str]]:
    """(image, name) of every input frame, in order."""
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            yield from ((Image.open(p), p.name) for p in files)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            yield Image.open(path), path.name
        elif path.is_file():
            with av.open(str(path)) as container:
                for n, frame in enumerate(container.decode(video=0)):
                    if n % config.every == 0:
                        yield frame.to_image(), f"{path.name}#{n}"
        else:
            raise FileNotFoundError(f"input not found: {path}")


def world_points(depth: np.ndarray, K: np.ndarray, world_2_cam: np.ndarray) -> np.ndarray:
    """(h, w, 3) world points of an (h, w) z-depth map with intrinsics K (3, 3) and
    world_2_cam (4, 4), OpenCV conventions."""
    h, w = depth.shape
    rows, cols = np.mgrid[0:h, 0:w]
    rays = np.stack([cols, rows, np.ones_like(cols)], axis=-1) @ np.linalg.inv(K).T
    cam = rays * depth[..., None]
    cam_2_world = np.linalg.inv(world_2_cam)
    return cam @ cam_2_world[:3, :3].T + cam_2_world[:3, 3]


def face_region(pred: Prediction, config: PredictConfig) -> np.ndarray:
    """(T, h, w) bool: each frame's pixels of depth confidence above `region_quantile`."""
    limit = np.quantile(pred.depth_conf, config.region_quantile, axis=(1, 2), keepdims=True)
    return pred.depth_conf >= limit


def write_frame_outputs(out: Path, frames: Frames, pred: Prediction, config: PredictConfig):
    """maps/*.exr, points/*.ply and cameras.json."""
    cameras = []
    for t in range(len(frames.names)):
        stem = f"frame_{t:05d}"
        write_exr(
            out / "maps" / f"{stem}.exr",
            {
                "depth": pred.depth[t],
                "depth_conf": pred.depth_conf[t],
                "canonical": pred.canonical[t],
                "canonical_conf": pred.canonical_conf[t],
            },
        )
        sure = face_region(pred, config)[t] & np.isfinite(pred.depth[t]) & (pred.depth[t] > 0)
        points = world_points(pred.depth[t], pred.intrinsics[t], pred.world_2_cam[t])
        write_ply(out / "points" / f"{stem}.ply", points[sure], frames.images[t][sure])
        cameras.append(
            {
                "frame": t,
                "source": frames.names[t],
                "K": pred.intrinsics[t].tolist(),
                "world_2_cam": pred.world_2_cam[t].tolist(),
            }
        )
    h, w = frames.images.shape[1:3]
    world = "frame 0's camera" if config.anchor else "the first camera of each window"
    write_json(
        out / "cameras.json",
        {
            "convention": f"OpenCV; world = {world}; units: the model's normalised scale",
            "window": config.window,
            "width": w,
            "height": h,
            "source_size": list(frames.source_size),
            "frames": cameras,
        },
    )


def write_tracks(
    out: Path, frames: Frames, pred: Prediction, config: PredictConfig, queries: np.ndarray | None
) -> int:
    """tracks.parquet, tracks.png and tracks.mp4; returns the number of tracks."""
    h, w = frames.images.shape[1:3]
    sx, sy = frames.source_size[0] / w, frames.source_size[1] / h
    if queries is not None:  # input pixels -> map pixels
        queries = (queries + 0.5) / [sx, sy] - 0.5
    pixels, tracks = follow(
        pred.canonical,
        pred.canonical_conf,
        region=face_region(pred, config),
        queries=queries,
        config=config.tracks,
    )
    write_parquet(out / "tracks.parquet", tracks_table(pixels, tracks, scale=(sx, sy)))
    colors = track_colors(pixels, (h, w))
    tracks_figure(out / "tracks.png", frames.images, tracks, colors)
    video = (draw_tracks(frames.images[t], tracks, t, colors) for t in range(len(frames.images)))
    write_video(out / "tracks.mp4", video, fps=config.fps)
    return len(pixels)


def predict(
    inputs: Sequence[str | os.PathLike],
    *,
    checkpoint: str | os.PathLike | FaceAnything,
    out: str | os.PathLike,
    config: PredictConfig = PredictConfig(),
    queries: str | os.PathLike | None = None,
) -> dict[str, object]:
    """Everything the module docstring lists, written under `out`; returns a summary."""
    out = Path(out)
    net = checkpoint if isinstance(checkpoint, FaceAnything) else load_checkpoint(checkpoint)
    net = net.to(config.device)
    started = time.perf_counter()
    frames = read_frames(inputs, config)
    pred = predict_frames(
        net, frames.images, window=config.window, anchor=config.anchor, device=config.device
    )
    seconds = time.perf_counter() - started
    write_frame_outputs(out, frames, pred, config)
    points = None if queries is None else read_queries(queries)
    count = write_tracks(out, frames, pred, config, points)
    maps_figure(out / "preview.png", frames.images, pred.depth, pred.canonical)
    h, w = frames.images.shape[1:3]
    return {"frames": len(frames.names), "size": (w, h), "tracks": count, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m faceanything.predict", description=__doc__.split("\n")[0]
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="video, image folder or images")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="CKPT may run pickled code when loaded (only a file from a source you trust)",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--queries", type=Path, help="text file of 'x y' query pixels (frame 0)")
    parser.add_argument("--resolution", type=int, default=PredictConfig.resolution)
    parser.add_argument("--window", type=int, default=PredictConfig.window)
    parser.add_argument("--no-anchor", action="store_true", help="windows independent")
    parser.add_argument("--every", type=int, default=1, help="every n-th video frame")
    parser.add_argument("--max-frames", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grid-step", type=int, default=TrackConfig.grid_step)
    parser.add_argument("--max-distance", type=float, default=TrackConfig.max_distance)
    parser.add_argument("--fps", type=float, default=PredictConfig.fps)
    args = parser.parse_args(argv)
    config = PredictConfig(
        resolution=args.resolution,
        window=args.window,
        anchor=not args.no_anchor,
        every=args.every,
        max_frames=args.max_frames,
        device=args.device,
        fps=args.fps,
        tracks=TrackConfig(grid_step=args.grid_step, max_distance=args.max_distance),
    )
    try:
        net = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
        summary = predict(
            args.inputs,
            checkpoint=net,
            out=args.out,
            config=config,
            queries=args.queries,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    w, h = summary["size"]
    print(
        f"{summary['frames']} frames at {w}x{h} in {summary['seconds']:.1f} s "
        f"({summary['seconds'] / summary['frames']:.2f} s per frame); "
        f"{summary['tracks']} tracks; outputs in {args.out}"
    )
    return 0
