"""Frame-accurate mp4 decoding and encoding with PyAV.

Frame numbers are positions in presentation order, counted from 0, as the NeRSemble kit
counts them. A `VideoIndex` (every packet's timestamp and which are keyframes, found by
demuxing without decoding) is built once per file and kept while the file is unchanged.
`iter_decoded` / `decode_frames` then read any set of frames in ONE forward pass: seek to
the keyframe before the first wanted frame, decode forward, and seek again only when the
next wanted frame lies beyond a keyframe still ahead. A few frames of a long video cost a
few GOPs, and many frames of one GOP cost that GOP once. `iter_frames` streams a whole
video one frame at a time.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import os
import threading
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Literal, NamedTuple

import av
import av.error
import numpy as np

from tasks.formats.atomic import atomic_file

NERSEMBLE_FPS = 73
"""NeRSemble's capture rate in frames per second."""

Codec = Literal["libx264", "mpeg4"]
DEFAULT_CODEC: Codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
"""H.264 where PyAV's bundled ffmpeg has libx264 (it does in the PyPI wheels), else MPEG-4."""

_INDEX_CACHE_SIZE = 64
"""Video indexes kept per process (a few hundred bytes per thousand frames each)."""


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


class DecodedFrame(NamedTuple):
    """One requested frame (`iter_decoded`, `nersemble.iter_read_frames`): image or reason."""

    frame: int
    """Frame number."""
    image: np.ndarray | None
    """(H, W, 3) uint8 RGB, or None when the frame did not decode."""
    error: str
    """Why it did not decode ('' when it did)."""


@dataclasses.dataclass(kw_only=True)
class DecodeCounters:
    """Work done by this module in this process, so tests and benchmarks can see it."""

    index_builds: int = 0
    """Whole-file demux passes made to build a `VideoIndex` (cache hits do not count)."""
    seeks: int = 0
    """Seeks to a keyframe while decoding requested frames."""
    frames_decoded: int = 0
    """Frames out of the decoder while decoding requested frames (wanted or passed over)."""


COUNTERS = DecodeCounters()
"""This process's counters; read them before and after a call and compare."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoIndex:
    """Where each frame of one video file is, found by demuxing without decoding.

    Built once per file (`index_video`) and reused by every read of that file, so reading
    frames never demuxes the whole file again.
    """

    path: Path
    """The video file."""
    pts: tuple[int, ...]
    """Sorted presentation timestamps; frame number i has pts[i]."""
    keyframes: tuple[int, ...]
    """Frame numbers of keyframes, ascending."""
    error: str | None
    """Why demuxing stopped early or the file looks incomplete, if it does."""
    header_frames: int
    """Frame count the container's header states (0 when it states none)."""
    signature: tuple[int, int, int]
    """(size, mtime in ns, inode) of the file when indexed: a changed file is indexed anew."""

    @property
    def num_frames(self) -> int:
        """Frames the demuxer found (fewer than the header says when truncated)."""
        return len(self.pts)

    def keyframe_before(self, frame: int) -> int:
        """The last keyframe at or before `frame` (0 when none is)."""
        k = bisect.bisect_right(self.keyframes, frame) - 1
        return self.keyframes[k] if k >= 0 else 0


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


def _signature(path: Path) -> tuple[int, int, int]:
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def build_index(path: str | os.PathLike) -> VideoIndex:
    """Demux the whole file (no decoding) into a `VideoIndex`; `index_video` caches this."""
    path = Path(path)
    signature = _signature(path)
    pts, key_pts, error = [], set(), None
    with _open(path) as container:
        COUNTERS.index_builds += 1
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
    keyframes = tuple(i for i, p in enumerate(pts) if p in key_pts)
    if error is None and len(pts) < header_frames:
        error = f"the header lists {header_frames} frames: the file looks truncated"
    elif error is None and not pts:
        error = "the file holds no video frames"
    return VideoIndex(
        path=path,
        pts=tuple(pts),
        keyframes=keyframes,
        error=error,
        header_frames=header_frames,
        signature=signature,
    )


_cache: collections.OrderedDict[Path, VideoIndex] = collections.OrderedDict()
_cache_lock = threading.Lock()


def index_video(path: str | os.PathLike) -> VideoIndex:
    """The file's `VideoIndex`, built on first use and reused while the file is unchanged.

    Keyed by the absolute path and checked against size, mtime and inode, so a rewritten
    or truncated file is indexed again. Raises like `build_index`.
    """
    path = Path(path)
    key, signature = path.absolute(), _signature(path)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached.signature == signature:
            _cache.move_to_end(key)
            return dataclasses.replace(cached, path=path)
    index = build_index(path)
    with _cache_lock:
        _cache[key] = index
        while len(_cache) > _INDEX_CACHE_SIZE:
            _cache.popitem(last=False)
    return index


def clear_index_cache() -> None:
    """Forget every cached `VideoIndex` (the next read of each file indexes it again)."""
    with _cache_lock:
        _cache.clear()


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames in the video, counted by demuxing (exact, no decoding).

    A truncated file counts only the packets still present.
    """
    return index_video(path).num_frames


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _decode_after_seek(
    container: av.container.InputContainer, stream: av.VideoStream, pts: int
) -> Iterator[av.VideoFrame]:
    COUNTERS.seeks += 1
    container.seek(pts, stream=stream, backward=True, any_frame=False)
    for packet in container.demux(stream):
        for frame in packet.decode():
            COUNTERS.frames_decoded += 1
            yield frame


def _decode_targets(path: Path, index: VideoIndex, targets: list[int]) -> Iterator[DecodedFrame]:
    """Decode sorted in-range frame numbers in one pass, seeking only past a keyframe ahead.

    Yields each target in order as soon as it is known, holding at most the frames that
    came out ahead of their turn (none for a well-formed file).
    """
    frame_of_pts = {p: i for i, p in enumerate(index.pts)}
    remaining = set(targets)
    ahead: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoder, pos, start = None, -1, 0
        for target in targets:
            remaining.discard(target)
            key, error = index.keyframe_before(target), ""
            if target not in ahead and (decoder is None or not key <= pos + 1 <= target):
                decoder, start = _decode_after_seek(container, stream, index.pts[key]), key
            try:
                while target not in ahead and decoder is not None:
                    frame = next(decoder, None)
                    if frame is None:
                        decoder = None
                        break
                    i = frame_of_pts.get(frame.pts, -1)
                    if i < start:  # leading frames of an open GOP, or unknown timestamps
                        continue
                    pos = i
                    if i == target or (i in remaining and i not in ahead):
                        ahead[i] = _rgb(frame)
                    if i >= target:
                        break
            except av.error.FFmpegError as e:
                error, decoder = f"decoding failed near frame {target}: {e}", None
            image = ahead.pop(target, None)
            if image is None and not error:
                error = index.error or "the decoder ended before it"
            yield DecodedFrame(target, image, error)


def iter_decoded(
    path: str | os.PathLike, indices: Iterable[int], *, index: VideoIndex | None = None
) -> Iterator[DecodedFrame]:
    """Each requested frame (repeats dropped) in increasing order, decoded in one pass.

    Streams: holds one decoded frame at a time, so a caller that shrinks or writes each
    frame as it comes never has the whole set in memory. A frame that does not decode
    (outside the file, truncated or corrupt data) comes with the reason. Raises
    FileNotFoundError for a missing file and VideoError for one that cannot be opened.
    `index` defaults to the cached `index_video(path)`.
    """
    path = Path(path)
    wanted = sorted({int(i) for i in indices})
    index = index_video(path) if index is None else index
    n = index.num_frames
    outside = f"outside the {n} frames in the file" + (f" ({index.error})" if index.error else "")
    for i in (i for i in wanted if i < 0):
        yield DecodedFrame(i, None, f"frame {i} is {outside}")
    targets = [i for i in wanted if 0 <= i < n]
    if targets:
        yield from _decode_targets(path, index, targets)
    for i in (i for i in wanted if i >= n):
        yield DecodedFrame(i, None, f"frame {i} is {outside}")


def decode_frames(
    path: str | os.PathLike, indices: Iterable[int], *, index: VideoIndex | None = None
) -> DecodeResult:
    """Decode the frames with the given numbers (any order, repeats allowed) in one pass.

    Frames that cannot be decoded (past the end, a truncated or corrupt file) are listed in
    `failed` with the reason. Raises FileNotFoundError for a missing file, and VideoError
    when the file cannot be opened or is broken (truncated, corrupt) such that not one
    requested frame decodes. Holds every decoded frame: for many full-size frames use
    `iter_decoded`.
    """
    path = Path(path)
    index = index_video(path) if index is None else index
    frames: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}
    for decoded in iter_decoded(path, indices, index=index):
        if decoded.image is None:
            failed[decoded.frame] = decoded.error
        else:
            frames[decoded.frame] = decoded.image
    n = index.num_frames
    broken = index.error is not None or any(0 <= i < n for i in failed)
    if failed and not frames and broken:
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
