"""Frame-accurate mp4 decoding and encoding with PyAV.

Frame numbers are positions in presentation order, counted from 0, as the NeRSemble kit
counts them. `decode_frames` finds them by timestamp (a packet index built by demuxing
without decoding), seeks to the keyframe before each wanted frame and decodes forward, so
a few frames from a long video cost a few GOPs, not the whole file. `iter_frames` streams
a whole video one frame at a time.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import av.error
import numpy as np

from tasks.formats.atomic import atomic_file

NERSEMBLE_FPS = 73
"""NeRSemble's capture rate in frames per second."""

Codec = Literal["libx264", "mpeg4"]
DEFAULT_CODEC: Codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
"""H.264 where PyAV's bundled ffmpeg has libx264 (it does in the PyPI wheels), else MPEG-4."""


class VideoError(RuntimeError):
    """A video file that cannot be read (its path is in the message)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecodeResult:
    """The frames of one video that were asked for: those that decoded and those that did not."""

    path: Path
    """The video file."""
    frames: dict[int, np.ndarray]
    """Frame number -> (H, W, 3) uint8 RGB image, for every requested frame that decoded."""
    failed: dict[int, str]
    """Frame number -> why it did not decode (past the end, decoder error, ...)."""
    num_frames: int
    """Frames the demuxer found in the file (fewer than the header says when truncated)."""

    @property
    def ok(self) -> bool:
        """True when every requested frame decoded."""
        return not self.failed


@dataclasses.dataclass(frozen=True)
class _PacketIndex:
    """Presentation timestamps of a video stream, found by demuxing without decoding."""

    pts: list[int]
    """Sorted presentation timestamps; frame number i has pts[i]."""
    keyframes: list[int]
    """Frame numbers of keyframes, ascending."""
    error: str | None
    """Why demuxing stopped early, if it did."""
    header_frames: int
    """Frame count the container's header states (0 when it states none)."""


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: cannot open video: {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def _packet_index(path: Path) -> _PacketIndex:
    pts, key_pts, error = [], set(), None
    with _open(path) as container:
        stream = container.streams.video[0]
        header_frames = stream.frames
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:  # flush packet or edit-list pre-roll
                    continue
                if packet.pts is None:
                    raise VideoError(f"{path}: packets without timestamps are not supported")
                pts.append(packet.pts)
                if packet.is_keyframe:
                    key_pts.add(packet.pts)
        except av.error.FFmpegError as e:
            error = f"demuxing stopped after {len(pts)} packets: {e}"
    pts.sort()
    keyframes = [i for i, p in enumerate(pts) if p in key_pts]
    if error is None and len(pts) < header_frames:
        error = f"the header lists {header_frames} frames: the file looks truncated"
    elif error is None and not pts:
        error = "the file holds no video frames"
    return _PacketIndex(pts=pts, keyframes=keyframes, error=error, header_frames=header_frames)


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames in the video, counted by demuxing (exact, no decoding).

    A truncated file counts only the packets still present.
    """
    return len(_packet_index(Path(path)).pts)


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _decode_after_seek(
    container: av.container.InputContainer, stream: av.VideoStream, pts: int
) -> Iterator[av.VideoFrame]:
    container.seek(pts, stream=stream, backward=True, any_frame=False)
    for packet in container.demux(stream):
        yield from packet.decode()


def _decode_targets(
    path: Path, index: _PacketIndex, targets: list[int]
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Decode sorted in-range frame numbers, seeking only when the next keyframe is ahead."""
    frames: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}
    frame_of_pts = {p: i for i, p in enumerate(index.pts)}
    target_set = set(targets)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoder, pos, start = None, -1, 0
        for target in targets:
            k = bisect.bisect_right(index.keyframes, target) - 1
            key = index.keyframes[k] if k >= 0 else 0
            if decoder is None or not (key <= pos + 1 <= target):
                decoder, start = _decode_after_seek(container, stream, index.pts[key]), key
            try:
                for frame in decoder:
                    i = frame_of_pts.get(frame.pts, -1)
                    if i < start:  # leading frames of an open GOP, or unknown timestamps
                        continue
                    pos = i
                    if i in target_set and i not in frames:
                        frames[i] = _rgb(frame)
                    if i >= target:
                        break
                else:
                    decoder = None
            except av.error.FFmpegError as e:
                failed[target] = f"decoding failed near frame {target}: {e}"
                decoder = None
            if target not in frames and target not in failed:
                failed[target] = index.error or "the decoder ended before it"
    return frames, failed


def decode_frames(path: str | os.PathLike, indices: Iterable[int]) -> DecodeResult:
    """Decode the frames with the given numbers (any order, repeats allowed).

    Frames that cannot be decoded (past the end, a truncated or corrupt file) are listed in
    `failed` with the reason. Raises FileNotFoundError for a missing file, and VideoError
    when the file cannot be opened or is broken (truncated, corrupt) such that not one
    requested frame decodes.
    """
    path = Path(path)
    wanted = sorted({int(i) for i in indices})
    index = _packet_index(path)
    n = len(index.pts)
    outside = f"outside the {n} frames in the file" + (f" ({index.error})" if index.error else "")
    targets = [i for i in wanted if 0 <= i < n]
    frames, failed = _decode_targets(path, index, targets)
    failed.update({i: f"frame {i} is {outside}" for i in wanted if not 0 <= i < n})
    broken = index.error is not None or any(t in failed for t in targets)
    if wanted and not frames and broken:
        reasons = "; ".join(sorted(set(failed.values())))
        raise VideoError(f"{path}: no requested frame decoded: {reasons}")
    return DecodeResult(path=path, frames=frames, failed=failed, num_frames=n)


def iter_frames(path: str | os.PathLike, *, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Stream (frame number, (H, W, 3) uint8 RGB) for every `stride`-th frame from frame 0.

    Holds one frame at a time. Raises VideoError naming the file if decoding fails part way,
    after yielding every frame before the failure.
    """
    if stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                if count % stride == 0:
                    yield count, _rgb(frame)
                count += 1
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: decoding stopped after {count} frames: {e}") from e
        if count < stream.frames:
            raise VideoError(f"{path}: ended after {count} of the {stream.frames} frames listed")


def _check_frame(frame: np.ndarray, *, path: Path, size: tuple[int, int] | None) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"{path}: frames must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}"
        )
    h, w = frame.shape[:2]
    if size is None and (w % 2 or h % 2):
        raise ValueError(f"{path}: yuv420p needs even width and height, got {w}x{h}")
    if size is not None and (w, h) != size:
        raise ValueError(f"{path}: frame size {w}x{h} differs from the first frame's {size}")


def _encoder_options(codec: Codec, quality: int | None) -> dict[str, str]:
    if codec == "libx264":
        return {"crf": str(18 if quality is None else quality), "preset": "fast"}
    qscale = 3 if quality is None else quality  # global_quality is in lambda: qscale * 118
    return {"flags": "+qscale", "global_quality": str(qscale * 118)}


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    *,
    fps: int | Fraction = NERSEMBLE_FPS,
    quality: int | None = None,
    gop: int = 8,
    codec: Codec = DEFAULT_CODEC,
) -> int:
    """Encode (H, W, 3) uint8 RGB frames to an mp4 and return how many were written.

    Width and height must be even (yuv420p halves the chroma planes). `quality` is libx264's
    constant rate factor (0-51, default 18: visually lossless) or mpeg4's quantiser scale
    (2-31, default 3); lower is better. A small `gop` keeps seeking cheap. The moov atom
    goes first (faststart), so a truncated file still yields its leading frames. The file
    is written under a temporary name beside `path` (`tasks.formats.atomic`; folders are
    created) and renamed into place: a failure leaves no partial file and any earlier file
    at `path` untouched.
    """
    path = Path(path)
    rate = Fraction(fps)
    count, size = 0, None
    options = {"movflags": "+faststart"}
    with atomic_file(path) as tmp, av.open(str(tmp), "w", format="mp4", options=options) as out:
        stream = None
        for frame in frames:
            _check_frame(frame, path=path, size=size)
            if stream is None:
                size = (frame.shape[1], frame.shape[0])
                stream = out.add_stream(codec, rate=rate)
                stream.width, stream.height = size
                stream.pix_fmt = "yuv420p"
                stream.codec_context.time_base = 1 / rate
                stream.codec_context.gop_size = gop
                stream.options = _encoder_options(codec, quality)
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = count, 1 / rate
            out.mux(stream.encode(video_frame))
            count += 1
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        out.mux(stream.encode(None))
    return count
