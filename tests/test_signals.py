"""Signal extraction on real photo frames in a real mp4: detection, truncation, no face."""

from pathlib import Path

import numpy as np
import pytest
import skimage.data

from tasks.formats import nersemble
from tasks.formats.cameras import FRONTAL_SERIAL, SERIALS, Camera
from tasks.formats.video import write_video
from tasks.signals import SignalsConfig, extract_signals, read_signals, write_signals


def _astronaut_frames(n: int) -> list[np.ndarray]:
    """The astronaut photo, shifted a little each frame like a head moving in a fixed camera."""
    photo = skimage.data.astronaut()
    return [np.roll(photo, shift=(2 * t, 3 * t), axis=(0, 1)) for t in range(n)]


@pytest.fixture
def subject(tmp_path: Path) -> nersemble.Subject:
    directory = tmp_path / "043"
    k = np.array([[600.0, 0, 255.5], [0, 600.0, 255.5], [0, 0, 1]])
    cameras = {
        s: Camera(serial=s, K=k, world_2_cam=np.eye(4), width=512, height=512) for s in SERIALS
    }
    nersemble.write_cameras(directory, cameras)
    face = nersemble.video_path(directory, sequence="EXP-1-head", serial=FRONTAL_SERIAL)
    write_video(face, _astronaut_frames(12))
    blank = nersemble.video_path(directory, sequence="BLANK", serial=FRONTAL_SERIAL)
    write_video(blank, [np.full((512, 512, 3), 128, np.uint8)] * 4)
    return nersemble.load_subject(directory)


CONFIG = SignalsConfig(downsample=2)


def test_signals_on_real_photo_frames(subject: nersemble.Subject, tmp_path: Path) -> None:
    result = extract_signals(subject=subject, sequence="EXP-1-head", config=CONFIG)
    table = result.table
    assert result.failure == ""
    assert list(table.frame) == list(range(12))
    assert table.detected.all()
    landmarks = np.stack(table.landmarks.to_numpy()).reshape(12, 478, 3)
    # The photo moves 3 px right per frame at full size: 1.5 px at the working size.
    drift = np.median(landmarks[11, :, 0] - landmarks[0, :, 0]) / 11
    assert drift == pytest.approx(1.5, abs=0.3)
    angles = np.degrees(np.linalg.norm(np.stack(table.rotation.to_numpy()), axis=1))
    assert np.all(angles < 25), "the astronaut faces the camera"
    write_signals(tmp_path / "s.parquet", result)
    back = read_signals(tmp_path / "s.parquet")
    assert back.sequence == "EXP-1-head"
    np.testing.assert_array_equal(
        np.stack(back.table.blendshapes.to_numpy()), np.stack(table.blendshapes.to_numpy())
    )


def test_stride_takes_every_kth_frame(subject: nersemble.Subject) -> None:
    config = SignalsConfig(downsample=2, stride=3)
    result = extract_signals(subject=subject, sequence="EXP-1-head", config=config)
    assert list(result.table.frame) == [0, 3, 6, 9]


def test_sequence_without_a_face_is_recorded(subject: nersemble.Subject) -> None:
    result = extract_signals(subject=subject, sequence="BLANK", config=CONFIG)
    assert len(result.table) == 4
    assert result.detected_frames == 0
    assert np.isnan(np.stack(result.table.blendshapes.to_numpy())).all()


def test_truncated_video_keeps_decoded_frames(subject: nersemble.Subject) -> None:
    path = nersemble.video_path(subject.directory, sequence="EXP-1-head", serial=FRONTAL_SERIAL)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result = extract_signals(subject=subject, sequence="EXP-1-head", config=CONFIG)
    assert 0 < len(result.table) < 12
    assert result.table.detected.all()
    assert str(path) in result.failure
