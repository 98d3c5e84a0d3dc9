"""Inference on image sequences: windows joined through the anchor frame, tracks by eq. 2,
every output file of `python -m faceanything.predict` in its format, and the evaluation
tables on a synthetic shard whose motion is known."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.data import astronaut

from faceanything.checkpoint import save_checkpoint
from faceanything.correspondence import IndexConfig
from faceanything.evaluate.protocol import FRONTAL, EvalConfig, run
from faceanything.evaluate.protocol import main as evaluate_main
from faceanything.model.frames import network_size, predict_frames
from faceanything.model.network import FaceAnything, FaceAnythingConfig
from faceanything.outputs import read_exr, read_ply, write_exr, write_video
from faceanything.predict.run import main
from faceanything.predict.tracks import TrackConfig, follow, read_queries, tracks_table
from tasks.formats.cameras import Camera
from tasks.formats.shards import FLAME_COLUMNS, ShardSample, write_shard

FRAMES = 4


def shifted_frames(count: int) -> list[np.ndarray]:
    """The astronaut's face, moving 4 px right and 3 px down per frame (240 x 180)."""
    image = astronaut()
    return [
        np.ascontiguousarray(image[40 + 3 * t :, 100 + 4 * t :][:240, :180]) for t in range(count)
    ]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = FaceAnythingConfig(size="tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(
        path, config=dataclasses.asdict(config), state=FaceAnything(config).state_dict()
    )


def test_network_size():
    assert network_size(180, 240, 112) == (84, 112)
    assert network_size(2200, 3208, 504) == (350, 504)
    assert network_size(10, 1000, 504) == (28, 504)


class WindowStub:
    """Stands in for the network: frame t (its pixel value is 10 t) has depth 1 + t and camera
    centre (0.1 t, 0, 0), but every call reports geometry at its own scale (call number + 1)
    relative to its first view, as a normalised network does."""

    def __init__(self) -> None:
        self.calls = 0

    def eval(self) -> None:
        pass

    def __call__(self, x: torch.Tensor, *, cameras: bool) -> dict[str, torch.Tensor]:
        self.calls += 1
        frames = (x[0, :, 0, 0, 0] * 255 / 10).round().long()
        s, h, w = len(frames), x.shape[-2], x.shape[-1]
        truth = torch.eye(4).repeat(s, 1, 1)
        truth[:, 0, 3] = -0.1 * frames  # world_2_cam of centre (0.1 t, 0, 0)
        relative = truth @ torch.linalg.inv(truth[0])
        relative[:, :3, 3] *= self.calls
        depth = (1.0 + frames.float())[:, None, None].expand(s, h, w) * self.calls
        ones = torch.ones(s, h, w)
        return {
            "depth": depth[None],
            "depth_conf": ones[None],
            "canonical": torch.zeros(1, s, h, w, 3),
            "canonical_conf": ones[None],
            "intrinsics": torch.eye(3).repeat(1, s, 1, 1),
            "extrinsics": relative[None],
        }


def test_windows_share_the_anchor_frame_and_scale():
    images = np.stack([np.full((28, 28, 3), 10 * t, np.uint8) for t in range(7)])
    pred = predict_frames(WindowStub(), images, window=3)  # [0 1 2] [0 3 4] [0 5 6]
    assert np.allclose(pred.depth[:, 0, 0], 1 + np.arange(7))
    assert np.allclose(pred.world_2_cam[:, 0, 3], -0.1 * np.arange(7))
    assert np.allclose(pred.world_2_cam[:, :3, :3], np.eye(3))
    loose = predict_frames(WindowStub(), images, window=3, anchor=False)
    assert np.allclose(loose.depth[:, 0, 0], [1, 2, 3, 8, 10, 12, 21])  # scales 1, 2, 3


def smooth_canonical(n: int, shift: tuple[int, int]) -> np.ndarray:
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float64)
    u, v = (cols - shift[0]) / n, (rows - shift[1]) / n
    return np.stack([0.1 * u, 0.1 * v, 0.02 * np.sin(3 * u) * np.cos(2 * v)], axis=-1)


def test_tracks_follow_a_known_motion(tmp_path: Path):
    canonical = np.stack([smooth_canonical(60, (2 * t, t)) for t in range(5)])
    config = TrackConfig(grid_step=10, index=IndexConfig(), max_distance=0.003)
    queries, tracks = follow(canonical, np.ones(canonical.shape[:3]), queries=None, config=config)
    assert len(queries) == 36
    inside = tracks.found
    moved = queries[None] + np.array([[2, 1]]) * np.arange(5)[:, None, None]
    assert np.array_equal(tracks.pixels[inside], moved[inside])
    assert np.array_equal(inside, (moved < 60).all(axis=-1))  # gone past the image's edge
    table = tracks_table(queries, tracks, scale=(2.0, 2.0))
    assert len(table) == 5 * 36 and table.visible.sum() == inside.sum()
    row = table[(table.track == 0) & (table.frame == 1)].iloc[0]
    assert (row.x, row.y) == (
        (queries[0, 0] + 2 + 0.5) * 2 - 0.5,
        (queries[0, 1] + 1 + 0.5) * 2 - 0.5,
    )
    region = np.zeros(canonical.shape[:3], bool)
    region[:, :, :30] = True  # only the left half may be queried or matched
    queries, tracks = follow(
        canonical, np.ones(region.shape), region=region, queries=None, config=config
    )
    assert len(queries) == 18 and (queries[:, 0] < 30).all()
    assert (tracks.pixels[tracks.found][:, 0] < 30).all() and not tracks.found[4].all()
    file = tmp_path / "queries.txt"
    file.write_text("x,y\n# a comment\n10 20\n30.5, 40\n")
    assert read_queries(file).tolist() == [[10, 20], [30.5, 40]]


def test_predict_writes_every_output(tiny_checkpoint: Path, tmp_path: Path):
    video = write_video(tmp_path / "clip.mp4", shifted_frames(FRAMES), fps=10)
    queries = tmp_path / "queries.txt"
    queries.write_text("90 60\n100 120\n")
    out = tmp_path / "out"
    args = [str(video), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    assert main([*args, "--resolution", "84", "--window", "3", "--queries", str(queries)]) == 0
    w, h = network_size(180, 240, 84)
    for t in range(FRAMES):
        maps = read_exr(out / "maps" / f"frame_{t:05d}.exr")
        assert {k: v.shape for k, v in maps.items()} == {
            "depth": (h, w),
            "depth_conf": (h, w),
            "canonical": (h, w, 3),
            "canonical_conf": (h, w),
        }
        assert all(np.isfinite(v).all() for v in maps.values())
        points, colors = read_ply(out / "points" / f"frame_{t:05d}.ply")
        assert (
            len(points) >= h * w // 3 and colors.shape == points.shape and np.isfinite(points).all()
        )
    cameras = json.loads((out / "cameras.json").read_text())
    assert len(cameras["frames"]) == FRAMES and cameras["frames"][2]["source"] == "clip.mp4#2"
    assert np.asarray(cameras["frames"][3]["K"]).shape == (3, 3)
    assert np.asarray(cameras["frames"][3]["world_2_cam"]).shape == (4, 4)
    tracks = pd.read_parquet(out / "tracks.parquet")
    assert len(tracks) == 2 * FRAMES
    assert tracks.query_x.tolist()[:2] == pytest.approx([90, 100], abs=1.5)
    assert set(tracks.columns) >= {"track", "frame", "x", "y", "visible", "distance"}
    for name in ("tracks.png", "preview.png"):
        assert Image.open(out / name).size[0] > 400
    with av.open(str(out / "tracks.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == FRAMES and decoded[0].shape == (h // 2 * 2, w // 2 * 2, 3)
    assert not list(out.rglob(".*partial*"))
    # a folder of images reads like the video, in name order
    folder = tmp_path / "images"
    folder.mkdir()
    for t, frame in enumerate(shifted_frames(3)):
        Image.fromarray(frame).save(folder / f"{t:03d}.png")
    assert main([str(folder), *args[1:], "--resolution", "56", "--window", "4"]) == 0
    cameras = json.loads((out / "cameras.json").read_text())
    assert [f["source"] for f in cameras["frames"]] == ["000.png", "001.png", "002.png"]
    assert main([str(tmp_path / "missing.mp4"), *args[1:]]) == 1


def synthetic_shard(root: Path, frames: int) -> Path:
    """A shard of one subject's frontal camera: images moving as in `shifted_frames` (at
    84 x 112), canonical maps of a smooth surface moving (2, 1) px per frame inside an
    ellipse, curved depth."""
    h, w = 112, 84
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    samples = []
    for t, image in enumerate(shifted_frames(frames)):
        u, v = (cols - w / 2 - 2 * t) / w, (rows - h / 2 - t) / h
        mask = (u / 0.4) ** 2 + (v / 0.42) ** 2 < 1
        canonical = np.stack([0.2 * u, 0.2 * v, 0.03 * np.cos(3 * u) * np.cos(2 * v)], -1)
        canonical[~mask] = np.nan
        depth = np.where(mask, 0.5 + 0.2 * (u**2 + v**2), np.nan)
        normal = np.where(mask[..., None], [0.0, 0.0, -1.0], np.nan)
        stem = root / "src" / f"{t}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(Image.fromarray(image).resize((w, h)))).save(f"{stem}.png")
        write_exr(
            f"{stem}.exr",
            {
                "depth": depth,
                "canonical": canonical,
                "normal": normal,
                "mask": mask.astype(np.float32),
            },
        )
        K = np.array([[100.0, 0, w / 2 - 0.5], [0, 100.0, h / 2 - 0.5], [0, 0, 1]])
        samples.append(
            ShardSample(
                subject="901",
                sequence="EXP-1-head",
                frame=t,
                camera=Camera(serial=FRONTAL, K=K, world_2_cam=np.eye(4), width=w, height=h),
                flame={n: np.zeros(3) for n in FLAME_COLUMNS},
                quality={},
                image=Path(f"{stem}.png"),
                maps=Path(f"{stem}.exr"),
            )
        )
    return write_shard(samples=samples, path=root / "shard_000").path


def test_evaluate_writes_the_tables(tiny_checkpoint: Path, tmp_path: Path):
    shard = synthetic_shard(tmp_path, 5)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test_subjects": ["901"]}))
    out = tmp_path / "eval"
    config = EvalConfig(resolution=56, window=3, margins=(1, 2))
    table = run(checkpoint=tiny_checkpoint, shards=[shard], split=split, out=out, config=config)
    written = pd.read_csv(out / "results.csv")
    assert len(written) == len(table) == 2 * 2 + 2 * 2 * 2  # depth 2x2, pairs 2 settings x 2 x 2
    still = written[(written.method == "zero motion") & (written.setting == "video")]
    # the truth moves (2, 1) px per frame: standing still misses by margin * sqrt(5)
    assert still.epe.tolist() == pytest.approx([np.sqrt(5), 2 * np.sqrt(5)])
    assert still["<3px"].tolist() == [1.0, 0.0] and (still.epe3d > 0).all()
    model = written[(written.method == "model") & (written.margin == 1)]
    assert model[["epe", "cce_mean", "wpe_l1", "wpe_ssim"]].notna().all().all()
    depth = written[written.margin == 0]
    assert set(depth.method) == {"model", "constant depth"} and (depth.images == 5).all()
    assert (depth.abs_rel > 0).all() and (depth.abs_rel < 1).all()
    pairs = pd.read_csv(out / "pairs.csv")
    assert len(pairs) == 2 * 2 * (4 + 3)  # settings x methods x pairs of margins 1 and 2
    assert len(pd.read_csv(out / "depth.csv")) == 2 * 5
    text = (out / "results.md").read_text()
    assert "## Correspondence, margin = 2" in text and "| zero motion |" in text
    assert (
        evaluate_main(
            [
                "--checkpoint",
                str(tiny_checkpoint),
                "--shards",
                str(shard),
                "--split",
                str(tmp_path / "none.json"),
            ]
        )
        == 1
    )
