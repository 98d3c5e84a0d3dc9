"""The synthetic sample subject: NeRSemble v2's on-disk layout, with ground truth beside it.

`{root}/{id}/` holds exactly what the official kit downloads (calibration JSONs, one mp4 per
sequence and camera, BACKGROUND plates); `{root}/ground_truth/{id}/` holds what the pipeline
is scored against: FLAME parameters, the cameras at the working resolution, per-view depth,
canonical, normal, face-mask and hair maps (EXR; the head wears a hair shell of real geometry,
`tasks.sample.hair`), and the 2D MediaPipe landmarks of the model's embedding. Both are
written to temporary sibling folders and renamed into place, ground truth first; the subject
folder's existence means "complete".

    python -m tasks.sample.subject --root data/sample --subject 900
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from tasks.formats.atomic import atomic_dir
from tasks.formats.cameras import FRONTAL_SERIAL, SERIALS
from tasks.formats.exr import write_exr
from tasks.formats.nersemble import (
    background_path,
    subject_dir,
    video_path,
    write_cameras,
    write_color_calibration,
)
from tasks.formats.video import write_video
from tasks.pictures.sample import contact_sheet, ground_truth_sheet
from tasks.progress import Progress, silent
from tasks.sample.scene import PARAMETER_NAMES, landmark_points, project_landmarks, record
from tasks.sample.world import (
    SampleSubjectConfig,
    SampleWorld,
    build_world,
    default_seed,
    ground_truth_dir,
    ground_truth_map_path,
    ground_truth_view,
    render_view,
)

__all__ = [
    "SampleSubjectConfig",
    "SampleSubjectResult",
    "default_seed",
    "generate_sample_subject",
    "ground_truth_dir",
    "ground_truth_map_path",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleSubjectResult:
    """Where a sample subject is and whether this call made it."""

    subject_dir: Path
    """`{root}/{id}`, NeRSemble's layout."""
    ground_truth_dir: Path
    """`{root}/ground_truth/{id}`."""
    generated: bool
    """False when a complete subject was already there and kept."""
    seconds: float
    """Wall time of the call."""


def generate_sample_subject(
    *,
    config: SampleSubjectConfig,
    root: str | os.PathLike,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> SampleSubjectResult:
    """Make the sample subject under `root` unless a complete one is there (or `overwrite`).

    Leftover temporary folders of a killed run are replaced. Not safe to run twice at once
    for the same subject and root.
    """
    start = time.monotonic()
    final = subject_dir(root=root, subject=config.subject)
    gt_final = ground_truth_dir(root=root, subject=config.subject)
    if final.exists() and not overwrite:
        return SampleSubjectResult(
            subject_dir=final, ground_truth_dir=gt_final, generated=False, seconds=0.0
        )
    report = progress or silent
    report(0.0, "building the head, texture and landmark embedding")
    world = build_world(config=config, root=Path(root))
    # The ground truth is renamed into place first, the subject last: without the subject
    # folder nothing counts as complete.
    with atomic_dir(final) as tmp, atomic_dir(gt_final) as gt_tmp:
        _write_static(world, tmp, gt_tmp)
        rows = []
        for k, sequence in enumerate(config.sequences):
            done = k / len(config.sequences)

            def step(fraction: float, message: str, done: float = done) -> None:
                report(0.02 + 0.97 * (done + fraction / len(config.sequences)), message)

            rows.append(_write_sequence(world, sequence, tmp, gt_tmp, step))
        pd.concat(rows, ignore_index=True).to_parquet(
            gt_tmp / "landmarks.parquet", compression="zstd", index=False
        )
    report(1.0, f"sample subject {final.name} written")
    return SampleSubjectResult(
        subject_dir=final,
        ground_truth_dir=gt_final,
        generated=True,
        seconds=time.monotonic() - start,
    )


def _stored_precision(maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Depth stays float32 (sub-micrometre at 1 m); canonical positions, normals and the mask
    are stored as half floats (0.06 mm steps at 0.1 m), which halves the ground truth's size."""
    return {k: v if k == "depth" else np.asarray(v, dtype=np.float16) for k, v in maps.items()}


def _write_static(world: SampleWorld, tmp: Path, gt_tmp: Path) -> None:
    """Calibration, background plates, and the ground truth that does not change per frame."""
    config = world.config
    write_cameras(tmp, world.cameras)
    write_color_calibration(tmp, {s: np.linalg.inv(c) for s, c in world.casts.items()})
    for index, serial in enumerate(SERIALS):
        rng = world.noise_stream("BACKGROUND", 0, index)
        plate = record(
            world.backgrounds[serial],
            cast=world.casts[serial],
            noise_sigma=config.noise_sigma,
            rng=rng,
        )
        path = background_path(tmp, serial=serial)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_jpeg(path, plate)
    write_cameras(gt_tmp, world.gt_cameras)
    params = [
        {"sequence": s, "frame": t, **{n: world.params[s][n][t].tolist() for n in PARAMETER_NAMES}}
        for s in config.sequences
        for t in range(config.frames_per_sequence)
    ]
    pd.DataFrame(params).to_parquet(gt_tmp / "params.parquet", compression="zstd", index=False)
    described = {
        **dataclasses.asdict(config),
        "effective_seed": config.effective_seed,
        "full_size": [world.cameras[SERIALS[0]].width, world.cameras[SERIALS[0]].height],
        "working_size": [world.gt_cameras[SERIALS[0]].width, world.gt_cameras[SERIALS[0]].height],
        "model": world.model.source,
        "maps": "maps/{sequence}/frame_{t:05d}/cam_{serial}.exr: depth (camera z, m, NaN off "
        "the head), canonical (template point, m; on the hair: minus the deformation of the "
        "nearest head point), normal (world), mask (face region 1/0), hair (hair shell 1/0)",
        "landmarks": "landmarks.parquet: embedded MediaPipe landmarks projected at the working "
        "size; visible = within 2 mm of the rendered depth",
    }
    (gt_tmp / "config.json").write_text(json.dumps(described, indent=1))


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(
        str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
    ):
        raise OSError(f"cannot write {path}")


def _write_sequence(
    world: SampleWorld, sequence: str, tmp: Path, gt_tmp: Path, progress: Progress
) -> pd.DataFrame:
    """Stream one sequence: its 16 videos, per-view truth maps; return its landmark rows."""
    paths = {s: video_path(tmp, sequence=sequence, serial=s) for s in SERIALS}
    next(iter(paths.values())).parent.mkdir(parents=True, exist_ok=True)
    frames = world.config.frames_per_sequence
    tables = []
    with VideoWriters(paths) as writers:
        for t, frame in enumerate(world.posed_frames(sequence)):
            points = landmark_points(model=world.model, vertices=frame.vertices)
            for serial in SERIALS:
                writers.put(
                    serial,
                    render_view(world, frame, sequence=sequence, frame_index=t, serial=serial),
                )
                maps = ground_truth_view(world, frame, serial=serial)
                path = ground_truth_map_path(gt_tmp, sequence=sequence, frame=t, serial=serial)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_exr(path, _stored_precision(maps))
                xy, z, visible = project_landmarks(
                    points=points, camera=world.gt_cameras[serial], depth=maps["depth"]
                )
                tables.append(
                    pd.DataFrame(
                        {
                            "sequence": sequence,
                            "frame": np.int32(t),
                            "serial": serial,
                            "mediapipe_index": world.model.lmk_mediapipe_idx.astype(np.int16),
                            "x": xy[:, 0].astype(np.float32),
                            "y": xy[:, 1].astype(np.float32),
                            "depth": z.astype(np.float32),
                            "visible": visible,
                        }
                    )
                )
            progress((t + 1) / frames, f"{sequence}: frame {t + 1}/{frames}")
    return pd.concat(tables, ignore_index=True)


class VideoWriters:
    """One encoder thread per camera, fed a frame at a time: each frame's 16 views come from
    one posed scene while all 16 videos stream to disk (PyAV encodes without the GIL)."""

    def __init__(self, paths: dict[str, Path], *, queue_size: int = 2) -> None:
        self._queues = {s: queue.Queue(maxsize=queue_size) for s in paths}
        self._errors: dict[str, BaseException] = {}
        self._threads = [
            threading.Thread(target=self._encode, args=(s, p), daemon=True)
            for s, p in paths.items()
        ]
        for thread in self._threads:
            thread.start()

    def _encode(self, serial: str, path: Path) -> None:
        frames = _until_none(self._queues[serial])
        try:
            write_video(path, frames)
        except BaseException as error:  # handed to the producer in put() / close()
            self._errors[serial] = error
            for _ in frames:  # keep taking frames so the producer never blocks
                pass

    def _raise(self) -> None:
        if self._errors:
            serial, error = next(iter(self._errors.items()))
            raise RuntimeError(f"encoding camera {serial}'s video failed: {error}") from error

    def put(self, serial: str, image: np.ndarray) -> None:
        """Queue the next (H, W, 3) uint8 frame of camera `serial`."""
        self._raise()
        self._queues[serial].put(image)

    def close(self) -> None:
        """Finish every video; raise if one failed."""
        for q in self._queues.values():
            q.put(None)
        for thread in self._threads:
            thread.join()
        self._raise()

    def __enter__(self) -> VideoWriters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _until_none(source: queue.Queue) -> Iterator[np.ndarray]:
    """Items of `source` up to the first None (not `iter(get, None)`: arrays refuse ==)."""
    while (item := source.get()) is not None:
        yield item


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="data root, e.g. data/sample")
    parser.add_argument("--subject", default="900", help="subject id (default 900)")
    parser.add_argument("--seed", type=int, default=None, help="default: the numeric id")
    parser.add_argument("--scale", type=int, default=4, help="full size = 2200x3208 / scale")
    parser.add_argument("--downsample", type=int, default=2, help="ground truth size factor")
    parser.add_argument("--frames", type=int, default=16, help="frames per sequence")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete subject")
    parser.add_argument("--contact-sheet", type=Path, help="PNG of the 16 views of frame 0")
    parser.add_argument("--ground-truth-sheet", type=Path, help="PNG of one view's truth maps")
    args = parser.parse_args(argv)
    config = SampleSubjectConfig(
        subject=args.subject,
        seed=args.seed,
        scale=args.scale,
        downsample=args.downsample,
        frames_per_sequence=args.frames,
    )
    with tqdm(total=1000, unit="‰", desc=f"sample {args.subject}") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.update(round(fraction * 1000) - bar.n)
            bar.set_postfix_str(message)

        result = generate_sample_subject(
            config=config, root=args.root, overwrite=args.overwrite, progress=progress
        )
    state = f"written in {result.seconds:.0f} s" if result.generated else "already complete, kept"
    print(f"{result.subject_dir}: {state}; ground truth in {result.ground_truth_dir}")
    sequence = config.sequences[0]
    if args.contact_sheet:
        contact_sheet(
            subject_dir=result.subject_dir, sequence=sequence, frame=0, path=args.contact_sheet
        )
    if args.ground_truth_sheet:
        ground_truth_sheet(
            ground_truth_dir=result.ground_truth_dir,
            sequence=sequence,
            frame=0,
            serial=FRONTAL_SERIAL,
            path=args.ground_truth_sheet,
        )


if __name__ == "__main__":
    main()
