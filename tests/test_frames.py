"""Frames of many timesteps of one sequence at once: the same bytes as one timestep at a time,
each video indexed once and decoded in one pass, on real files in the kit's two layouts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_nersemble import CAST, HEIGHT, SEQUENCE, WIDTH, frame_image, make_cameras

from tasks.formats import video
from tasks.formats.cameras import SERIALS
from tasks.formats.color import apply_color_correction
from tasks.formats.nersemble import (
    DataError,
    Subject,
    color_calibration_path,
    downsample_image,
    load_subject,
    subject_dir,
    video_path,
    write_cameras,
    write_color_calibration,
)
from tasks.formats.video import write_video
from tasks.frames import (
    SUMMARY_FILE,
    FramesConfig,
    extract_frames,
    extract_sequence_frames,
    read_frames_summary,
)

N_FRAMES = 20
SELECTED = [17, 2, 9, 3, 14, 0]
"""Out of order, some within one GOP of the others, some beyond a keyframe."""
MISSING, TRUNCATED, BLANKING = SERIALS[3], SERIALS[5], SERIALS[9]
BLANK_FRAMES = (2, 3)
"""Frames where camera `BLANKING` sees a constant image (a camera that dropped out)."""


def camera_frames(serial: str, *, broken: bool) -> list[np.ndarray]:
    frames = [frame_image(t, serial) for t in range(N_FRAMES)]
    if broken and serial == BLANKING:
        for t in BLANK_FRAMES:
            frames[t] = np.full_like(frames[t], 90)
    return frames


def make_subject(root: Path, *, layout: str, broken: bool, gop: int = 6) -> Subject:
    """Subject 043 with one sequence from all 16 cameras; `broken` adds a missing video, a
    truncated one and a camera that goes blank for two frames."""
    directory = subject_dir(root=root, subject="043")
    write_cameras(directory, make_cameras())
    write_color_calibration(directory, {s: CAST for s in SERIALS})
    for serial in SERIALS:
        if broken and serial == MISSING:
            continue
        frames = camera_frames(serial, broken=broken)
        if layout == "video":
            path = video_path(directory, sequence=SEQUENCE, serial=serial)
            write_video(path, frames, gop=gop)
            if broken and serial == TRUNCATED:
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            continue
        for t, image in enumerate(frames):  # extracted frames, stored at 2x as JPEG
            folder = directory / "sequences" / SEQUENCE / "timesteps" / f"frame_{t:05d}"
            (folder / "images-2x").mkdir(parents=True, exist_ok=True)
            half = downsample_image(image, 2)[..., ::-1]
            cv2.imwrite(str(folder / "images-2x" / f"cam_{serial}.jpg"), half)
    return load_subject(directory)


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` by relative path, with its bytes."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def per_sequence(subject: Subject, out: Path, config: FramesConfig, **kwargs) -> dict:
    return extract_sequence_frames(
        subject=subject,
        sequence=SEQUENCE,
        frames=SELECTED,
        outputs={t: out / f"{SEQUENCE}_{t:05d}" for t in SELECTED},
        config=config,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("layout", "broken", "downsample"),
    [("video", False, 2), ("video", True, 2), ("images", False, 4), ("images", True, 2)],
)
def test_per_sequence_writes_the_bytes_of_per_timestep(
    tmp_path: Path, layout: str, broken: bool, downsample: int
) -> None:
    subject = make_subject(tmp_path / "data", layout=layout, broken=broken)
    config = FramesConfig(downsample=downsample)
    calls = []
    results = per_sequence(subject, tmp_path / "seq", config, progress=lambda f, m: calls.append(f))
    assert list(results) == SELECTED and calls[-1] == 1.0
    for t in SELECTED:
        single = extract_frames(
            subject=subject,
            sequence=SEQUENCE,
            frame=t,
            output=tmp_path / "one" / f"{SEQUENCE}_{t:05d}",
            config=config,
        )
        assert results[t] == dataclasses.replace(single, directory=results[t].directory)
        assert read_frames_summary(results[t].directory) == results[t]
        together, alone = tree(results[t].directory), tree(single.directory)
        assert together == alone and len(together) >= 3
        views = {v.serial: v for v in single.views}
        assert list(views) == list(SERIALS)
        assert single.status == ("dropped" if broken else "ok")
        if broken:
            gone = "missing" if layout == "video" else "undecodable"  # as extract_frames had it
            assert views[MISSING].state == gone and MISSING in views[MISSING].reason
            blank = "blank" if t in BLANK_FRAMES else "ok"
            assert views[BLANKING].state == blank
            assert f"images/cam_{BLANKING}.png" in together or blank == "blank"
    assert not list((tmp_path / "seq").glob(".*partial"))
    if broken and layout == "video":  # the first half of the file decodes, the rest does not
        states = {t: {v.serial: v for v in results[t].views}[TRUNCATED] for t in SELECTED}
        assert states[0].state == "ok" and states[17].state == "undecodable"
        assert "truncated" in states[17].reason


def test_each_video_is_indexed_once_and_decoded_in_one_pass(tmp_path: Path) -> None:
    """Six timesteps within one GOP: one seek per camera, against one per timestep and camera
    when each timestep is extracted alone (the index cache serves those too)."""
    subject = make_subject(tmp_path / "data", layout="video", broken=False, gop=250)
    config = FramesConfig(downsample=2)
    video.clear_index_cache()
    builds, seeks = video.COUNTERS.index_builds, video.COUNTERS.seeks
    per_sequence(subject, tmp_path / "seq", config)
    assert video.COUNTERS.index_builds - builds == len(SERIALS)
    assert video.COUNTERS.seeks - seeks == len(SERIALS)
    seeks = video.COUNTERS.seeks
    for t in SELECTED:
        extract_frames(
            subject=subject, sequence=SEQUENCE, frame=t, output=tmp_path / f"{t}", config=config
        )
    assert video.COUNTERS.seeks - seeks == len(SERIALS) * len(SELECTED)
    assert video.COUNTERS.index_builds - builds == len(SERIALS)


def test_an_error_leaves_every_output_as_it_was(tmp_path: Path) -> None:
    subject = make_subject(tmp_path / "data", layout="video", broken=False)
    out = tmp_path / "seq"
    for t in SELECTED:  # earlier outputs, which a failed run must not touch
        (out / f"{SEQUENCE}_{t:05d}").mkdir(parents=True)
        (out / f"{SEQUENCE}_{t:05d}" / "old").write_text("old")
    path = video_path(subject.directory, sequence=SEQUENCE, serial=SERIALS[7])
    write_video(path, [np.zeros((HEIGHT // 2, WIDTH // 2, 3), np.uint8)] * N_FRAMES)
    with pytest.raises(DataError, match="the calibration expects 64x96"):
        per_sequence(subject, out, FramesConfig(downsample=2))
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{SEQUENCE}_{t:05d}" for t in SELECTED)
    assert all(
        (p / "old").read_text() == "old" and len(list(p.iterdir())) == 1 for p in out.iterdir()
    )


def test_frames_and_outputs_must_match(tmp_path: Path) -> None:
    subject = make_subject(tmp_path / "data", layout="images", broken=False)
    for frames, outputs in (
        ([1, 2], {1: tmp_path / "a"}),
        ([1, 1], {1: tmp_path / "a"}),
        ([1, 2], {1: tmp_path / "a", 2: tmp_path / "a"}),
    ):
        with pytest.raises(ValueError, match="distinct frames, each with its own output"):
            extract_sequence_frames(
                subject=subject, sequence=SEQUENCE, frames=frames, outputs=outputs
            )


def test_a_missing_colour_calibration_is_recorded(tmp_path: Path) -> None:
    """Without `color_calibration.json` the frames are the cameras' raw colours and every
    frames.json says why; with it they are corrected and say nothing."""
    subject = make_subject(tmp_path / "data", layout="images", broken=False)
    corrected = per_sequence(subject, tmp_path / "with", FramesConfig(downsample=2))
    color_calibration_path(subject.directory).unlink()
    raw = load_subject(subject.directory)
    uncorrected = per_sequence(raw, tmp_path / "without", FramesConfig(downsample=2))
    for t in SELECTED:
        assert corrected[t].uncorrected == "" and corrected[t].status == "ok"
        summary = read_frames_summary(uncorrected[t].directory)
        assert summary.status == "ok"
        assert summary.uncorrected.startswith("no colour calibration")
        assert str(color_calibration_path(subject.directory)) in summary.uncorrected
        image = f"images/cam_{SERIALS[0]}.png"
        with_ccm, without = (
            cv2.imread(str(r[t].directory / image))[..., ::-1] for r in (corrected, uncorrected)
        )
        assert not np.array_equal(with_ccm, without)  # the raw colours, not the corrected ones
        again = apply_color_correction(without, CAST)  # the cast applied afterwards: the same
        assert np.abs(again.astype(int) - with_ccm).max() <= 1


def test_a_summary_of_an_older_layout_is_refused_by_name(tmp_path: Path) -> None:
    """frames.json before the colour record (no version) is not read as if it had one; the
    frames' identity carries the layout, so the pipeline extracts such timesteps again."""
    subject = make_subject(tmp_path / "data", layout="images", broken=False)
    result = per_sequence(subject, tmp_path / "seq", FramesConfig(downsample=2))[SELECTED[0]]
    path = result.directory / SUMMARY_FILE
    old = json.loads(path.read_text())
    del old["version"], old["uncorrected"]
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match=f"{path}: not a readable frames summary.*layout 1"):
        read_frames_summary(result.directory)
