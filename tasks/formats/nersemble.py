"""NeRSemble v2 on disk: paths, calibration, and frames of either layout behind one interface.

Two frame layouts, detected per sequence:

- "video" (official download kit): `sequences/{SEQ}/images/cam_{serial}.mp4`, full resolution.
- "images" (extracted frames): `sequences/{SEQ}/timesteps/frame_{t:05d}/images-{f}x/
  cam_{serial}.jpg` (or .png), already shrunk by the factor f.

Calibration is `calibration/camera_params.json` (world_2_cam per serial; one K, or one per
serial as the benchmark kit stores it; optional `image_size` [width, height], else
`FULL_SIZE`) and `calibration/color_calibration.json` (serial -> (3, terms) matrix).
Decoding lives in `tasks.formats.video`, colour in `tasks.formats.color`, camera conventions
in `tasks.formats.cameras`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np

from tasks.formats import video
from tasks.formats.atomic import write_json
from tasks.formats.cameras import FULL_SIZE, SERIALS, Camera
from tasks.formats.cameras import downsample as downsample_camera
from tasks.formats.color import apply_color_correction, validate_color_matrix
from tasks.formats.names import plain_name, validate_subject_id

Layout = Literal["video", "images"]

_SEQUENCE_RE = re.compile(r"[A-Za-z0-9_+-]+")
_FRAME_DIR_RE = re.compile(r"frame_(\d+)")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_RIGID_TOL = 1e-4
"""Allowed deviation of R Rᵀ from I and of det(R) from 1 in a stored pose."""


class DataError(ValueError):
    """A NeRSemble file whose content is wrong; the message names the file."""


# ---------------------------------------------------------------- names and paths


def _validate_serial(serial: str) -> str:
    if serial not in SERIALS:
        raise ValueError(f"unknown camera serial {serial!r}; NeRSemble's are {SERIALS}")
    return serial


def subject_dir(*, root: str | os.PathLike, subject: str) -> Path:
    """`{root}/{id:03d}`: numeric ids are zero-padded to three digits as the kit stores them."""
    return Path(root) / validate_subject_id(subject)


def camera_params_path(subject_dir: Path) -> Path:
    """The subject's camera calibration file."""
    return Path(subject_dir) / "calibration" / "camera_params.json"


def color_calibration_path(subject_dir: Path) -> Path:
    """The subject's colour calibration file (optional)."""
    return Path(subject_dir) / "calibration" / "color_calibration.json"


def _sequence_dir(subject_dir: Path, sequence: str) -> Path:
    name = plain_name(sequence, pattern=_SEQUENCE_RE, what="sequence name", allowed="'_+-'")
    return Path(subject_dir) / "sequences" / name


def video_path(subject_dir: Path, *, sequence: str, serial: str) -> Path:
    """Where the kit keeps one camera's video of one sequence."""
    name = f"cam_{_validate_serial(serial)}.mp4"
    return _sequence_dir(subject_dir, sequence) / "images" / name


def background_path(subject_dir: Path, *, serial: str) -> Path:
    """One camera's background plate (the scene without the subject)."""
    name = f"image_{_validate_serial(serial)}.jpg"
    return _sequence_dir(subject_dir, "BACKGROUND") / name


def list_sequences(subject_dir: Path, *, skip: Iterable[str] = ("BACKGROUND",)) -> list[str]:
    """Sorted sequence folders with plain names, without those in `skip`."""
    folder = Path(subject_dir) / "sequences"
    if not folder.is_dir():
        raise FileNotFoundError(f"no sequences folder: {folder}")
    skip = set(skip)
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_dir() and _SEQUENCE_RE.fullmatch(p.name) and p.name not in skip
    )


def frame_image_files(
    subject_dir: Path, *, sequence: str, serials: Iterable[str], frame: int | None = None
) -> list[Path]:
    """Extracted-frames layout: the stored images of `serials` for `frame` (every frame when
    None), at any stored factor; what a build of those frames read."""
    root = _sequence_dir(subject_dir, sequence) / "timesteps"
    pattern = "frame_*" if frame is None else f"frame_{frame:05d}"
    names = {f"cam_{s}{suffix}" for s in serials for suffix in _IMAGE_SUFFIXES}
    return sorted(p for p in root.glob(f"{pattern}/images-*x/cam_*") if p.name in names)


def sequence_layout(subject_dir: Path, *, sequence: str) -> Layout:
    """ "video" when the sequence has `images/` (mp4s), "images" when it has `timesteps/`."""
    folder = _sequence_dir(subject_dir, sequence)
    if (folder / "images").is_dir():
        return "video"
    if (folder / "timesteps").is_dir():
        return "images"
    raise FileNotFoundError(f"no videos (images/) or frame folders (timesteps/) in {folder}")


# ---------------------------------------------------------------- calibration


def _load_json(path: Path, what: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON: {e}") from e


def _matrix(value: object, *, shape: tuple[int, int], path: Path, what: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {what} is not a numeric matrix") from e
    if m.shape != shape or not np.all(np.isfinite(m)):
        raise DataError(f"{path}: {what} must be a finite {shape} matrix, got shape {m.shape}")
    return m


def _camera_arrays(
    world_2_cam: object, K: object, *, path: Path, serial: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both matrices as float64, or DataError unless the pose is rigid and K a pinhole."""
    T = _matrix(world_2_cam, shape=(4, 4), path=path, what=f"world_2_cam of {serial}")
    R, det = T[:3, :3], float(np.linalg.det(T[:3, :3]))
    rigid = np.allclose(R @ R.T, np.eye(3), atol=_RIGID_TOL) and abs(det - 1) < _RIGID_TOL
    if not rigid or not np.allclose(T[3], [0, 0, 0, 1], atol=1e-9):
        raise DataError(
            f"{path}: world_2_cam of camera {serial} is not a rigid invertible transform "
            f"(needs R Rᵀ = I, det R = 1 (got {det:.6g}), bottom row 0 0 0 1)"
        )
    K = _matrix(K, shape=(3, 3), path=path, what=f"intrinsics of {serial}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise DataError(
            f"{path}: intrinsics of camera {serial} need positive focal lengths "
            f"and a last row 0 0 1, got {K.tolist()}"
        )
    return T, K


def _check_serials(keys: Iterable[str], *, path: Path, what: str, complete: bool) -> None:
    keys = set(keys)
    missing = [s for s in SERIALS if s not in keys] if complete else []
    unknown = sorted(keys - set(SERIALS))
    if missing or unknown:
        raise DataError(f"{path}: {what}: missing serials {missing}, unknown serials {unknown}")


def _image_size(value: object, *, path: Path) -> tuple[int, int]:
    ok = isinstance(value, list | tuple) and len(value) == 2
    if not ok or not all(isinstance(v, int) and v > 0 for v in value):
        raise DataError(f"{path}: image_size must be [width, height] in pixels, got {value!r}")
    return int(value[0]), int(value[1])


def read_cameras(subject_dir: Path) -> dict[str, Camera]:
    """The 16 full-resolution cameras in `SERIALS` order, checked (rigid poses, sane K)."""
    path = camera_params_path(subject_dir)
    params = _load_json(path, "camera calibration")
    if not isinstance(params, dict) or not {"world_2_cam", "intrinsics"} <= params.keys():
        raise DataError(f"{path}: needs the keys 'world_2_cam' and 'intrinsics'")
    poses, intrinsics = params["world_2_cam"], params["intrinsics"]
    if not isinstance(poses, dict):
        raise DataError(f"{path}: world_2_cam must map serial -> 4x4 matrix")
    _check_serials(poses, path=path, what="world_2_cam", complete=True)
    per_serial = isinstance(intrinsics, dict)
    if per_serial:
        _check_serials(intrinsics, path=path, what="intrinsics", complete=True)
    width, height = _image_size(params.get("image_size", list(FULL_SIZE)), path=path)
    cameras = {}
    for serial in SERIALS:
        K_value = intrinsics[serial] if per_serial else intrinsics
        T, K = _camera_arrays(poses[serial], K_value, path=path, serial=serial)
        cameras[serial] = Camera(serial=serial, K=K, world_2_cam=T, width=width, height=height)
    return cameras


def write_cameras(subject_dir: Path, cameras: Mapping[str, Camera]) -> Path:
    """Write `camera_params.json` for all 16 cameras (same image size) and return its path.

    One shared K when every camera's K is equal (the kit's format), else K per serial.
    Checked like `read_cameras`, so nothing invalid is written; the write is atomic.
    """
    path = camera_params_path(subject_dir)
    _check_serials(cameras, path=path, what="cameras", complete=True)
    sizes = {(c.width, c.height) for c in cameras.values()}
    if len(sizes) != 1:
        raise ValueError(f"{path}: cameras must share one image size, got {sorted(sizes)}")
    for serial, camera in cameras.items():
        _camera_arrays(camera.world_2_cam, camera.K, path=path, serial=serial)
    ordered = [cameras[s] for s in SERIALS]
    shared = all(np.array_equal(c.K, ordered[0].K) for c in ordered)
    intrinsics = ordered[0].K.tolist() if shared else {c.serial: c.K.tolist() for c in ordered}
    ((width, height),) = sizes
    data = {
        "world_2_cam": {c.serial: np.asarray(c.world_2_cam).tolist() for c in ordered},
        "intrinsics": intrinsics,
        "image_size": [width, height],
    }
    write_json(path, data)
    return path


def read_color_calibration(subject_dir: Path) -> dict[str, np.ndarray] | None:
    """Serial -> (3, terms) colour correction matrix, or None when the subject has no file."""
    path = color_calibration_path(subject_dir)
    if not path.exists():
        return None
    data = _load_json(path, "colour calibration")
    if not isinstance(data, dict):
        raise DataError(f"{path}: must map serial -> (3, terms) matrix")
    _check_serials(data, path=path, what="colour calibration", complete=False)
    matrices = {}
    for serial in (s for s in SERIALS if s in data):
        try:
            matrices[serial] = validate_color_matrix(np.asarray(data[serial], dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: matrix of camera {serial}: {e}") from e
    return matrices


def write_color_calibration(subject_dir: Path, matrices: Mapping[str, np.ndarray]) -> Path:
    """Write `color_calibration.json` (serial -> (3, terms) matrix) atomically; return its path."""
    path = color_calibration_path(subject_dir)
    _check_serials(matrices, path=path, what="colour calibration", complete=False)
    data = {s: validate_color_matrix(matrices[s]).tolist() for s in SERIALS if s in matrices}
    write_json(path, data)
    return path


# ---------------------------------------------------------------- frames


@dataclasses.dataclass(frozen=True, kw_only=True)
class Subject:
    """A subject's folder with its calibration loaded once."""

    directory: Path
    """The subject folder, `{root}/{id:03d}`."""
    cameras: dict[str, Camera]
    """Serial -> full-resolution camera, in `SERIALS` order."""
    color_calibration: dict[str, np.ndarray] | None
    """Serial -> (3, terms) colour correction matrix; None when the subject has none."""

    def camera(self, serial: str, *, downsample: int = 1) -> Camera:
        """The camera for images shrunk by `downsample`."""
        return downsample_camera(self.cameras[_validate_serial(serial)], downsample)


def load_subject(subject_dir: Path) -> Subject:
    """Read a subject's camera and colour calibration."""
    subject_dir = Path(subject_dir)
    return Subject(
        directory=subject_dir,
        cameras=read_cameras(subject_dir),
        color_calibration=read_color_calibration(subject_dir),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Frames:
    """Frames of one camera in one sequence, as `read_frames` returns them."""

    sequence: str
    """Sequence name, e.g. 'EXP-1-head'."""
    serial: str
    """Camera serial."""
    camera: Camera
    """The camera of the returned images (intrinsics rescaled by the downsample factor)."""
    images: dict[int, np.ndarray]
    """Frame number -> (H, W, 3) uint8 RGB image, for the frames that could be read."""
    failed: dict[int, str]
    """Frame number -> why it could not be read (missing file, truncated video, ...)."""
    color_corrected: bool
    """Whether the images went through the subject's colour calibration."""


def downsample_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Shrink (H, W, C) by an integer factor with box averaging (matches `cameras.downsample`)."""
    h, w = image.shape[:2]
    if factor == 1:
        return image
    if h % factor or w % factor:
        raise ValueError(f"image {w}x{h} is not divisible by downsample factor {factor}")
    return cv2.resize(image, (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def _frame_dirs(subject_dir: Path, sequence: str) -> dict[int, Path]:
    folder = _sequence_dir(subject_dir, sequence) / "timesteps"
    matches = ((_FRAME_DIR_RE.fullmatch(p.name), p) for p in folder.iterdir() if p.is_dir())
    return {int(m.group(1)): p for m, p in matches if m}


def _find_image(frame_dir: Path, *, serial: str, factor: int) -> tuple[Path, int]:
    """The stored image to shrink to `factor`: the largest stored factor dividing it."""
    for stored in sorted((f for f in range(1, factor + 1) if factor % f == 0), reverse=True):
        for suffix in _IMAGE_SUFFIXES:
            path = frame_dir / f"images-{stored}x" / f"cam_{serial}{suffix}"
            if path.is_file():
                return path, stored
    raise FileNotFoundError(
        f"no image of camera {serial} in {frame_dir}/images-<f>x/ for a factor f dividing {factor}"
    )


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_background(subject_dir: Path, *, serial: str) -> np.ndarray:
    """One camera's full-resolution background plate, (H, W, 3) uint8 RGB."""
    path = background_path(subject_dir, serial=serial)
    if not path.is_file():
        raise FileNotFoundError(f"background image not found: {path}")
    return _read_image(path)


def _color_matrix(subject: Subject, serial: str, color_correct: bool) -> np.ndarray | None:
    if not color_correct or subject.color_calibration is None:
        return None
    if serial not in subject.color_calibration:
        path = color_calibration_path(subject.directory)
        raise DataError(f"{path}: no colour correction matrix for camera {serial}")
    return subject.color_calibration[serial]


class _Stored(NamedTuple):
    """A frame as stored, before shrinking and colour."""

    image: np.ndarray
    """(H, W, 3) uint8 RGB at the stored resolution."""
    camera: Camera
    """The camera of the stored resolution."""
    factor: int
    """Downsample factor still to apply."""
    source: Path
    """The file it came from."""


def _finish(stored: _Stored, ccm: np.ndarray | None) -> np.ndarray:
    """Check the stored size, shrink by the remaining factor, then colour-correct.

    Shrinking first is the kit's order, and 16x cheaper at factor 4.
    """
    (h, w), camera = stored.image.shape[:2], stored.camera
    if (w, h) != (camera.width, camera.height):
        raise DataError(
            f"{stored.source}: image is {w}x{h}, the calibration expects "
            f"{camera.width}x{camera.height}"
        )
    image = downsample_image(stored.image, stored.factor)
    return image if ccm is None else apply_color_correction(image, ccm)


def _folder_image(subject: Subject, frame_dir: Path, *, serial: str, factor: int) -> _Stored:
    path, stored_factor = _find_image(frame_dir, serial=serial, factor=factor)
    camera = subject.camera(serial, downsample=stored_factor)
    return _Stored(_read_image(path), camera, factor // stored_factor, path)


def frame_indices(subject: Subject, *, sequence: str, serial: str) -> list[int]:
    """The frame numbers one camera has in a sequence (a video: 0 .. n-1)."""
    if sequence_layout(subject.directory, sequence=sequence) == "video":
        path = video_path(subject.directory, sequence=sequence, serial=serial)
        return list(range(video.count_frames(path)))
    pattern = f"images-*x/cam_{_validate_serial(serial)}.*"
    dirs = _frame_dirs(subject.directory, sequence)
    return sorted(t for t, d in dirs.items() if any(d.glob(pattern)))


def _iter_folder_images(
    subject: Subject, *, sequence: str, serial: str, frames: Iterable[int], factor: int
) -> Iterator[tuple[int, _Stored | None, str]]:
    """(frame, stored image or None, why not) per frame of the images layout, in order."""
    dirs = _frame_dirs(subject.directory, sequence)
    for t in sorted(set(frames)):
        try:
            if t not in dirs:
                raise FileNotFoundError(f"no folder frame_{t:05d} in sequence {sequence}")
            stored, error = _folder_image(subject, dirs[t], serial=serial, factor=factor), ""
        except (FileNotFoundError, DataError) as e:
            stored, error = None, str(e)
        yield t, stored, error


def _read_stored(
    subject: Subject, *, sequence: str, serial: str, frames: Iterable[int], factor: int
) -> tuple[dict[int, _Stored], dict[int, str]]:
    """Stored frames by number, and why the others failed, from either layout."""
    if sequence_layout(subject.directory, sequence=sequence) == "video":
        path = video_path(subject.directory, sequence=sequence, serial=serial)
        result, camera = video.decode_frames(path, frames), subject.camera(serial)
        stored = {t: _Stored(im, camera, factor, path) for t, im in result.frames.items()}
        return stored, dict(result.failed)
    read = list(
        _iter_folder_images(subject, sequence=sequence, serial=serial, frames=frames, factor=factor)
    )
    return {t: s for t, s, _ in read if s is not None}, {t: e for t, s, e in read if s is None}


def iter_read_frames(
    subject: Subject,
    *,
    sequence: str,
    serial: str,
    frames: Iterable[int],
    downsample: int = 1,
    color_correct: bool = True,
) -> Iterator[video.DecodedFrame]:
    """`read_frames` one frame at a time, in increasing frame order: for many frames.

    A video is decoded in one pass and only one full-size frame is held at a time, so
    50 selected timesteps of a 2200x3208 video never sit in memory together. Each yielded
    image is shrunk and colour-corrected as in `read_frames` (camera:
    `subject.camera(serial, downsample=...)`); a frame that cannot be read comes with the
    reason instead. A missing video raises FileNotFoundError, one that cannot be opened
    `video.VideoError` (both on the first `next`), a wrong image size DataError.
    """
    subject.camera(serial, downsample=downsample)  # checks the factor early
    ccm = _color_matrix(subject, serial, color_correct)
    if sequence_layout(subject.directory, sequence=sequence) == "images":
        stored = _iter_folder_images(
            subject, sequence=sequence, serial=serial, frames=frames, factor=downsample
        )
    else:
        path = video_path(subject.directory, sequence=sequence, serial=serial)
        camera = subject.camera(serial)
        stored = (
            (t, None if im is None else _Stored(im, camera, downsample, path), error)
            for t, im, error in video.iter_decoded(path, frames)
        )
    for t, image, error in stored:
        yield video.DecodedFrame(t, None if image is None else _finish(image, ccm), error)


def read_frames(
    subject: Subject,
    *,
    sequence: str,
    serial: str,
    frames: Iterable[int],
    downsample: int = 1,
    color_correct: bool = True,
) -> Frames:
    """Chosen frames of one camera, shrunk by `downsample` and colour-corrected.

    Works on both layouts. Frames that cannot be read (missing or undecodable image,
    truncated video) are listed in `failed`; a missing video raises FileNotFoundError, an
    unreadable one `video.VideoError`, an image size that disagrees with the calibration
    DataError. Without a colour calibration file the images come back uncorrected and
    `color_corrected` says so.
    """
    camera = subject.camera(serial, downsample=downsample)
    ccm = _color_matrix(subject, serial, color_correct)
    stored, failed = _read_stored(
        subject, sequence=sequence, serial=serial, frames=frames, factor=downsample
    )
    return Frames(
        sequence=sequence,
        serial=serial,
        camera=camera,
        images={t: _finish(s, ccm) for t, s in sorted(stored.items())},
        failed=failed,
        color_corrected=ccm is not None,
    )


def iter_frames(
    subject: Subject,
    *,
    sequence: str,
    serial: str,
    stride: int = 1,
    downsample: int = 1,
    color_correct: bool = True,
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream (frame number, (H, W, 3) uint8 RGB) for every `stride`-th frame, one at a time.

    Images match `read_frames` (same shrinking and colour; camera
    `subject.camera(serial, downsample=...)`). In the images layout `stride` steps
    over the frame folders present. A frame that cannot be read raises.
    """
    if stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    camera = subject.camera(serial)
    subject.camera(serial, downsample=downsample)  # checks the factor early
    ccm = _color_matrix(subject, serial, color_correct)
    if sequence_layout(subject.directory, sequence=sequence) == "video":
        path = video_path(subject.directory, sequence=sequence, serial=serial)
        for t, image in video.iter_frames(path, stride=stride):
            yield t, _finish(_Stored(image, camera, downsample, path), ccm)
        return
    dirs = _frame_dirs(subject.directory, sequence)
    for t in frame_indices(subject, sequence=sequence, serial=serial)[::stride]:
        yield (
            t,
            _finish(_folder_image(subject, dirs[t], serial=serial, factor=downsample), ccm),
        )
