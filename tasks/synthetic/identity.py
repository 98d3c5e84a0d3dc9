"""One synthetic identity: head shape, skin, hair, eyes, drawn from a seed, and its texture.

The sample head model's 30 identity components give the shape. Skin tones span the
Fitzpatrick range (types I to VI, linear RGB albedos of typical skin, drawn continuously
between them); the face keeps the sample photo's features (`tasks.sample.appearance`: brows,
lids, lips) recoloured to the drawn tone, over the sample's skin noise plus this identity's
own detail (blotches, freckles). Hair colour runs from black through brown to blond, with some
red and grey heads; the style moves the sample's hairline (`tasks.sample.hair`) and scales the
shell's thickness, or leaves the head bald. Irises are painted on the eyeballs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import numpy as np
import trimesh
from skimage.transform import ThinPlateSplineTransform

from flame_tracking.model import FlameModel
from flame_tracking.sample_model import EYE, EYE_RADIUS, build_sample_model, template_keypoints
from tasks.formats.color import srgb_to_linear
from tasks.sample import appearance
from tasks.sample.hair import SINK, TONE, Hair, HairStyle, build_hair, hair_style
from tasks.sample.scene import stream

HairStyleName = Literal["bald", "buzz", "short", "receding", "fringe", "bob"]
HAIR_STYLES: tuple[HairStyleName, ...] = ("bald", "buzz", "short", "receding", "fringe", "bob")
"""The hair styles an identity may wear."""

FITZPATRICK_SRGB = (
    (244, 214, 194),
    (229, 186, 158),
    (204, 156, 120),
    (166, 116, 80),
    (118, 78, 52),
    (70, 46, 33),
)
"""Typical skin colour (sRGB) of Fitzpatrick types I to VI, lightest first."""

HAIR_SRGB = {
    "black": (28, 24, 22),
    "dark brown": (52, 38, 30),
    "brown": (92, 64, 44),
    "light brown": (134, 98, 66),
    "dark blond": (170, 132, 86),
    "blond": (214, 182, 128),
    "red": (150, 68, 36),
    "grey": (160, 158, 154),
}
"""Hair albedo (sRGB) of each named colour; black to blond is drawn continuously."""
_HAIR_RAMP = ("black", "dark brown", "brown", "light brown", "dark blond", "blond")

EYE_SRGB = {
    "dark brown": (60, 36, 20),
    "brown": (110, 66, 32),
    "hazel": (130, 110, 50),
    "green": (80, 120, 70),
    "blue": (80, 120, 170),
    "grey": (130, 140, 150),
}
"""Iris albedo (sRGB) of each eye colour."""

_STYLE_HAIRLINE = {
    "buzz": (0.0,) * 8,
    "short": (0.0,) * 8,
    "receding": (0.03, 0.03, 0.012, 0.0, 0.0, 0.0, 0.0, 0.0),
    "fringe": (-0.032, -0.026, -0.01, 0.0, 0.0, 0.0, 0.0, 0.0),
    "bob": (0.0, 0.0, -0.015, -0.035, -0.05, -0.04, -0.04, -0.045),
}
"""Metres each style moves the sample hairline at its eight azimuths (front to back)."""
_STYLE_VOLUME = {
    "buzz": (0.2, 0.3),
    "short": (0.7, 1.0),
    "receding": (0.5, 0.9),
    "fringe": (0.9, 1.3),
    "bob": (1.2, 1.6),
}
"""Range of the factor on the sample shell's thickness for each style."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Identity:
    """What one synthetic person looks like; everything drawn from `seed`."""

    name: str
    """Subject id in the shards (e.g. syn00012)."""
    seed: int
    """The dataset seed it was drawn with (its streams are keyed by `name`)."""
    held_out: bool
    """True for identities the split holds out of training."""
    shape: np.ndarray
    """(S,) identity coefficients of the head model."""
    skin_tone: float
    """0 (Fitzpatrick I) to 1 (type VI), continuous."""
    fitzpatrick: int
    """Nearest Fitzpatrick type, 1 to 6."""
    skin_albedo: np.ndarray
    """(3,) linear RGB skin albedo."""
    skin_detail: float
    """Strength of this identity's blotches on top of the sample skin noise (0 to 1)."""
    freckles: float
    """How many freckles (0 to 1)."""
    hair: HairStyleName
    """Hair style."""
    hair_color: str
    """Nearest named hair colour (`HAIR_SRGB`)."""
    hair_albedo: np.ndarray
    """(3,) linear RGB hair albedo."""
    hair_volume: float
    """Factor on the sample hair shell's thickness."""
    eye_color: str
    """Iris colour name (`EYE_SRGB`)."""
    specular: float
    """Skin sheen (Blinn-Phong strength)."""


def _linear(srgb: tuple[int, int, int]) -> np.ndarray:
    return srgb_to_linear(np.asarray(srgb, dtype=np.float64) / 255.0)


def _ramp(colours: list[np.ndarray], t: float) -> np.ndarray:
    """Piecewise linear blend (in linear RGB) along `colours` at t in [0, 1]."""
    x = t * (len(colours) - 1)
    i = min(int(x), len(colours) - 2)
    return colours[i] + (x - i) * (colours[i + 1] - colours[i])


def draw_identity(*, name: str, seed: int, held_out: bool, num_shape: int) -> Identity:
    """The identity `name` of the dataset drawn with `seed` (independent of every other)."""
    rng = stream(seed, "synthetic", name, "identity")
    tone = float(rng.uniform(0.0, 1.0))
    skin = _ramp([_linear(c) for c in FITZPATRICK_SRGB], tone)
    skin = skin * np.exp(rng.normal(0.0, [0.04, 0.03, 0.06]))  # redder or more olive
    kind = rng.uniform()
    if kind < 0.08:
        hair_color, hair = "grey", _linear(HAIR_SRGB["grey"]) * rng.uniform(0.6, 1.3)
    elif kind < 0.15:
        hair_color, hair = "red", _linear(HAIR_SRGB["red"]) * rng.uniform(0.6, 1.3)
    else:
        darkness = float(rng.uniform() ** 1.5)  # more dark heads than fair ones
        hair = _ramp([_linear(HAIR_SRGB[c]) for c in _HAIR_RAMP], darkness)
        hair_color = _HAIR_RAMP[round(darkness * (len(_HAIR_RAMP) - 1))]
    style = HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))]
    volume = float(rng.uniform(*_STYLE_VOLUME.get(style, (0.0, 0.0))))
    eyes = tuple(EYE_SRGB)
    darker = tone > 0.5  # darker skin: mostly brown eyes, as in people
    eye_p = np.array([0.45, 0.35, 0.1, 0.04, 0.04, 0.02] if darker else [0.15, 0.2] + [0.15] * 4)
    return Identity(
        name=name,
        seed=seed,
        held_out=held_out,
        shape=rng.normal(0.0, 1.0, num_shape) * rng.uniform(0.6, 1.4),
        skin_tone=tone,
        fitzpatrick=1 + round(tone * 5),
        skin_albedo=np.clip(skin, 0.0, 1.0),
        skin_detail=float(rng.uniform(0.0, 1.0)),
        freckles=float(rng.uniform(0.0, 1.0) ** 3),
        hair=style,
        hair_color=hair_color,
        hair_albedo=np.clip(hair, 0.0, 1.0),
        hair_volume=volume,
        eye_color=eyes[int(rng.choice(len(eyes), p=eye_p / eye_p.sum()))],
        specular=float(rng.uniform(0.0, 0.25)),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TintedHairStyle(HairStyle):
    """The sample's hair style worn in another colour."""

    tone: tuple[float, float, float]
    """Linear RGB albedo replacing the sample's dark brown `TONE`."""

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) linear RGB hair albedo at (N, 3) template points, in `tone`."""
        return super().albedo(points) * (np.asarray(self.tone) / np.asarray(TONE))


def identity_hair(*, model: FlameModel, identity: Identity) -> tuple[TintedHairStyle, Hair | None]:
    """The identity's hair style (its hairline also paints the scalp) and shell (None: bald)."""
    base = hair_style(model=model, seed=_style_seed(identity))
    moves = _STYLE_HAIRLINE.get(identity.hair, (0.2,) * 8)  # bald: hairline above the crown
    profile = tuple((az, y + dy) for (az, y), dy in zip(base.profile, moves, strict=True))
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(HairStyle)}
    style = TintedHairStyle(
        **{**fields, "profile": profile}, tone=tuple(float(c) for c in identity.hair_albedo)
    )
    if identity.hair == "bald":
        return style, None
    hair = build_hair(model=model, style=style)
    height = identity.hair_volume * (hair.height + SINK) - SINK
    hair = dataclasses.replace(hair, height=height)
    normals = trimesh.Trimesh(model.v_template, model.f, process=False).vertex_normals
    rest = hair.pose(vertices=model.v_template, vertex_normals=np.asarray(normals))
    return style, dataclasses.replace(hair, rest=rest)


def _style_seed(identity: Identity) -> int:
    return int(stream(identity.seed, "synthetic", identity.name, "hair").integers(2**31))


@functools.cache
def head_model() -> FlameModel:
    """The sample head model every synthetic identity is made of (built once a process)."""
    return build_sample_model()


@functools.cache
def _texel_setup(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per texture size (the same for every identity): texel positions (N, 3), the photo's
    colour at each (N, 3), how much of the photo each shows (N,), the photo's skin tone (3,)."""
    model = head_model()
    texels = appearance.texel_geometry(model=model, size=size)
    position = texels.position.reshape(-1, 3)
    keypoints = template_keypoints(model)
    names = sorted(appearance.PHOTO_KEYPOINTS.keys() & keypoints.keys())
    tps = ThinPlateSplineTransform.from_estimate(
        np.array([keypoints[n][:2] for n in names]),
        np.array([appearance.PHOTO_KEYPOINTS[n] for n in names]),
    )
    photo = appearance._photo_linear()
    photo_xy = tps(position[:, :2])
    weight = appearance._photo_weight(texels, photo_xy, photo.shape[:2])
    return position, appearance._sample_photo(photo, photo_xy), weight, appearance._skin_tone(photo)


def bake_identity_texture(*, identity: Identity, style: HairStyle, size: int) -> np.ndarray:
    """(size, size, 3) linear RGB albedo: `tasks.sample.appearance.bake_texture`'s recipe
    in this identity's skin tone, detail, hair colour (`style`) and iris colour."""
    position, photo, weight, photo_tone = _texel_setup(size)
    rng = stream(identity.seed, "synthetic", identity.name, "skin")
    skin = appearance._skin(position, identity.skin_albedo, rng)
    blotches = identity.skin_detail * 0.12 * appearance._value_noise(position, cell=0.006, rng=rng)
    spots = np.clip(appearance._value_noise(position, cell=0.0025, rng=rng) - 1.2, 0.0, None)
    skin = skin * (1 + blotches - 0.35 * identity.freckles * spots)[:, None]
    painted = appearance._smoothstep(style.above_hairline(position), -0.002, 0.002)[:, None]
    base = skin + painted * (style.albedo(position) - skin)
    face = photo * (identity.skin_albedo / photo_tone)
    albedo = base + weight[:, None] * (face - base)
    albedo = _paint_irises(albedo, position, _linear(EYE_SRGB[identity.eye_color]), rng)
    return np.clip(albedo, 0.0, 1.0).reshape(size, size, 3)


def _paint_irises(
    albedo: np.ndarray, position: np.ndarray, iris: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Sclera, iris (6 mm radius, streaked, darker rim) and pupil on the texels whose point
    is the front of an eyeball (the eyes look along +z at rest)."""
    out = albedo.copy()
    for sign in (1.0, -1.0):
        offset = position - EYE * np.array([sign, 1.0, 1.0])
        on_ball = np.abs(np.linalg.norm(offset, axis=1) - EYE_RADIUS) < 4e-4
        radius = np.linalg.norm(offset[:, :2], axis=1)
        front = on_ball & (offset[:, 2] > 0)
        streaks = np.ones(len(position))
        streaks[front] += 0.25 * appearance._value_noise(position[front], cell=0.0006, rng=rng)
        out[front] = (
            _linear((220, 212, 205)) * (1 - 0.3 * (radius[front] / EYE_RADIUS) ** 4)[:, None]
        )
        iris_at = front & (radius < 0.006)
        rim = appearance._smoothstep(radius[iris_at], 0.0045, 0.006)
        out[iris_at] = iris * (streaks[iris_at] * (1 - 0.6 * rim))[:, None]
        out[front & (radius < 0.0022)] = 0.01
    return out
