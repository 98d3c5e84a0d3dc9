"""The sample subject's world: camera rig, motion, studio background, colour casts, rendering.

World frame = FLAME axes (metres, y up, the head at the origin facing +z). Cameras follow
`tasks.formats.cameras` (OpenCV axes, pixel centres on integers). Everything is drawn from seeded
`np.random.default_rng` streams, so a view of a frame renders the same pixels every time,
alone or inside a full generation.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from flame_tracking.model import FlameModel
from tasks.formats.cameras import FULL_SIZE, SERIALS, Camera, downsample, pixel_rays, project
from tasks.formats.color import linear_to_srgb
from tasks.pictures.render import (
    Fragments,
    Scene,
    interpolate,
    light,
    rasterize,
    sample_texture,
)
from tasks.sample.hair import Hair, nearest_deformation

RIG: tuple[tuple[float, float], ...] = (
    *((-60.0, 0.0), (-58.0, 15.0), (-45.0, 0.0), (-40.0, 15.0), (-30.0, 0.0), (-20.0, 15.0)),
    *((-15.0, 0.0), (0.0, 15.0), (0.0, 0.0), (15.0, 0.0), (20.0, 15.0), (30.0, 0.0)),
    *((40.0, 15.0), (45.0, 0.0), (58.0, 15.0), (60.0, 0.0)),
)
"""(yaw, elevation) in degrees of each camera in `SERIALS` order, seen from the head: a level
row of 9 from -60 to 60 degrees and a row of 7 above it. Positive yaw is towards +x (the
subject's left); index 8, the frontal camera 222200037, looks straight at the face."""

FOCAL_LENGTH_PX = 7500.0
"""Focal length at NeRSemble's full 2200 x 3208 resolution: a head about 1 m away fills
most of the portrait frame."""

PARAMETER_NAMES = ("shape", "expr", "rotation", "translation", "neck_pose", "jaw_pose", "eyes_pose")
"""FLAME parameters of a frame, as `FlameParams` names them."""


def stream(seed: int, *keys: int | str) -> np.random.Generator:
    """An independent random stream for one purpose (`keys`), stable when others are added."""
    ints = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng([seed, *ints])


def look_at(*, center: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """(4, 4) world_2_cam (OpenCV axes) of a camera at `center` looking at `target`, world y
    up, rolled by `roll` radians about its optical axis."""
    forward = (target - center) / np.linalg.norm(target - center)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    rotation = np.stack([c * right + s * down, -s * right + c * down, forward])
    world_2_cam = np.eye(4)
    world_2_cam[:3, :3] = rotation
    world_2_cam[:3, 3] = -rotation @ center
    return world_2_cam


def build_rig(
    *, target: np.ndarray, scale: int, distance: float, seed: int, principal_jitter: float = 15.0
) -> dict[str, Camera]:
    """The 16 cameras at 1/`scale` of NeRSemble's full resolution, `distance` metres from
    `target` (3,), with small seeded jitter: distance +-3 cm, aim +-1 cm, roll +-1 degree,
    principal point +-`principal_jitter` px at full resolution."""
    rng = stream(seed, "rig")
    width, height = FULL_SIZE
    cameras = {}
    for serial, (yaw, elevation) in zip(SERIALS, RIG, strict=True):
        yaw_r, el_r = np.radians(yaw), np.radians(elevation)
        direction = np.array(
            [np.sin(yaw_r) * np.cos(el_r), np.sin(el_r), np.cos(yaw_r) * np.cos(el_r)]
        )
        center = target + (distance + rng.uniform(-0.03, 0.03)) * direction
        aim = target + rng.uniform(-0.01, 0.01, 3)
        roll = np.radians(rng.uniform(-1.0, 1.0))
        offset = rng.uniform(-1.0, 1.0, 2) * principal_jitter
        cx, cy = (width - 1) / 2 + offset[0], (height - 1) / 2 + offset[1]
        K = np.array([[FOCAL_LENGTH_PX, 0, cx], [0, FOCAL_LENGTH_PX, cy], [0, 0, 1]])
        full = Camera(
            serial=serial,
            K=K,
            world_2_cam=look_at(center=center, target=aim, roll=roll),
            width=width,
            height=height,
        )
        cameras[serial] = downsample(full, scale)
    return cameras


def color_casts(*, seed: int, strength: float = 0.05) -> dict[str, np.ndarray]:
    """Serial -> (3, 3) near-identity cast in linear RGB (entries within +-`strength`):
    the camera records cast @ rgb; `color_calibration.json` stores its inverse."""
    rng = stream(seed, "color")
    return {s: np.eye(3) + rng.uniform(-strength, strength, (3, 3)) for s in SERIALS}


def _waves(rng: np.random.Generator, frames: int, limits: np.ndarray) -> np.ndarray:
    """(frames, C) smooth random curves: per channel a sum of three sinusoids of 0.3 to 1.5
    cycles over the sequence, peaking at 60-100% of `limits` (C,)."""
    t = np.linspace(0.0, 1.0, frames)[:, None, None]
    channels = len(limits)
    freq = rng.uniform(0.3, 1.5, (1, channels, 3))
    phase = rng.uniform(0, 2 * np.pi, (1, channels, 3))
    weight = rng.uniform(0.3, 1.0, (1, channels, 3))
    curves = (weight * np.sin(2 * np.pi * freq * t + phase)).sum(-1)
    peak = np.maximum(np.abs(curves).max(0), 1e-9)
    return curves / peak * limits * rng.uniform(0.6, 1.0, channels)


def sequence_params(
    *, model: FlameModel, sequence: str, frames: int, seed: int
) -> dict[str, np.ndarray]:
    """FLAME parameters (name -> (frames, k)) of one sequence. A name containing 'head' gets
    head turns (yaw +-30, pitch +-15, roll +-8 degrees), neck motion, a small translation, mild
    expressions and eye gaze; any other strong expressions, the jaw opening up to 0.3 rad and
    a little head motion. The identity comes from `seed` alone, the same in every sequence."""
    rng = stream(seed, "motion", sequence)
    head = "head" in sequence
    turn = np.radians((30.0, 15.0, 8.0) if head else (8.0, 6.0, 4.0))
    euler = _waves(rng, frames, turn)  # yaw, pitch, roll
    rotation = Rotation.from_euler("YXZ", euler).as_rotvec()
    neck = _waves(rng, frames, np.radians((5.0, 5.0, 3.0) if head else (2.0, 2.0, 1.0)))
    translation = _waves(rng, frames, np.array((0.01, 0.008, 0.01)) * (1.0 if head else 0.5))
    expr_limit = np.where(np.arange(model.num_expr) < 16, 0.6 if head else 2.5, 0.3)
    expr = _waves(rng, frames, expr_limit)
    opening = _waves(rng, frames, np.array([0.15]))[:, 0]  # +x rotation opens the mouth
    jaw = np.zeros((frames, 3))
    jaw[:, 0] = (0.03 + 0.2 * opening) if head else (0.15 + opening)  # 0-0.06 or 0-0.3 rad
    gaze = _waves(rng, frames, np.radians((10.0, 15.0)))  # pitch, yaw of both eyes
    eyes = np.zeros((frames, 6))
    eyes[:, [0, 3]], eyes[:, [1, 4]] = gaze[:, :1], gaze[:, 1:]
    shape = stream(seed, "identity").standard_normal(model.num_shape)
    return {
        "shape": np.tile(shape, (frames, 1)),
        "expr": expr,
        "rotation": rotation,
        "translation": translation,
        "neck_pose": neck,
        "jaw_pose": jaw,
        "eyes_pose": eyes,
    }


def background(camera: Camera) -> np.ndarray:
    """(H, W, 3) linear RGB of the studio behind the head, from each pixel's ray direction
    only (so every frame and the BACKGROUND plate agree): a wall brighter towards the top
    with a slow warm-to-cool sweep around the rig."""
    _, dirs = pixel_rays(camera)
    d = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    up = np.clip(0.5 + 0.9 * d[:, 1], 0.0, 1.0)[:, None]
    sweep = (0.5 + 0.5 * np.sin(np.arctan2(d[:, 0], -d[:, 2]) * 1.5))[:, None]
    low, high = np.array([0.05, 0.05, 0.06]), np.array([0.42, 0.44, 0.47])
    tint = 1 + 0.12 * (sweep - 0.5) * np.array([1.0, 0.0, -1.0])
    return ((low + up * (high - low)) * tint).reshape(camera.height, camera.width, 3)


def record(
    linear: np.ndarray,
    *,
    cast: np.ndarray,
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """What a camera stores of a (H, W, 3) linear RGB image: its colour cast, sRGB encoding,
    Gaussian sensor noise of `noise_sigma` (in [0, 1] sRGB units, drawn from `rng`), uint8."""
    srgb = linear_to_srgb(np.einsum("hwc,dc->hwd", linear, cast))  # einsum: no BLAS threads
    if noise_sigma > 0:
        srgb = srgb + rng.normal(0.0, noise_sigma, srgb.shape)
    return np.rint(np.clip(srgb, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PosedFrame:
    """One frame's posed head (and hair), shared by every camera."""

    scene: Scene
    """The embree scene: the model's faces, then the hair shell's (if any)."""
    vertices: np.ndarray
    """(V, 3) posed head vertices, world metres."""
    vertex_normals: np.ndarray
    """(V, 3) unit area-weighted vertex normals of the posed head."""
    hair: Hair | None = None
    """The hair shell the frame wears (None: a bare head)."""
    hair_vertices: np.ndarray | None = None
    """(N, 3) posed hair shell vertices, world metres."""
    hair_normals: np.ndarray | None = None
    """(N, 3) unit vertex normals of the posed shell."""
    _cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def hair_canonical(self, model: FlameModel) -> np.ndarray:
        """(N, 3) canonical position of each shell vertex: the vertex minus the deformation
        (posed - template) of its nearest point on the posed head (see `tasks.sample.hair`)."""
        if "hair_canonical" not in self._cache:
            moved = nearest_deformation(
                points=self.hair_vertices,
                vertices=self.vertices,
                faces=model.f,
                deformation=self.vertices - model.v_template,
            )
            self._cache["hair_canonical"] = self.hair_vertices - moved
        return self._cache["hair_canonical"]


def pose_frame(*, model: FlameModel, vertices: np.ndarray, hair: Hair | None = None) -> PosedFrame:
    """The scene and vertex normals of `model`'s faces at (V, 3) `vertices`, wearing `hair`."""
    normals = np.asarray(trimesh.Trimesh(vertices, model.f, process=False).vertex_normals)
    if hair is None:
        scene = Scene(vertices=vertices, faces=model.f)
        return PosedFrame(scene=scene, vertices=vertices, vertex_normals=normals)
    shell = hair.pose(vertices=vertices, vertex_normals=normals)
    scene = Scene(
        vertices=np.concatenate([vertices, shell]),
        faces=np.concatenate([model.f, hair.faces + len(vertices)]),
    )
    return PosedFrame(
        scene=scene,
        vertices=vertices,
        vertex_normals=normals,
        hair=hair,
        hair_vertices=shell,
        hair_normals=np.asarray(trimesh.Trimesh(shell, hair.faces, process=False).vertex_normals),
    )


def _all_normals(frame: PosedFrame) -> np.ndarray:
    """(V + N, 3) vertex normals of the head, then of the hair shell."""
    if frame.hair is None:
        return frame.vertex_normals
    return np.concatenate([frame.vertex_normals, frame.hair_normals])


def _hair_pixels(fragments: Fragments, num_head_faces: int) -> np.ndarray:
    """(H, W) bool: pixels that see the hair shell."""
    return fragments.triangle >= num_head_faces


def shade_view(
    *, frame: PosedFrame, model: FlameModel, texture: np.ndarray, camera: Camera, exposure: float
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) linear RGB of the textured head and its hair (NaN off them), and the (H, W)
    mask."""
    fragments = rasterize(scene=frame.scene, camera=camera)
    mask = fragments.mask
    rgb = light(
        mask=mask,
        albedo=surface_albedo(fragments=fragments, frame=frame, model=model, texture=texture),
        normals=_normals(fragments, _all_normals(frame)),
        camera=camera,
    )
    return exposure * rgb, mask


def surface_albedo(
    *, fragments: Fragments, frame: PosedFrame, model: FlameModel, texture: np.ndarray
) -> np.ndarray:
    """(H, W, 3) linear RGB albedo of what `fragments` (of `frame.scene`) see: `texture` on
    the head, the hair style's colour on the shell, NaN off them."""
    mask = fragments.mask
    hair = _hair_pixels(fragments, len(model.f))
    head = mask & ~hair
    albedo = np.full((*mask.shape, 3), np.nan)
    uv = np.einsum(
        "nk,nkc->nc", fragments.barycentric[head], model.vt[model.ft[fragments.triangle[head]]]
    )
    albedo[head] = sample_texture(texture=texture, uv=uv)
    if hair.any():
        albedo[hair] = frame.hair.style.albedo(_shell_blend(fragments, hair, frame))
    return albedo


def _shell_blend(fragments: Fragments, where: np.ndarray, frame: PosedFrame) -> np.ndarray:
    """(M, 3) barycentric blend of the shell's rest (template) vertices at the (H, W) `where`
    pixels, all on the hair shell (whose vertices follow the head's in the scene)."""
    corners = fragments.faces[fragments.triangle[where]] - len(frame.vertices)
    return np.einsum("nk,nkc->nc", fragments.barycentric[where], frame.hair.rest[corners])


def _normals(fragments: Fragments, vertex_normals: np.ndarray) -> np.ndarray:
    normals = interpolate(fragments=fragments, attribute=vertex_normals)
    return normals / np.linalg.norm(normals, axis=-1, keepdims=True)


def ground_truth_maps(
    *,
    frame: PosedFrame,
    model: FlameModel,
    camera: Camera,
    face_triangles: np.ndarray,
    fragments: Fragments | None = None,
) -> dict[str, np.ndarray]:
    """A view's truth: `depth` (H, W) camera z in metres (NaN off the head), `canonical`
    (H, W, 3) the template point of each pixel's surface point (on the hair: see
    `PosedFrame.hair_canonical`), `normal` (H, W, 3) unit world normal, `mask` (H, W) 1 on
    triangles of the face region (`face_triangles` (F,) bool), `hair` (H, W) 1 on the hair.
    `fragments`: the view already rasterized (of `frame.scene` by `camera`), to reuse."""
    if fragments is None:
        fragments = rasterize(scene=frame.scene, camera=camera)
    hit = fragments.mask
    hair = _hair_pixels(fragments, len(model.f))
    face = np.zeros(hit.shape, dtype=np.float32)
    face[hit & ~hair] = face_triangles[fragments.triangle[hit & ~hair]]
    canonical = model.v_template
    if frame.hair is not None:
        canonical = np.concatenate([canonical, frame.hair_canonical(model)])
    return {
        "depth": fragments.depth,
        "canonical": interpolate(fragments=fragments, attribute=canonical),
        "normal": _normals(fragments, _all_normals(frame)),
        "mask": face,
        "hair": hair.astype(np.float32),
    }


def landmark_points(*, model: FlameModel, vertices: np.ndarray) -> np.ndarray:
    """(L, 3) world positions of the model's embedded MediaPipe landmarks."""
    corners = vertices[model.f[model.lmk_face_idx]]
    return np.einsum("lk,lkc->lc", model.lmk_b_coords, corners)


def project_landmarks(
    *, points: np.ndarray, camera: Camera, depth: np.ndarray, tolerance: float = 0.002
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels (L, 2), depths (L,) and visibility (L,) of landmark `points` (L, 3) in
    `camera`: visible when inside the image and within `tolerance` metres of the rendered
    `depth` (H, W) at the nearest pixel."""
    xy, z = project(points, camera)
    col, row = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
    inside = (col >= 0) & (col < camera.width) & (row >= 0) & (row < camera.height) & (z > 0)
    surface = np.full(len(points), np.nan)
    surface[inside] = depth[row[inside], col[inside]]
    with np.errstate(invalid="ignore"):
        visible = inside & (np.abs(surface - z) < tolerance)
    return xy, z, visible
