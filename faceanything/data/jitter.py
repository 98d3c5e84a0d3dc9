"""Co-jitter (paper B.1): one random colour change applied alike to every image of a sample.

Written in torch (no torchvision); the operations follow torchvision's ColorJitter and
RandomGrayscale definitions: brightness scales, contrast blends with the mean grey level,
saturation blends with the grey image, hue rotates the HSV hue; the four come in a random
order, each factor drawn uniformly from [1 - s, 1 + s] (hue: [-h, h]).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

_GREY = (0.299, 0.587, 0.114)
"""ITU-R 601 luma weights (torchvision's rgb_to_grayscale)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class JitterConfig:
    """Photometric augmentation of B.1."""

    brightness: float = 0.5
    """Brightness factor range 1 +- this."""
    contrast: float = 0.5
    """Contrast factor range 1 +- this."""
    saturation: float = 0.5
    """Saturation factor range 1 +- this."""
    hue: float = 0.1
    """Hue shift range +- this (fraction of a turn)."""
    probability: float = 0.9
    """Chance that a sample is colour-jittered at all."""
    grayscale: float = 0.05
    """Chance that a sample is made grey (B.1 enables it without a figure; VGGT's 0.05)."""


def grey(images: Tensor) -> Tensor:
    """[..., 3, H, W] RGB -> [..., 1, H, W] luma."""
    weights = torch.tensor(_GREY, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * weights).sum(dim=-3, keepdim=True)


def rgb_to_hsv(images: Tensor) -> Tensor:
    """[..., 3, H, W] RGB in [0, 1] -> HSV, hue in [0, 1)."""
    r, g, b = images.unbind(-3)
    value, _ = images.max(dim=-3)
    low, _ = images.min(dim=-3)
    span = value - low
    saturation = torch.where(value > 0, span / value.clamp(min=1e-12), 0.0)
    safe = span.clamp(min=1e-12)
    hue = torch.where(
        value == r,
        ((g - b) / safe) % 6,
        torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4),
    )
    hue = torch.where(span > 0, hue / 6, 0.0)
    return torch.stack([hue, saturation, value], dim=-3)


def hsv_to_rgb(images: Tensor) -> Tensor:
    """Inverse of `rgb_to_hsv`."""
    hue, saturation, value = images.unbind(-3)
    k = [(n + hue * 6) % 6 for n in (5.0, 3.0, 1.0)]
    channels = [value - value * saturation * (torch.minimum(x, 4 - x).clamp(0, 1)) for x in k]
    return torch.stack(channels, dim=-3)


def adjust(images: Tensor, kind: str, factor: float) -> Tensor:
    """One colour operation on [..., 3, H, W] images in [0, 1]."""
    if kind == "brightness":
        out = images * factor
    elif kind == "contrast":
        mean = grey(images).mean(dim=(-3, -2, -1), keepdim=True)
        out = (images - mean) * factor + mean
    elif kind == "saturation":
        luma = grey(images)
        out = (images - luma) * factor + luma
    elif kind == "hue":
        hsv = rgb_to_hsv(images)
        hsv = torch.cat([((hsv[..., :1, :, :] + factor) % 1.0), hsv[..., 1:, :, :]], dim=-3)
        out = hsv_to_rgb(hsv)
    else:
        raise ValueError(f"unknown colour operation {kind}")
    return out.clamp(0.0, 1.0)


def co_jitter(images: Tensor, config: JitterConfig, generator: torch.Generator) -> Tensor:
    """The same random jitter (and grey conversion) on every image of a sample [S, 3, H, W].

    Contrast uses each image's own mean grey level, as torchvision does per image.
    """

    def uniform(low: float, high: float) -> float:
        return float(low + (high - low) * torch.rand((), generator=generator))

    if uniform(0, 1) < config.probability:
        ranges = {
            "brightness": (1 - config.brightness, 1 + config.brightness),
            "contrast": (1 - config.contrast, 1 + config.contrast),
            "saturation": (1 - config.saturation, 1 + config.saturation),
            "hue": (-config.hue, config.hue),
        }
        order = torch.randperm(4, generator=generator).tolist()
        factors = {kind: uniform(*span) for kind, span in ranges.items()}
        for i in order:
            kind = list(ranges)[i]
            images = adjust(images, kind, factors[kind])
    if uniform(0, 1) < config.grayscale:
        images = grey(images).expand_as(images).contiguous()
    return images
