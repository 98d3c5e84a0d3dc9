"""mp4 round trips through real files: exact frame numbers, truncation, atomic writes, one
index per file and one decoding pass per set of frames."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tasks.formats import video
from tasks.formats.video import (
    NERSEMBLE_FPS,
    VideoError,
    count_frames,
    decode_frames,
    index_video,
    iter_decoded,
    iter_frames,
    write_video,
)

N_FRAMES = 20


def pattern_frames(n: int = N_FRAMES, *, height: int = 96, width: int = 128) -> list[np.ndarray]:
    """Frames of 32-pixel blocks with random colours: each frame is unlike every other."""
    blocks = np.random.default_rng(0).integers(0, 256, (n, height // 32, width // 32, 3))
    return [np.kron(b, np.ones((32, 32, 1))).astype(np.uint8) for b in blocks]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture
def frames() -> list[np.ndarray]:
    return pattern_frames()


@pytest.fixture
def video_file(tmp_path: Path, frames: list[np.ndarray]) -> Path:
    path = tmp_path / "cam.mp4"
    assert write_video(path, frames) == N_FRAMES
    return path


def assert_is_frame(image: np.ndarray, index: int, frames: list[np.ndarray]) -> None:
    """The decoded image matches source `index` and no other source better."""
    assert psnr(image, frames[index]) > 30
    assert int(np.argmax([psnr(image, f) for f in frames])) == index


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_decode_frames_is_frame_accurate(tmp_path: Path, frames: list, codec: str) -> None:
    path = tmp_path / f"{codec}.mp4"
    write_video(path, frames, codec=codec)
    result = decode_frames(path, [0, 7, 19, 3])
    assert result.ok and result.num_frames == N_FRAMES
    assert sorted(result.frames) == [0, 3, 7, 19]
    for index, image in result.frames.items():
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        assert_is_frame(image, index, frames)


def test_written_stream_is_h264_at_73_fps(video_file: Path) -> None:
    with av.open(str(video_file)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == Fraction(NERSEMBLE_FPS)
        assert stream.frames == N_FRAMES
    assert count_frames(video_file) == N_FRAMES
    assert not list(video_file.parent.glob("*.tmp.mp4"))


def test_frames_outside_the_video_are_failures(video_file: Path, frames: list) -> None:
    result = decode_frames(video_file, [2, 20, -1, 2])
    assert sorted(result.frames) == [2]
    assert sorted(result.failed) == [-1, 20]
    assert "outside the 20 frames" in result.failed[20]


def test_iter_frames_streams_the_same_frames(video_file: Path, frames: list) -> None:
    streamed = dict(iter_frames(video_file, stride=3))
    assert sorted(streamed) == list(range(0, N_FRAMES, 3))
    sought = decode_frames(video_file, streamed).frames
    for index, image in streamed.items():
        assert np.array_equal(image, sought[index])  # sequential and seeking decode agree
        assert_is_frame(image, index, frames)


def test_truncated_video_returns_leading_frames(video_file: Path, frames: list) -> None:
    data = video_file.read_bytes()
    video_file.write_bytes(data[: len(data) // 2])
    result = decode_frames(video_file, range(N_FRAMES))
    assert 0 < len(result.frames) < N_FRAMES
    assert set(result.frames) | set(result.failed) == set(range(N_FRAMES))
    assert "truncated" in result.failed[N_FRAMES - 1]
    for index, image in result.frames.items():
        assert_is_frame(image, index, frames)
    with pytest.raises(VideoError, match="cam.mp4"):
        for _ in iter_frames(video_file):
            pass


def test_video_with_nothing_decodable_names_the_file(video_file: Path) -> None:
    data = video_file.read_bytes()
    video_file.write_bytes(data[: len(data) // 20])
    with pytest.raises(VideoError, match="cam.mp4.*no requested frame decoded"):
        decode_frames(video_file, [0, 1])
    video_file.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoError, match="cam.mp4.*cannot open"):
        decode_frames(video_file, [0])


def test_missing_video_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        decode_frames(tmp_path / "absent.mp4", [0])
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        next(iter_frames(tmp_path / "absent.mp4"))


def test_bad_frames_are_rejected_and_existing_file_kept(video_file: Path) -> None:
    before = video_file.read_bytes()
    with pytest.raises(ValueError, match="even width and height"):
        write_video(video_file, [np.zeros((33, 64, 3), np.uint8)])
    with pytest.raises(ValueError, match="differs from the first frame"):
        write_video(video_file, [np.zeros((32, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)])
    with pytest.raises(ValueError, match="no frames"):
        write_video(video_file, [])
    assert video_file.read_bytes() == before
    assert sorted(p.name for p in video_file.parent.iterdir()) == ["cam.mp4"]


@pytest.mark.parametrize("gop", [1, 250])
def test_seeking_agrees_with_sequential_decoding(tmp_path: Path, gop: int) -> None:
    """Random index sets, with a keyframe every frame or one for the whole video."""
    frames = pattern_frames(60, height=64, width=64)
    path = tmp_path / "long.mp4"
    write_video(path, frames, gop=gop)
    sequential = dict(iter_frames(path))
    rng = np.random.default_rng(gop)
    for _ in range(8):
        indices = rng.choice(60, size=5, replace=False)
        result = decode_frames(path, indices)
        assert result.ok
        for index in indices:
            assert np.array_equal(result.frames[index], sequential[index])


def expected_seeks(keyframes: tuple[int, ...], targets: list[int]) -> int:
    """Seeks of one pass over sorted targets: the first, then one whenever a keyframe lies
    between the frame just decoded and the next target (decoding on would be longer)."""

    def key(t: int) -> int:
        return max(k for k in keyframes if k <= t)

    return 1 + sum(key(t) > prev + 1 for prev, t in zip(targets, targets[1:], strict=False))


@pytest.fixture
def long_video(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """48 frames, a keyframe at most every 6 (x264 adds more at scene cuts), B-frames on."""
    frames = pattern_frames(48, height=64, width=96)
    path = tmp_path / "long.mp4"
    write_video(path, frames, gop=6)
    return path, frames


@pytest.mark.parametrize(
    "indices",
    [
        [47, 3, 0, 29, 3, 12],  # out of order, repeated, across many keyframes
        [7, 8, 9, 10, 11, 12, 13],  # a run crossing a keyframe: no seek needed
        [1, 40],  # far apart: seek in between
        [5, 46, 47],  # the end of the file
    ],
)
def test_one_pass_gives_the_pixels_of_per_frame_decoding(
    long_video: tuple[Path, list[np.ndarray]], indices: list[int]
) -> None:
    path, frames = long_video
    index = index_video(path)
    assert len(index.keyframes) >= 8 and index.keyframes[0] == 0
    seeks = video.COUNTERS.seeks
    together = decode_frames(path, indices)
    targets = sorted(set(indices))
    assert together.ok and sorted(together.frames) == targets
    assert video.COUNTERS.seeks - seeks == expected_seeks(index.keyframes, targets)
    for i in targets:
        alone = decode_frames(path, [i])
        assert np.array_equal(together.frames[i], alone.frames[i])
        assert_is_frame(together.frames[i], i, frames)


def test_a_set_within_one_gop_is_decoded_once(tmp_path: Path) -> None:
    frames = pattern_frames(40, height=64, width=64)
    path = tmp_path / "gop.mp4"
    write_video(path, frames, gop=250)
    index_video(path)
    seeks, decoded = video.COUNTERS.seeks, video.COUNTERS.frames_decoded
    wanted = [33, 4, 17, 18, 25]
    result = decode_frames(path, wanted)
    assert result.ok and video.COUNTERS.seeks - seeks == 1
    one_pass = video.COUNTERS.frames_decoded - decoded
    assert 34 <= one_pass <= 40  # frames 0..33, plus what the decoder had in flight
    for i in wanted:
        decode_frames(path, [i])
    per_frame = video.COUNTERS.frames_decoded - decoded - one_pass
    assert per_frame >= sum(i + 1 for i in wanted)  # each read starts again at frame 0


def test_iter_decoded_streams_in_frame_order(long_video: tuple[Path, list[np.ndarray]]) -> None:
    path, frames = long_video
    index_video(path)
    decoded = video.COUNTERS.frames_decoded
    stream = iter_decoded(path, [40, 2, 60, -3, 2])
    first = next(stream)
    assert first.frame == -3 and first.image is None and "outside the 48 frames" in first.error
    second = next(stream)
    assert second.frame == 2 and second.error == "" and second.image is not None
    assert video.COUNTERS.frames_decoded - decoded < 20  # frame 40 not decoded yet
    rest = list(stream)
    assert [d.frame for d in rest] == [40, 60]
    assert_is_frame(rest[0].image, 40, frames) and rest[1].image is None


def test_the_index_is_built_once_per_file(tmp_path: Path) -> None:
    path = tmp_path / "cam.mp4"
    write_video(path, pattern_frames(12))
    video.clear_index_cache()
    builds = video.COUNTERS.index_builds
    assert count_frames(path) == 12
    decode_frames(path, [3])
    decode_frames(path, [0, 11])
    list(iter_decoded(path, [5, 6]))
    assert index_video(path) == index_video(str(path))
    assert video.COUNTERS.index_builds - builds == 1
    write_video(path, pattern_frames(N_FRAMES)[::-1])  # a new file at the same path
    result = decode_frames(path, [0])
    assert video.COUNTERS.index_builds - builds == 2
    assert result.num_frames == N_FRAMES
    assert_is_frame(result.frames[0], N_FRAMES - 1, pattern_frames())
    video.clear_index_cache()
    count_frames(path)
    assert video.COUNTERS.index_builds - builds == 3


def test_truncated_video_reports_each_undecodable_frame(video_file: Path, frames: list) -> None:
    """The same frame gives the same answer alone or with others (frames.json depends on it)."""
    data = video_file.read_bytes()
    video_file.write_bytes(data[: len(data) // 2])
    index = index_video(video_file)
    assert index.error is not None and "truncated" in index.error
    together = {d.frame: d for d in iter_decoded(video_file, range(N_FRAMES + 2))}
    assert list(together) == list(range(N_FRAMES + 2))
    bad = [i for i, d in together.items() if d.image is None]
    good = [i for i, d in together.items() if d.image is not None]
    assert good == list(range(len(good))) and 0 < len(good) < N_FRAMES
    assert all("truncated" in together[i].error for i in bad)
    for i in (good[-1], *bad):
        (alone,) = iter_decoded(video_file, [i])
        assert alone.error == together[i].error
        if i in good:
            assert np.array_equal(alone.image, together[i].image)
            assert_is_frame(alone.image, i, frames)
