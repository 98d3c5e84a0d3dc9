"""How one synthetic identity is filmed: motion, cameras, lights, backgrounds, one view's pixels.

World frame = FLAME axes (metres, y up, the head facing +z), cameras in OpenCV convention
(`tasks.formats.cameras`), like the sample subject (`tasks.sample.scene`), whose rig, motion
curves, posing, albedo and camera recording are reused. What changes per identity is drawn
from its own seeded streams: head pose offset and expression strength, camera distance
(0.4 to 2 m) and framing (focal length), lights (1 to 3 directional, coloured, plus ambient),
exposure, white balance, sensor noise, and per view a background (a photo that scikit-image
ships, a procedural pattern, or the sample's studio wall).
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation
from skimage import data

from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.model import FlameModel
from flame_tracking.sample_model import template_keypoints
from tasks.formats.cameras import SERIALS, Camera
from tasks.formats.color import srgb_to_linear
from tasks.pictures.render import Fragments, light
from tasks.sample.hair import Hair
from tasks.sample.scene import (
    RIG,
    PosedFrame,
    background,
    look_at,
    pose_frame,
    sequence_params,
    stream,
    surface_albedo,
)
from tasks.synthetic.identity import Identity

PHOTOS = (
    "coffee",
    "chelsea",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "camera",
    "coins",
    "clock",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
)
"""`skimage.data` images (shipped with the package, no download) used as backgrounds."""
HEAD_EXTENT = 0.32
"""Metres from the chin's underside to the top of the hair: what `fill` frames."""
DISTANCE = (0.4, 2.0)
"""Camera distance range (m) from the head, drawn log-uniformly per identity."""
FILL = (0.45, 0.9)
"""Fraction of the image height the head spans, drawn per identity (the focal length)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lighting:
    """World-fixed lights of one identity's shoot (every view and timestep share them)."""

    directions: np.ndarray
    """(L, 3) unit directions towards each light, world."""
    colors: np.ndarray
    """(L, 3) linear RGB intensity of each light."""
    ambient: np.ndarray
    """(3,) linear RGB ambient light."""
    exposure: float
    """Multiplier of the lit colour before recording."""


def _rng(identity: Identity, *keys: int | str) -> np.random.Generator:
    return stream(identity.seed, "synthetic", identity.name, *keys)


def draw_motion(*, model: FlameModel, identity: Identity, timesteps: int) -> dict[str, np.ndarray]:
    """FLAME parameters (name -> (T, k)): the sample's head-turn curves about a drawn head
    pose (yaw +-25, pitch +-15, roll +-8 degrees), its expression curves at a drawn strength,
    and the identity's shape."""
    seed = int(_rng(identity, "motion").integers(2**31))
    turns = sequence_params(model=model, sequence="head", frames=timesteps, seed=seed)
    faces = sequence_params(model=model, sequence="faces", frames=timesteps, seed=seed)
    rng = _rng(identity, "pose")
    base = Rotation.from_euler("YXZ", np.radians(rng.uniform(-1, 1, 3) * (25.0, 15.0, 8.0)))
    strength = rng.uniform(0.2, 1.0)
    return {
        **turns,
        "rotation": (base * Rotation.from_rotvec(turns["rotation"])).as_rotvec(),
        "expr": strength * faces["expr"] + (1 - strength) * turns["expr"],
        "jaw_pose": strength * faces["jaw_pose"] + (1 - strength) * turns["jaw_pose"],
        "shape": np.tile(identity.shape, (timesteps, 1)),
    }


def posed_frames(
    *, model: FlameModel, params: dict[str, np.ndarray], hair: Hair | None
) -> list[PosedFrame]:
    """The posed head (FLAME in float64) wearing `hair`, one per timestep of `params`."""
    layer = FlameLayer(model, torch.float64)
    with torch.no_grad():
        tensors = {k: torch.as_tensor(v) for k, v in params.items()}
        vertices = layer(FlameParams(**tensors)).vertices.numpy()
    return [pose_frame(model=model, vertices=v, hair=hair) for v in vertices]


def draw_cameras(
    *, model: FlameModel, identity: Identity, views: int, width: int, height: int
) -> dict[str, Camera]:
    """`views` cameras of the 16-camera rig (the frontal one always, the others drawn), each
    moved by a few degrees, at the identity's distance and framing with per-view jitter
    (distance and focal +-10%, aim +-2 cm, roll +-4 degrees, principal point +-4%)."""
    rng = _rng(identity, "cameras")
    distance = float(np.exp(rng.uniform(*np.log(DISTANCE))))
    fill = rng.uniform(*FILL)
    frontal = SERIALS.index("222200037")
    others = [i for i in rng.permutation(len(SERIALS)) if i != frontal]
    chosen = sorted([frontal, *others[: views - 1]])
    target = np.array([0.0, template_keypoints(model)["nose_tip"][1] + 0.01, 0.0])
    cameras = {}
    for i in chosen:
        yaw, elevation = np.radians(np.asarray(RIG[i]) + rng.uniform(-5.0, 5.0, 2))
        direction = np.array(
            [np.sin(yaw) * np.cos(elevation), np.sin(elevation), np.cos(yaw) * np.cos(elevation)]
        )
        d = distance * rng.uniform(0.9, 1.1)
        focal = fill * rng.uniform(0.9, 1.1) * height * d / HEAD_EXTENT
        cx, cy = (np.array([width, height]) - 1) / 2 + rng.uniform(-0.04, 0.04, 2) * width
        world_2_cam = look_at(
            center=target + d * direction,
            target=target + rng.uniform(-0.02, 0.02, 3),
            roll=np.radians(rng.uniform(-4.0, 4.0)),
        )
        K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
        cameras[SERIALS[i]] = Camera(
            serial=SERIALS[i], K=K, world_2_cam=world_2_cam, width=width, height=height
        )
    return cameras


def draw_lighting(identity: Identity) -> Lighting:
    """A key light from the front half (any side, above or below), 0 to 2 fills from anywhere,
    colours between warm and cool white (now and then tinted), a coloured ambient."""
    rng = _rng(identity, "lights")
    count = 1 + int(rng.integers(3))
    directions = rng.normal(size=(count, 3))
    directions[0, 2] = abs(directions[0, 2]) + 0.5  # the key light faces the face
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    warmth = rng.uniform(-1.0, 1.0, count)[:, None]
    colors = 1 + warmth * np.array([0.25, 0.0, -0.25]) + rng.normal(0, 0.04, (count, 3))
    tinted = rng.uniform(size=count) < 0.15
    colors[tinted] *= rng.uniform(0.4, 1.0, (int(tinted.sum()), 3))
    intensity = np.concatenate([[rng.uniform(0.5, 1.1)], rng.uniform(0.1, 0.5, count - 1)])
    ambient = rng.uniform(0.05, 0.35) * (1 + rng.normal(0, 0.06, 3))
    return Lighting(
        directions=directions,
        colors=np.clip(colors, 0.0, None) * intensity[:, None],
        ambient=np.clip(ambient, 0.0, None),
        exposure=float(rng.uniform(0.7, 1.2)),
    )


def render_linear(
    *,
    fragments: Fragments,
    normals: np.ndarray,
    frame: PosedFrame,
    model: FlameModel,
    texture: np.ndarray,
    camera: Camera,
    lighting: Lighting,
    specular: float,
) -> np.ndarray:
    """(H, W, 3) linear RGB of the head and hair that `fragments` (of `frame.scene` by
    `camera`) see, with (H, W, 3) world `normals` (the truth's), lit by `lighting`; NaN off
    them. Each coloured light is `tasks.pictures.render.light` with its one direction; the
    skin shines with `specular`, the hair a third of that."""
    mask = fragments.mask
    albedo = surface_albedo(fragments=fragments, frame=frame, model=model, texture=texture)
    shine = np.where(fragments.triangle >= len(model.f), specular / 3, specular)
    rgb = np.where(mask[..., None], albedo * lighting.ambient, np.nan)
    for direction, color in zip(lighting.directions, lighting.colors, strict=True):
        lit = light(
            mask=mask,
            albedo=albedo,
            normals=normals,
            camera=camera,
            lights=((tuple(direction), 1.0),),
            ambient=0.0,
            specular=shine,
        )
        rgb += lit * color
    return lighting.exposure * rgb


@functools.cache
def _photo(name: str) -> np.ndarray:
    """(H, W, 3) float32 linear RGB of a `skimage.data` image (grey ones repeated)."""
    image = np.asarray(getattr(data, name)(), dtype=np.float64)[..., :3] / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return srgb_to_linear(image).astype(np.float32)


def draw_background(*, rng: np.random.Generator, camera: Camera) -> np.ndarray:
    """(H, W, 3) float32 linear RGB behind the head: half the time a crop of a photo (zoomed,
    flipped, tinted, dimmed or blurred), else a procedural gradient with blotches and at
    times stripes, or the sample's studio wall."""
    width, height = camera.width, camera.height
    kind = rng.uniform()
    if kind < 0.5:
        image = _photo_crop(rng, PHOTOS[int(rng.integers(len(PHOTOS)))], width, height)
    elif kind < 0.85:
        image = _pattern(rng, width, height)
    else:
        image = background(camera)
    image = image * rng.uniform(0.3, 1.2) * np.exp(rng.normal(0, 0.15, 3))
    sigma = rng.uniform(0.0, 3.0) if rng.uniform() < 0.5 else 0.0
    if sigma > 0.3:
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _photo_crop(rng: np.random.Generator, name: str, width: int, height: int) -> np.ndarray:
    photo = _photo(name)
    ph, pw = photo.shape[:2]
    crop_h = ph / rng.uniform(1.0, 2.5)
    crop_w = crop_h * width / height
    if crop_w > pw:
        crop_w, crop_h = pw, pw * height / width
    y0, x0 = rng.uniform(0, ph - crop_h), rng.uniform(0, pw - crop_w)
    crop = photo[int(y0) : int(y0 + crop_h), int(x0) : int(x0 + crop_w)]
    image = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    return image[:, ::-1] if rng.uniform() < 0.5 else image


def _pattern(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A gradient between two colours, multiplied by smooth colour blotches, maybe stripes."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    angle = rng.uniform(0, 2 * np.pi)
    t = x * np.cos(angle) + y * np.sin(angle)
    t = (t - t.min()) / max(np.ptp(t), 1e-9)
    low, high = rng.uniform(0.0, 0.8, (2, 3)) ** 2
    image = low + t[..., None] * (high - low)
    blotches = rng.normal(0.0, 1.0, (int(rng.integers(3, 12)),) * 2 + (3,)).astype(np.float32)
    image *= np.exp(0.4 * cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC))
    if rng.uniform() < 0.35:
        turn = rng.uniform(0, np.pi)
        phase = (x * np.cos(turn) + y * np.sin(turn)) * rng.uniform(3, 20)
        image *= (0.55 + 0.45 * (np.sin(2 * np.pi * phase) > 0))[..., None]
    return image


def white_balance(identity: Identity) -> np.ndarray:
    """(3, 3) linear-RGB colour cast of the identity's camera (gains +-10%, small crosstalk)."""
    rng = _rng(identity, "white balance")
    return np.diag(np.exp(rng.normal(0, 0.1, 3))) + rng.uniform(-0.03, 0.03, (3, 3))
