"""Running the network over a sequence of frames, in windows that share an anchor frame.

Inference (`faceanything.predict`) and evaluation (`faceanything.evaluate`) both run the
network this way, so it lives with the network, below both. Frames are processed jointly in
windows of `window` frames; with `anchor`, every window after the first also holds frame 0, so
all windows share frame 0's camera as the world frame and its depth scale.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from faceanything.geometry import PATCH
from faceanything.model.network import FaceAnything

_KEPT = ("depth", "depth_conf", "canonical", "canonical_conf", "intrinsics", "extrinsics")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Prediction:
    """The network's outputs for T frames at the input's h x w."""

    depth: np.ndarray
    """(T, h, w) float32 z-depth in the normalised scale of frame 0's window."""
    depth_conf: np.ndarray
    """(T, h, w) float32 depth confidence (1 + exp, higher is surer)."""
    canonical: np.ndarray
    """(T, h, w, 3) float32 canonical coordinates (FLAME metres minus the canonical centre)."""
    canonical_conf: np.ndarray
    """(T, h, w) float32 canonical confidence."""
    intrinsics: np.ndarray
    """(T, 3, 3) float64 K for h x w pixels (OpenCV)."""
    world_2_cam: np.ndarray
    """(T, 4, 4) float64 world-to-camera (OpenCV); world = frame 0's camera."""


def network_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(w, h): the long side near `resolution`, aspect kept, sides multiples of 14 (>= 28)."""
    scale = resolution / max(width, height)
    return tuple(max(2 * PATCH, round(side * scale / PATCH) * PATCH) for side in (width, height))


@torch.no_grad()
def predict_frames(
    net: FaceAnything,
    images: np.ndarray,
    *,
    window: int = 16,
    anchor: bool = True,
    device: str | torch.device = "cpu",
    cameras: bool = True,
) -> Prediction:
    """Run the network over (T, h, w, 3) uint8 frames in windows of `window` frames (the
    anchor included); without `cameras` (evaluation) the camera fit is skipped: K NaN,
    world_2_cam identity."""
    net.eval()
    T = len(images)
    step = window - 1 if anchor else window
    if step < 1:
        raise ValueError("a window must hold at least 2 frames when anchored")
    starts = [0, *range(window, T, step)] if anchor else list(range(0, T, step))
    parts, first = [], None
    for start in starts:
        frames = list(range(start, min(T, start + (window if start == 0 else step))))
        anchored = anchor and start > 0
        members = [0, *frames] if anchored else frames
        x = torch.from_numpy(images[members]).to(device).permute(0, 3, 1, 2)
        out = net(x[None].float() / 255.0, cameras=cameras)
        if not cameras:
            out["intrinsics"] = torch.full((1, len(members), 3, 3), torch.nan)
            out["extrinsics"] = torch.eye(4).repeat(1, len(members), 1, 1)
        out = {k: out[k][0].float().cpu().numpy() for k in _KEPT}
        out["extrinsics"] = out["extrinsics"].astype(np.float64)
        if first is None:
            first = {k: v[0] for k, v in out.items()}
        elif anchored:
            _align_to_anchor(out, first)
        if anchored:
            out = {k: v[1:] for k, v in out.items()}
        parts.append(out)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Prediction(
        depth=cat["depth"],
        depth_conf=cat["depth_conf"],
        canonical=cat["canonical"],
        canonical_conf=cat["canonical_conf"],
        intrinsics=cat["intrinsics"].astype(np.float64),
        world_2_cam=cat["extrinsics"],
    )


def _align_to_anchor(out: dict[str, np.ndarray], first: dict[str, np.ndarray]) -> None:
    """Bring a window whose view 0 is the anchor into the first window's frame and scale:
    depth scale from the anchor's confident pixels (median ratio), cameras re-anchored."""
    conf = first["depth_conf"]
    sure = conf >= np.median(conf)
    ratio = first["depth"][sure] / np.maximum(out["depth"][0][sure], 1e-8)
    scale = float(np.median(ratio)) if sure.any() else 1.0
    out["depth"] = out["depth"] * scale
    relative = out["extrinsics"] @ np.linalg.inv(out["extrinsics"][0])  # anchor cam -> cam
    relative[:, :3, 3] *= scale
    out["extrinsics"] = relative @ first["extrinsics"]
