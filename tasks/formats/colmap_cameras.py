"""COLMAP models and the calibrated cameras: intrinsics in COLMAP's pixel convention, and a
model moved into the calibrated world with the residuals of its camera centres.

COLMAP puts the centre of the top-left pixel at (0.5, 0.5), OpenCV (and `tasks.formats.cameras`) at
(0, 0): principal points move by half a pixel between the two.

pycolmap 4.2.1 imported before anything has loaded zlib (numpy, cv2, Python's zlib) breaks
deflate for the whole process: the next PNG write or zlib.compress aborts with "free():
invalid pointer". Modules that import pycolmap import zlib first.
"""

from __future__ import annotations

import zlib  # noqa: F401  zlib must load before pycolmap: see the module docstring
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
import pycolmap

from tasks.formats.cameras import SERIALS, Camera

CameraModel = Literal["PINHOLE", "OPENCV"]


def serial_of(image_name: str) -> str:
    """The serial in an image name `cam_{serial}.png` (as `tasks.frames` names the views)."""
    return image_name.removeprefix("cam_").rsplit(".", 1)[0]


def colmap_camera(camera: Camera, *, model: CameraModel, camera_id: int) -> pycolmap.Camera:
    """A pycolmap camera with the intrinsics of `camera` (OpenCV K -> COLMAP's pixel origin)."""
    K, distortion = camera.K, [0.0] * 4 if model == "OPENCV" else []
    params = [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, *distortion]
    size = {"width": camera.width, "height": camera.height}
    return pycolmap.Camera(
        camera_id=camera_id, model=model, params=params, has_prior_focal_length=True, **size
    )


def align_to_cameras(
    model: pycolmap.Reconstruction, cameras: Mapping[str, Camera]
) -> pycolmap.Sim3d | None:
    """Move `model` into the calibrated world (metres) and return that world_from_model, or
    None (model unchanged) when the registered centres are degenerate (e.g. nearly collinear).

    Least-squares similarities (Umeyama, pycolmap's `estimate_sim3d`): first between the
    registered camera centres, which fixes the scale; then between the centres together with
    one point per camera on its optical axis at the distance of the scene, so viewing
    directions count as well. Centres alone leave the model free to tilt about the head (on
    an arc of cameras a tilt moves the centres little): 0.5 degrees on the sample.
    """
    images = [model.image(i) for i in model.reg_image_ids()]
    targets = [cameras[serial_of(im.name)] for im in images]
    target = np.array([c.center for c in targets])
    world_from_model = pycolmap.estimate_sim3d(
        np.array([im.projection_center() for im in images]), target
    )
    if world_from_model is None:
        return None
    model.transform(world_from_model)
    d = scene_distance(cameras.values())
    centres = np.array([im.projection_center() for im in images])
    looks = centres + d * np.array([im.viewing_direction() for im in images])
    target_looks = target + d * np.array([c.world_2_cam[2, :3] for c in targets])
    refined = pycolmap.estimate_sim3d(
        np.vstack([centres, looks]), np.vstack([target, target_looks])
    )
    if refined is None:
        return world_from_model
    model.transform(refined)
    return refined * world_from_model


def scene_distance(cameras: Iterable[Camera]) -> float:
    """Median distance (metres) from the cameras to the point nearest all their optical axes
    (the head in a rig that looks at it)."""
    cameras = list(cameras)
    centres = np.array([c.center for c in cameras])
    axes = np.array([c.world_2_cam[2, :3] for c in cameras])
    across = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]  # (N, 3, 3) projectors
    point = np.linalg.lstsq(across.sum(0), np.einsum("nij,nj->i", across, centres), rcond=None)[0]
    return float(np.median(np.linalg.norm(centres - point, axis=1)))


def camera_residuals_mm(
    model: pycolmap.Reconstruction, cameras: Mapping[str, Camera]
) -> dict[str, float]:
    """Serial -> |model centre - calibrated centre| in mm, registered views in `SERIALS` order."""
    centres = {
        serial_of(model.image(i).name): model.image(i).projection_center()
        for i in model.reg_image_ids()
    }
    return {
        s: 1000.0 * float(np.linalg.norm(centres[s] - cameras[s].center))
        for s in SERIALS
        if s in centres
    }
