"""The sample head's MediaPipe landmark embedding, measured by running MediaPipe on renders.

FLAME ships a MediaPipe embedding (a triangle and barycentric coordinates per landmark) for
its own mesh; the sample head has none, so it is measured: render the neutral textured
template from a few directions, detect the 478 landmarks, cast each one's pixel ray onto the
mesh, take the per-coordinate median of the hits over the views where the ray is not grazing,
and snap that to the nearest surface point. Landmarks no ray hits are left out.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import trimesh

from flame_tracking.loading import load_landmark_embedding, save_landmark_embedding
from flame_tracking.model import FlameModel, FlameModelError
from flame_tracking.sample_model import template_keypoints
from tasks.face_landmarker import NUM_LANDMARKS, FaceLandmarkerConfig, FaceLandmarkerRunner
from tasks.formats.cameras import Camera
from tasks.pictures.render import Scene
from tasks.sample.appearance import bake_texture
from tasks.sample.scene import FOCAL_LENGTH_PX, look_at, pose_frame, record, shade_view

EMBEDDING_FILE = "sample_head_mediapipe_embedding.npz"
"""File name of the cached embedding in a sample data root, in FLAME's npz format."""
VIEWS: tuple[tuple[float, float], ...] = ((0, 0), (15, 0), (-15, 0), (0, 10), (0, -10))
"""(yaw, pitch) in degrees of the measuring cameras around the head (frontal first)."""
MIN_COSINE = 0.35
"""Views where |cos| between the ray and the surface normal is below this are grazing and
used only when a landmark has no other view."""
TEXTURE_SEED = 0
"""Texture noise seed of the measuring renders, so the embedding depends on the model only."""


def embedding_camera(*, yaw: float, pitch: float, target: np.ndarray) -> Camera:
    """A 550 x 802 camera 1 m from `target` (3,), like the default rig's (scale 4), seeing
    the head from `yaw` (towards +x) and `pitch` (from above) degrees."""
    yaw_r, pitch_r = np.radians(yaw), np.radians(pitch)
    direction = np.array(
        [np.sin(yaw_r) * np.cos(pitch_r), np.sin(pitch_r), np.cos(yaw_r) * np.cos(pitch_r)]
    )
    f = FOCAL_LENGTH_PX / 4
    K = np.array([[f, 0, 274.5], [0, f, 400.5], [0, 0, 1]])
    world_2_cam = look_at(center=target + direction, target=target)
    return Camera(serial="embedding", K=K, world_2_cam=world_2_cam, width=550, height=802)


def _ray_hits(
    scene: Scene, camera: Camera, pixels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First mesh point (N, 3), |cos| to the triangle normal (N,) and hit flag (N,) of the
    rays through `pixels` (N, 2) (pixel centres on integers)."""
    homogeneous = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1)
    dirs = np.linalg.solve(camera.K, homogeneous.T).T @ camera.world_2_cam[:3, :3]
    origin = camera.center
    tri = scene.first_hits(origin=origin, directions=dirs)
    hit = tri >= 0
    corners = scene.vertices[scene.faces[np.where(hit, tri, 0)]]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    t = np.einsum("nc,nc->n", normal, corners[:, 0] - origin) / np.einsum("nc,nc->n", normal, dirs)
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    cosine = np.abs(np.einsum("nc,nc->n", normal, unit))
    return origin + t[:, None] * dirs, cosine, hit


def _detect_hits(
    *, model: FlameModel, texture: np.ndarray, views: tuple[tuple[float, float], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Per view and landmark: mesh point (K, 478, 3) (NaN where undetected or missed) and
    |cos| of the ray to the surface (K, 478)."""
    frame = pose_frame(model=model, vertices=model.v_template)
    keypoints = template_keypoints(model)
    target = np.array([0.0, keypoints["nose_tip"][1], 0.0])
    points = np.full((len(views), NUM_LANDMARKS, 3), np.nan)
    cosines = np.zeros((len(views), NUM_LANDMARKS))
    with FaceLandmarkerRunner(config=FaceLandmarkerConfig()) as runner:
        for k, (yaw, pitch) in enumerate(views):
            camera = embedding_camera(yaw=yaw, pitch=pitch, target=target)
            rgb, mask = shade_view(
                frame=frame, model=model, texture=texture, camera=camera, exposure=0.8
            )
            linear = np.where(mask[..., None], rgb, 0.2)
            image = record(
                linear,
                cast=np.eye(3),
            )
            signals = runner.detect(image=image)
            if not signals.detected:
                continue
            hit_points, cosine, hit = _ray_hits(frame.scene, camera, signals.landmarks[:, :2])
            points[k, hit], cosines[k, hit] = hit_points[hit], cosine[hit]
    return points, cosines


def compute_landmark_embedding(
    *,
    model: FlameModel,
    texture: np.ndarray,
    views: tuple[tuple[float, float], ...] = VIEWS,
    min_cosine: float = MIN_COSINE,
) -> dict[str, np.ndarray]:
    """The model's MediaPipe embedding as `FlameModel.with_landmarks` keyword arguments:
    `lmk_face_idx` (L,), `lmk_b_coords` (L, 3), `lmk_mediapipe_idx` (L,), for the L landmarks
    that hit the neutral template in at least one view.

    Args:
        model: the head model; its template is rendered with `texture` (linear RGB, its UVs).
        views: (yaw, pitch) degrees of the measuring cameras.
        min_cosine: views more grazing than this count only when no other view sees the point.
    """
    points, cosines = _detect_hits(model=model, texture=texture, views=views)
    seen = np.isfinite(points[..., 0])
    if not seen.any():
        raise RuntimeError("MediaPipe found no face in any render of the sample head")
    good = seen & (cosines >= min_cosine)
    use = np.where(good.any(axis=0), good, seen)
    with np.errstate(invalid="ignore"):
        median = np.nanmedian(np.where(use[..., None], points, np.nan), axis=0)
    found = np.flatnonzero(seen.any(axis=0))
    mesh = trimesh.Trimesh(vertices=model.v_template, faces=model.f, process=False)
    closest, _, triangle = trimesh.proximity.closest_point(mesh, median[found])
    barycentric = trimesh.triangles.points_to_barycentric(mesh.triangles[triangle], closest)
    return {
        "lmk_face_idx": np.asarray(triangle, dtype=np.int64),
        "lmk_b_coords": np.asarray(barycentric, dtype=np.float64),
        "lmk_mediapipe_idx": found.astype(np.int64),
    }


def cached_landmark_embedding(
    *, root: str | os.PathLike, model: FlameModel, texture_size: int = 1024
) -> dict[str, np.ndarray]:
    """The embedding from `{root}/sample_head_mediapipe_embedding.npz`; measured (texture
    seed `TEXTURE_SEED`) and written atomically first when the file is missing, unreadable
    or names triangles the model lacks."""
    path = Path(root) / EMBEDDING_FILE
    if path.is_file():
        try:
            embedding = load_landmark_embedding(path)
            if embedding["lmk_face_idx"].max() < len(model.f):
                return embedding
        except FlameModelError:
            pass
    texture = bake_texture(model=model, size=texture_size, seed=TEXTURE_SEED)
    embedding = compute_landmark_embedding(model=model, texture=texture)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_landmark_embedding(path, **embedding)
    return embedding
