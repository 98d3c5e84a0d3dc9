"""The NeRSemble layer on real files in the kit's format, written to tmp_path."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tasks.formats.cameras import FULL_SIZE, SERIALS, Camera, downsample
from tasks.formats.color import apply_color_correction
from tasks.formats.nersemble import (
    DataError,
    background_path,
    camera_params_path,
    color_calibration_path,
    downsample_image,
    frame_indices,
    iter_frames,
    iter_read_frames,
    list_sequences,
    load_subject,
    read_background,
    read_cameras,
    read_color_calibration,
    read_frames,
    sequence_layout,
    subject_dir,
    validate_subject_id,
    video_path,
    write_cameras,
    write_color_calibration,
)
from tasks.formats.video import write_video

WIDTH, HEIGHT = 64, 96
"""Image size of the test cameras: even, and divisible by 4."""
SEQUENCE = "EXP-1-head"
N_FRAMES = 6


def make_cameras(*, shared_k: bool = True) -> dict[str, Camera]:
    rotations = Rotation.random(len(SERIALS), random_state=0).as_matrix()
    cameras = {}
    for i, (serial, R) in enumerate(zip(SERIALS, rotations, strict=True)):
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, [0.01 * i, -0.02, 1.0 + 0.001 * i]
        K = np.array([[80.0, 0, 31.5], [0, 80.0, 47.5], [0, 0, 1]])
        if not shared_k:
            K[0, 0] += i
        cameras[serial] = Camera(serial=serial, K=K, world_2_cam=T, width=WIDTH, height=HEIGHT)
    return cameras


def frame_image(t: int, serial: str) -> np.ndarray:
    """A blocky image unique to (frame, camera), smooth enough for video and JPEG."""
    seed = t * 1000 + SERIALS.index(serial)
    blocks = np.random.default_rng(seed).integers(30, 226, (HEIGHT // 16, WIDTH // 16, 3))
    return np.kron(blocks, np.ones((16, 16, 1))).astype(np.uint8)


def same_camera(a: Camera, b: Camera) -> bool:
    return (
        a.serial == b.serial
        and (a.width, a.height) == (b.width, b.height)
        and np.array_equal(a.K, b.K)
        and np.array_equal(a.world_2_cam, b.world_2_cam)
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


CAST = np.array([[0.9, 0.05, 0.0], [0.0, 1.0, 0.0], [0.05, 0.0, 0.8]])


@pytest.fixture
def subject(tmp_path: Path) -> Path:
    """Subject 043 with calibration, a colour calibration and two cameras' videos."""
    directory = subject_dir(root=tmp_path, subject="043")
    write_cameras(directory, make_cameras())
    write_color_calibration(directory, {s: CAST for s in SERIALS})
    for serial in SERIALS[:2]:
        frames = (frame_image(t, serial) for t in range(N_FRAMES))
        write_video(video_path(directory, sequence=SEQUENCE, serial=serial), frames)
    (directory / "sequences" / "BACKGROUND").mkdir()
    return directory


def test_cameras_round_trip_exactly(tmp_path: Path) -> None:
    for shared in (True, False):
        cameras = make_cameras(shared_k=shared)
        write_cameras(tmp_path, cameras)
        stored = json.loads(camera_params_path(tmp_path).read_text())
        assert isinstance(stored["intrinsics"], list if shared else dict)
        read = read_cameras(tmp_path)
        assert list(read) == list(SERIALS)
        for serial, camera in cameras.items():
            assert np.array_equal(read[serial].K, camera.K)
            assert np.array_equal(read[serial].world_2_cam, camera.world_2_cam)
            assert (read[serial].width, read[serial].height) == (WIDTH, HEIGHT)


def test_kit_calibration_without_image_size_is_full_resolution(tmp_path: Path) -> None:
    cameras = make_cameras()
    path = camera_params_path(tmp_path)
    path.parent.mkdir(parents=True)
    poses = {s: cameras[s].world_2_cam.tolist() for s in reversed(SERIALS)}
    path.write_text(
        json.dumps({"world_2_cam": poses, "intrinsics": cameras[SERIALS[0]].K.tolist()})
    )
    read = read_cameras(tmp_path)
    assert list(read) == list(SERIALS)
    assert {(c.width, c.height) for c in read.values()} == {FULL_SIZE}


def write_params(directory: Path, edit) -> Path:
    """Write valid calibration, then change its JSON with `edit`."""
    write_cameras(directory, make_cameras())
    path = camera_params_path(directory)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def set_pose(serial: str, pose: np.ndarray):
    return lambda data: data["world_2_cam"].__setitem__(serial, pose.tolist())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda data: data["world_2_cam"].pop(SERIALS[3]), f"missing serials.*{SERIALS[3]}"),
        (set_pose(SERIALS[1], np.diag([1.1, 1, 1, 1])), f"{SERIALS[1]} is not a rigid"),
        (set_pose(SERIALS[2], np.diag([1.0, 1, 0, 1])), f"{SERIALS[2]} is not a rigid"),
        (set_pose(SERIALS[0], np.diag([1.0, 1, -1, 1])), "det R = 1 \\(got -1"),
        (lambda data: data.__setitem__("intrinsics", np.diag([-80.0, 80, 1]).tolist()), "focal"),
        (lambda data: data.__setitem__("intrinsics", [[1, 2], [3, 4]]), "finite \\(3, 3\\)"),
        (lambda data: data.__setitem__("image_size", [64]), "image_size"),
    ],
)
def test_bad_calibration_names_the_file(tmp_path: Path, edit, message: str) -> None:
    path = write_params(tmp_path, edit)
    before = path.read_text()
    with pytest.raises(DataError, match=message) as error:
        read_cameras(tmp_path)
    assert str(path) in str(error.value)
    assert path.read_text() == before


def test_missing_or_corrupt_calibration(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="camera_params.json"):
        read_cameras(tmp_path)
    path = write_params(tmp_path, lambda data: None)
    path.write_text('{"world_2_cam": {')
    with pytest.raises(DataError, match=f"{path}: not valid JSON"):
        read_cameras(tmp_path)
    assert path.read_text() == '{"world_2_cam": {'


def test_invalid_cameras_are_not_written(tmp_path: Path) -> None:
    path = write_cameras(tmp_path, make_cameras())
    before = path.read_text()
    cameras = make_cameras()
    bad = cameras[SERIALS[5]]
    cameras[SERIALS[5]] = Camera(
        serial=bad.serial, K=bad.K, world_2_cam=np.zeros((4, 4)), width=WIDTH, height=HEIGHT
    )
    with pytest.raises(DataError, match=SERIALS[5]):
        write_cameras(tmp_path, cameras)
    del cameras[SERIALS[5]]
    with pytest.raises(DataError, match="missing serials"):
        write_cameras(tmp_path, cameras)
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == ["camera_params.json"]


@pytest.mark.parametrize("bad", ["../x", "043/..", "a/b", "", "..", "a\\b", "x y", "/abs"])
def test_bad_subject_ids_are_rejected(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="bad subject id") as error:
        subject_dir(root=tmp_path, subject=bad)
    assert repr(bad) in str(error.value)


def test_subject_dir_pads_numeric_ids(tmp_path: Path) -> None:
    assert validate_subject_id("043") == "043"
    assert subject_dir(root=tmp_path, subject="43") == tmp_path / "043"
    assert subject_dir(root=tmp_path, subject="sample_01") == tmp_path / "sample_01"


def test_color_calibration_round_trip(tmp_path: Path) -> None:
    assert read_color_calibration(tmp_path) is None
    matrices = {SERIALS[0]: np.eye(3), SERIALS[1]: np.arange(30.0).reshape(3, 10) / 30}
    write_color_calibration(tmp_path, matrices)
    read = read_color_calibration(tmp_path)
    assert list(read) == [SERIALS[0], SERIALS[1]]
    for serial, matrix in matrices.items():
        assert np.array_equal(read[serial], matrix)
    color_calibration_path(tmp_path).write_text(json.dumps({SERIALS[0]: np.eye(4).tolist()}))
    with pytest.raises(DataError, match=f"color_calibration.json: matrix of camera {SERIALS[0]}"):
        read_color_calibration(tmp_path)


def test_list_sequences_and_layout(subject: Path) -> None:
    (subject / "sequences" / "EMO-1-shout+laugh" / "timesteps").mkdir(parents=True)
    assert list_sequences(subject) == ["EMO-1-shout+laugh", SEQUENCE]
    assert sequence_layout(subject, sequence=SEQUENCE) == "video"
    assert sequence_layout(subject, sequence="EMO-1-shout+laugh") == "images"
    with pytest.raises(ValueError, match="bad sequence name"):
        sequence_layout(subject, sequence="../043")
    with pytest.raises(FileNotFoundError, match="sequences"):
        list_sequences(subject / "missing")


def test_background_plate(subject: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"image_{SERIALS[0]}.jpg"):
        read_background(subject, serial=SERIALS[0])
    plate = frame_image(0, SERIALS[0])
    cv2.imwrite(str(background_path(subject, serial=SERIALS[0])), plate[..., ::-1])
    assert psnr(read_background(subject, serial=SERIALS[0]), plate) > 28


def test_read_frames_from_videos(subject: Path) -> None:
    loaded = load_subject(subject)
    serial = SERIALS[1]
    assert frame_indices(loaded, sequence=SEQUENCE, serial=serial) == list(range(N_FRAMES))
    raw = read_frames(
        loaded, sequence=SEQUENCE, serial=serial, frames=[4, 0, 9], color_correct=False
    )
    assert sorted(raw.images) == [0, 4] and list(raw.failed) == [9] and not raw.color_corrected
    for t, image in raw.images.items():
        assert psnr(image, frame_image(t, serial)) > 30
    small = read_frames(loaded, sequence=SEQUENCE, serial=serial, frames=[0, 4], downsample=4)
    assert small.color_corrected
    assert same_camera(small.camera, downsample(loaded.cameras[serial], 4))
    assert np.allclose(small.camera.K[0, 0], 20.0)
    for t, image in small.images.items():
        assert image.shape == (HEIGHT // 4, WIDTH // 4, 3)
        expected = apply_color_correction(downsample_image(raw.images[t], 4), CAST)
        assert np.array_equal(image, expected)


def test_iter_frames_matches_read_frames(subject: Path) -> None:
    loaded = load_subject(subject)
    streamed = dict(iter_frames(loaded, sequence=SEQUENCE, serial=SERIALS[0], downsample=2))
    read = read_frames(loaded, sequence=SEQUENCE, serial=SERIALS[0], frames=streamed, downsample=2)
    assert sorted(streamed) == list(range(N_FRAMES))
    for t, image in streamed.items():
        assert np.array_equal(image, read.images[t])


def test_video_problems(subject: Path) -> None:
    loaded = load_subject(subject)
    with pytest.raises(FileNotFoundError, match=f"cam_{SERIALS[2]}.mp4"):
        read_frames(loaded, sequence=SEQUENCE, serial=SERIALS[2], frames=[0])
    path = video_path(subject, sequence=SEQUENCE, serial=SERIALS[0])
    write_video(path, (frame_image(t, SERIALS[0]) for t in range(20)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    truncated = read_frames(loaded, sequence=SEQUENCE, serial=SERIALS[0], frames=range(20))
    assert truncated.images and truncated.failed
    assert set(truncated.images) | set(truncated.failed) == set(range(20))
    write_video(path, [np.zeros((HEIGHT // 2, WIDTH // 2, 3), np.uint8)])
    with pytest.raises(DataError, match=f"{path}: image is 32x48, the calibration expects 64x96"):
        read_frames(loaded, sequence=SEQUENCE, serial=SERIALS[0], frames=[0])


def test_missing_colour_matrix_is_an_error(subject: Path) -> None:
    write_color_calibration(subject, {SERIALS[0]: CAST})
    loaded = load_subject(subject)
    with pytest.raises(DataError, match=f"no colour correction matrix for camera {SERIALS[1]}"):
        read_frames(loaded, sequence=SEQUENCE, serial=SERIALS[1], frames=[0])
    color_calibration_path(subject).unlink()
    frames = read_frames(load_subject(subject), sequence=SEQUENCE, serial=SERIALS[1], frames=[0])
    assert not frames.color_corrected and list(frames.images) == [0]


def test_image_folder_layout_through_the_same_interface(subject: Path) -> None:
    """Frames stored at 2x as JPEG; reading at 4x shrinks them by 2 more, K follows."""
    sequence, serial = "SEN-01-cramp_small_danger", SERIALS[0]
    for t in (0, 3, 5):
        folder = subject / "sequences" / sequence / "timesteps" / f"frame_{t:05d}" / "images-2x"
        folder.mkdir(parents=True)
        half = downsample_image(frame_image(t, serial), 2)
        cv2.imwrite(
            str(folder / f"cam_{serial}.jpg"), half[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98]
        )
    loaded = load_subject(subject)
    assert frame_indices(loaded, sequence=sequence, serial=serial) == [0, 3, 5]
    assert frame_indices(loaded, sequence=sequence, serial=SERIALS[1]) == []
    frames = read_frames(
        loaded,
        sequence=sequence,
        serial=serial,
        frames=[5, 1, 0],
        downsample=4,
        color_correct=False,
    )
    assert same_camera(frames.camera, downsample(loaded.cameras[serial], 4))
    assert sorted(frames.images) == [0, 5] and list(frames.failed) == [1]
    for t, image in frames.images.items():
        assert image.shape == (HEIGHT // 4, WIDTH // 4, 3)
        assert psnr(image, downsample_image(frame_image(t, serial), 4)) > 28  # JPEG
    at_full = read_frames(loaded, sequence=sequence, serial=serial, frames=[0])
    assert "images-<f>x" in at_full.failed[0] and not at_full.images
    streamed = dict(iter_frames(loaded, sequence=sequence, serial=serial, downsample=2))
    assert sorted(streamed) == [0, 3, 5]
    assert streamed[0].shape == (HEIGHT // 2, WIDTH // 2, 3)


def test_iter_read_frames_streams_what_read_frames_returns(subject: Path) -> None:
    """Both layouts: the same images and failures, one frame at a time in frame order."""
    sequence = "SEN-01-cramp_small_danger"
    for t in (1, 4):
        folder = subject / "sequences" / sequence / "timesteps" / f"frame_{t:05d}" / "images-1x"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / f"cam_{SERIALS[0]}.png"), frame_image(t, SERIALS[0])[..., ::-1])
    loaded = load_subject(subject)
    for seq, wanted in ((SEQUENCE, [5, 0, 9, 3, 0]), (sequence, [4, 2, 1])):
        kwargs = dict(sequence=seq, serial=SERIALS[0], frames=wanted, downsample=2)
        streamed = list(iter_read_frames(loaded, **kwargs))
        read = read_frames(loaded, **kwargs)
        assert [d.frame for d in streamed] == sorted(set(wanted))
        assert {d.frame for d in streamed if d.image is None} == set(read.failed)
        for t, image, error in streamed:
            if image is None:
                assert error == read.failed[t]
            else:
                assert error == "" and np.array_equal(image, read.images[t])
    with pytest.raises(FileNotFoundError, match=f"cam_{SERIALS[2]}.mp4"):
        next(iter_read_frames(loaded, sequence=SEQUENCE, serial=SERIALS[2], frames=[0]))
