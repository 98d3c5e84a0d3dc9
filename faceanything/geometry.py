"""Cameras and rays, the floor under data and model: views fitted to a resolution bucket, DA3's
patch grid and scale normalisation, ray maps and cameras fitted from them.

Conventions are `tasks.formats.cameras`' (OpenCV axes, `world_2_cam`, pixel centres on
integers, metres). DA3's frame (paper B.1, DA3 sec. 3): the first view's camera is the
world, and one scale per sequence makes the mean L2 norm of the valid back-projected points
of all its views 1; depths and camera centres (ray origins) are scaled alike, ray
directions are not (a point is origin + depth * direction).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch
from torch import Tensor

PATCH = 14
"""Patch size of DA3's backbone: input sides must be multiples of it."""
RAY_FACTOR = 8
"""The ray map has RAY_FACTOR pixels per patch (DualDPT's auxiliary branch): 8/14 of the input."""


def ray_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of the ray map for an input of height x width."""
    return height // PATCH * RAY_FACTOR, width // PATCH * RAY_FACTOR


@dataclasses.dataclass(frozen=True, kw_only=True)
class FittedView:
    """A view resized and cropped to a bucket, its intrinsics kept exact."""

    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    depth: np.ndarray
    """(H, W) float32 z-depth (m), NaN where none."""
    canonical: np.ndarray
    """(H, W, 3) float32 FLAME metres, NaN where none."""
    mask: np.ndarray
    """(H, W) bool: canonical valid."""
    K: np.ndarray
    """(3, 3) float64 intrinsics of the fitted image."""


def fit_view(
    sample: dict[str, object], *, size: tuple[int, int], rng: np.random.Generator | None
) -> FittedView:
    """Resize a shard sample (`load_sample`'s dict) to cover `size` = (W, H), then crop.

    The resize scales both axes by the same factor up to rounding (each axis's exact factor
    goes into K: x' = s (x + 0.5) - 0.5); maps are resampled by nearest pixel centre so no
    depth is blended across an edge. The crop holds the canonical mask's centroid (the face),
    placed at random when `rng` is given, else centred.
    """
    image = np.asarray(sample["image"])
    height, width = image.shape[:2]
    out_w, out_h = size
    scale = max(out_w / width, out_h / height)
    new_w, new_h = max(out_w, round(width * scale)), max(out_h, round(height * scale))
    sx, sy = new_w / width, new_h / height
    shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (new_w, new_h), interpolation=shrink)
    nearest = {"interpolation": cv2.INTER_NEAREST_EXACT}
    depth = cv2.resize(np.asarray(sample["depth"], np.float32), (new_w, new_h), **nearest)
    canonical = cv2.resize(np.asarray(sample["canonical"], np.float32), (new_w, new_h), **nearest)
    mask = cv2.resize(np.asarray(sample["mask"], np.float32), (new_w, new_h), **nearest) == 1
    ox = _crop_start(mask.any(axis=0), new_w, out_w, rng)
    oy = _crop_start(mask.any(axis=1), new_h, out_h, rng)
    K = np.asarray(sample["K"], np.float64).copy()
    K[0] *= sx
    K[1] *= sy
    K[0, 2] += 0.5 * sx - 0.5 - ox
    K[1, 2] += 0.5 * sy - 0.5 - oy
    crop = (slice(oy, oy + out_h), slice(ox, ox + out_w))
    return FittedView(
        image=np.ascontiguousarray(image[crop]),
        depth=np.ascontiguousarray(depth[crop]),
        canonical=np.ascontiguousarray(canonical[crop]),
        mask=np.ascontiguousarray(mask[crop] & np.isfinite(canonical[crop]).all(-1)),
        K=K,
    )


def _crop_start(occupied: np.ndarray, full: int, size: int, rng: np.random.Generator | None) -> int:
    """Start of a `size` window in `full` that holds the occupied span's centre."""
    if full <= size:
        return 0
    hits = np.flatnonzero(occupied)
    centre = (hits[0] + hits[-1]) / 2 if len(hits) else full / 2
    low = int(np.clip(np.ceil(centre - size + 1), 0, full - size))
    high = int(np.clip(np.floor(centre), 0, full - size))
    if rng is None:
        return int(np.clip(round(centre - size / 2), low, high))
    return int(rng.integers(low, high + 1))


def relative_poses(world_2_cam: Tensor) -> Tensor:
    """[S, 4, 4] world_2_cam -> [S, 4, 4] transforms from the first camera's frame to each."""
    return world_2_cam @ torch.linalg.inv(world_2_cam[0])


def backproject(depth: Tensor, K: Tensor) -> Tensor:
    """[S, H, W] z-depth and [S, 3, 3] K -> [S, H, W, 3] points in each camera's frame."""
    S, H, W = depth.shape
    v, u = torch.meshgrid(
        torch.arange(H, dtype=K.dtype), torch.arange(W, dtype=K.dtype), indexing="ij"
    )
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [H, W, 3]
    rays = torch.einsum("sij,hwj->shwi", torch.linalg.inv(K), pixels)
    return rays * depth[..., None]


def normalise_scene(
    depth: Tensor, valid: Tensor, K: Tensor, world_2_cam: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """DA3's normalisation of one sequence of views.

    Args:
        depth: [S, H, W] z-depth (m); valid: [S, H, W] bool; K: [S, 3, 3]; world_2_cam: [S, 4, 4].

    Returns:
        depth [S, H, W] scaled (0 where not valid), world_2_cam [S, 4, 4] from the first
        camera's frame with translations scaled, and the scale (scalar): 1 / mean norm of the
        valid points in the first camera's frame (1 when no point is valid).
    """
    K, poses = K.double(), relative_poses(world_2_cam.double())
    depth = torch.where(valid, depth.double(), 0.0)
    points = backproject(depth, K)  # [S, H, W, 3] in each camera
    cam_2_first = torch.linalg.inv(poses)
    first = torch.einsum("sij,shwj->shwi", cam_2_first[:, :3, :3], points)
    first = first + cam_2_first[:, None, None, :3, 3]
    norms = first.norm(dim=-1)[valid]
    scale = 1.0 / norms.mean() if norms.numel() and norms.mean() > 0 else torch.tensor(1.0)
    poses = poses.clone()
    poses[:, :3, 3] *= scale
    return (depth * scale).float(), poses.float(), scale.float()


def ray_targets(
    K: Tensor, world_2_cam: Tensor, *, image: tuple[int, int], rays: tuple[int, int]
) -> Tensor:
    """Ray maps [S, h, w, 6] (DA3's: world direction R^T K^-1 (u, v, 1), then the camera
    centre) of cameras [S, 3, 3] / [S, 4, 4] of an image (H, W), at ray size (h, w).

    Ray pixel (i, j) covers the image area of its cell: its centre is u = (j + 0.5) W / w - 0.5,
    v = (i + 0.5) H / h - 0.5, the grid DA3's ray-to-camera fit assumes.
    """
    K, world_2_cam = K.double(), world_2_cam.double()
    pixels = ray_pixels(image, rays)  # [h, w, 3]
    cam_dirs = torch.einsum("sij,hwj->shwi", torch.linalg.inv(K), pixels)
    R = world_2_cam[:, :3, :3]
    dirs = torch.einsum("sji,shwj->shwi", R, cam_dirs)  # R^T d
    centres = -torch.einsum("sji,sj->si", R, world_2_cam[:, :3, 3])
    origins = centres[:, None, None, :].expand_as(dirs)
    return torch.cat([dirs, origins], dim=-1).float()


def ray_pixels(image: tuple[int, int], rays: tuple[int, int], dtype=torch.float64) -> Tensor:
    """[h, w, 3] homogeneous image pixels (u, v, 1) at the centres of a ray map's cells."""
    (H, W), (h, w) = image, rays
    v = (torch.arange(h, dtype=dtype) + 0.5) * H / h - 0.5
    u = (torch.arange(w, dtype=dtype) + 0.5) * W / w - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv, torch.ones_like(uu)], dim=-1)


def cameras_from_rays(
    ray: Tensor, conf: Tensor, *, image: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """world_2_cam [..., 4, 4] and K [..., 3, 3] (OpenCV pixels of an image (H, W)) fitted
    to ray maps [..., h, w, 6] (`ray_targets`' layout), weighted by confidence [..., h, w].

    Directions d ~ M p with M = R^T K^-1 (R: world_2_cam rotation): M by weighted DLT
    (d x M p = 0, pixels normalised for conditioning), then M = Q U (QR, U upper triangular
    with positive diagonal) gives R = Q^T and K ~ U^-1; the centre is the weighted mean origin.
    Exact for exact rays, any principal point (DA3's own fit assumes a centred one).
    """
    lead, (h, w) = ray.shape[:-3], ray.shape[-3:-1]
    H, W = image
    norm = torch.tensor(
        [[2 / W, 0, -1 + 1 / W], [0, 2 / W, -H / W + 1 / W], [0, 0, 1]], dtype=torch.float64
    )  # pixels to about [-1, 1]
    p = ray_pixels(image, (h, w)).reshape(-1, 3) @ norm.T  # [N, 3]
    d = ray[..., :3].reshape(-1, h * w, 3).double()
    weight = conf.reshape(-1, h * w).double()
    zero = torch.zeros_like(d[..., 0])
    skew = torch.stack(
        [
            torch.stack([zero, -d[..., 2], d[..., 1]], -1),
            torch.stack([d[..., 2], zero, -d[..., 0]], -1),
            torch.stack([-d[..., 1], d[..., 0], zero], -1),
        ],
        dim=-2,
    )  # [V, N, 3, 3]: skew @ x = d x x
    rows = torch.einsum("vnij,nk->vnijk", skew, p).reshape(*skew.shape[:2], 3, 9)
    normal = torch.einsum("vn,vnai,vnaj->vij", weight, rows, rows)
    M = torch.linalg.eigh(normal).eigenvectors[..., 0].reshape(-1, 3, 3)
    side = torch.einsum("vn,vni,vij,nj->v", weight, d, M, p).sign()
    M = (M * side[:, None, None]) @ norm
    Q, U = torch.linalg.qr(M)
    flip = torch.diagonal(U, dim1=-2, dim2=-1).sign()
    Q, U = Q * flip[:, None, :], U * flip[:, :, None]
    K = torch.linalg.inv(U)
    K = K / K[:, 2:3, 2:3]
    centre = (weight[..., None] * ray[..., 3:].reshape(-1, h * w, 3).double()).sum(1)
    centre = centre / weight.sum(1, keepdim=True).clamp(min=1e-12)
    world_2_cam = torch.eye(4, dtype=torch.float64).repeat(len(Q), 1, 1)
    world_2_cam[:, :3, :3] = Q.mT
    world_2_cam[:, :3, 3] = -torch.einsum("vij,vj->vi", Q.mT, centre)
    dtype = ray.dtype
    return world_2_cam.reshape(*lead, 4, 4).to(dtype), K.reshape(*lead, 3, 3).to(dtype)
