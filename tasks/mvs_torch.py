"""PyTorch kernels of our multi-view stereo (`tasks.mvs`): warps, windowed NCC, sweeps, the
geometric consistency check, filling holes from the other views, normals from depth.

Conventions of `tasks.formats.cameras` (OpenCV axes, metres, pixel centres on integers). Maps are
float32 tensors on one device: images (1, 1, H, W) grey in [0, 1], depth (H, W) camera z with
NaN for invalid. Camera matrices are built in float64 on the CPU, then cast.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from tasks.formats.cameras import Camera, downsample


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewImage:
    """One view ready for the kernels: grey pixels and camera."""

    grey: torch.Tensor
    """(1, 1, H, W) float32 grey levels in [0, 1]."""
    camera: Camera
    """The camera of exactly this image size."""


def view_image(*, image: np.ndarray, camera: Camera, device: torch.device) -> ViewImage:
    """Grey (Rec. 601 weights of the stored sRGB values) of an (H, W, 3) uint8 RGB image."""
    rgb = torch.as_tensor(image, device=device).to(torch.float32) / 255.0
    grey = rgb @ torch.tensor([0.299, 0.587, 0.114], device=device)
    return ViewImage(grey=grey[None, None].contiguous(), camera=camera)


def shrink(view: ViewImage, factor: int) -> ViewImage:
    """The view box-averaged by `factor` (right/bottom rows that do not fill a box dropped)."""
    if factor == 1:
        return view
    cam = view.camera
    cropped = dataclasses.replace(
        cam, width=cam.width // factor * factor, height=cam.height // factor * factor
    )
    return ViewImage(grey=F.avg_pool2d(view.grey, factor), camera=downsample(cropped, factor))


def crop(view: ViewImage, *, x0: int, y0: int, x1: int, y1: int) -> ViewImage:
    """Columns x0..x1-1 and rows y0..y1-1 of the view (the principal point moves)."""
    K = view.camera.K.copy()
    K[:2, 2] -= (x0, y0)
    camera = dataclasses.replace(view.camera, K=K, width=x1 - x0, height=y1 - y0)
    return ViewImage(grey=view.grey[..., y0:y1, x0:x1].contiguous(), camera=camera)


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float64), device=device).to(torch.float32)


def pixel_rays(camera: Camera, device: torch.device) -> torch.Tensor:
    """(3, H, W) camera-frame rays K^-1 (u, v, 1) of every pixel centre (z = 1)."""
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)])
    return _tensor(np.einsum("ij,jhw->ihw", np.linalg.inv(camera.K), pix), device)


def relative_projection(
    ref: Camera, src: Camera, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (H, W, 3), b (3,)) such that ref pixel p at depth d lands at homogeneous source
    pixel d * A[p] + b (a surface-following warp; a plane sweep is constant d)."""
    r_rel = src.world_2_cam[:3, :3] @ ref.world_2_cam[:3, :3].T
    t_rel = src.world_2_cam[:3, 3] - r_rel @ ref.world_2_cam[:3, 3]
    rays = pixel_rays(ref, device)
    a = torch.einsum("ij,jhw->hwi", _tensor(src.K @ r_rel, device), rays)
    return a.contiguous(), _tensor(src.K @ t_rel, device)


def _to_grid(width: int, height: int) -> np.ndarray:
    """(3, 3) map from homogeneous pixels to homogeneous grid_sample coordinates
    (align_corners=True: pixel 0 -> -1, pixel size - 1 -> +1)."""
    return np.array([[2.0 / (width - 1), 0.0, -1.0], [0.0, 2.0 / (height - 1), -1.0], [0, 0, 1]])


def sample(image: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (P, 1, H, W) of `image` (1, 1, Hs, Ws) at pixel coordinates u, v
    (P, H, W); NaN outside the image (and wherever a NaN pixel takes part)."""
    height, width = image.shape[-2:]
    inside = (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
    grid = torch.stack([u * (2.0 / (width - 1)) - 1.0, v * (2.0 / (height - 1)) - 1.0], dim=-1)
    values = F.grid_sample(
        image.expand(len(u), -1, -1, -1),
        torch.nan_to_num(grid, nan=-2.0),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )
    return torch.where(inside[:, None], values, torch.nan)


@functools.lru_cache(maxsize=16)
def _band(size: int, radius: int, device: torch.device) -> torch.Tensor:
    """(size, size) row-normalised band matrix: a 1D window mean that shrinks at the border."""
    index = torch.arange(size, device=device)
    band = ((index[:, None] - index[None, :]).abs() <= radius).to(torch.float32)
    return band / band.sum(dim=1, keepdim=True)


def box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of (..., H, W) `x` over (2 radius + 1)^2 windows, shrinking at the border. Two
    band-matrix products: on a CPU three times faster than avg_pool2d. A NaN spoils its whole
    row and column, so inputs must be finite."""
    height, width = x.shape[-2:]
    return _band(height, radius, x.device) @ (x @ _band(width, radius, x.device).T)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WindowStats:
    """Window statistics of a reference image, shared by all hypotheses."""

    grey: torch.Tensor
    """(1, H, W) the reference image."""
    mean: torch.Tensor
    """(1, H, W) window means."""
    var: torch.Tensor
    """(1, H, W) window variances."""
    inv_std: torch.Tensor
    """(1, H, W) 1 / sqrt(max(var, min_var))."""
    radius: int
    """Window radius in pixels."""


def window_stats(grey: torch.Tensor, radius: int, min_var: float) -> WindowStats:
    """Window statistics of a reference image (1, 1, H, W) for `sweep_cost`."""
    grey = grey[0]
    mean = box(grey, radius)
    var = (box(grey * grey, radius) - mean * mean).clamp(min=0.0)
    return WindowStats(
        grey=grey, mean=mean, var=var, inv_std=var.clamp(min=min_var).rsqrt(), radius=radius
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source:
    """A neighbour view prepared against one reference view."""

    grey: torch.Tensor
    """(1, 1, Hs, Ws) the neighbour's image."""
    a: torch.Tensor
    """(H, W, 3) `relative_projection` in grid_sample coordinates."""
    b: torch.Tensor
    """(3,) likewise."""


def source(*, ref: Camera, grey: torch.Tensor, camera: Camera, device: torch.device) -> Source:
    """A neighbour with `relative_projection` moved into grid_sample coordinates."""
    a, b = relative_projection(ref, camera, device)
    to_grid = _tensor(_to_grid(camera.width, camera.height), device)
    return Source(grey=grey, a=a @ to_grid.T, b=to_grid @ b)


def _source_ncc(
    ref: WindowStats, src: Source, depth: torch.Tensor, min_var: float, out: torch.Tensor
) -> None:
    """NCC of reference windows with `src` warped at depths `depth` (P, H, W) or (P, 1, 1),
    into `out` (P, H, W) WITHOUT the reference's 1/std (common to all sources). Samples off
    the source image are 0, so windows that leave it score low with no test of their own."""
    p = torch.addcmul(src.b, depth[..., None], src.a)
    grid = p[..., :2] / p[..., 2:].clamp(min=1e-6)
    warped = F.grid_sample(
        src.grey.expand(len(grid), -1, -1, -1),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )[:, 0]
    mean = box(warped, ref.radius)
    var = torch.addcmul(box(warped * warped, ref.radius), mean, mean, value=-1.0)
    cov = torch.addcmul(box(warped * ref.grey, ref.radius), mean, ref.mean, value=-1.0)
    torch.mul(cov, var.clamp_(min=min_var).rsqrt_(), out=out)


def sweep_cost(
    ref: WindowStats,
    sources: list[Source],
    depth: torch.Tensor,
    *,
    best_k: int,
    min_var: float,
    chunk: int,
) -> torch.Tensor:
    """(P, H, W) cost 1 - NCC of depth hypotheses `depth` (P, H, W) or (P, 1, 1): per
    hypothesis the NCC averaged over the `best_k` best sources (robust to occlusion)."""
    k = min(best_k, len(sources))
    out = []
    for start in range(0, len(depth), chunk):
        part = depth[start : start + chunk]
        scores = ref.grey.new_empty((len(sources), len(part), *ref.grey.shape[-2:]))
        for index, src in enumerate(sources):
            _source_ncc(ref, src, part, min_var, scores[index])
        best = scores.topk(k, dim=0).values.mean(dim=0) if k < len(sources) else scores.mean(0)
        out.append(1.0 - best * ref.inv_std)
    return torch.cat(out)


def winner(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-hypothesis position (H, W) of the lowest cost along dim 0 of (P, H, W) `cost`
    (a parabola through the best and its two neighbours) and the lowest cost (H, W)."""
    count = len(cost)
    index = cost.argmin(dim=0, keepdim=True)
    best = cost.gather(0, index)[0]
    before = cost.gather(0, (index - 1).clamp(min=0))[0]
    after = cost.gather(0, (index + 1).clamp(max=count - 1))[0]
    curvature = before + after - 2.0 * best
    inner = (index[0] > 0) & (index[0] < count - 1) & (curvature > 1e-6)
    offset = torch.where(inner, 0.5 * (before - after) / curvature.clamp(min=1e-6), 0.0)
    return index[0].to(cost.dtype) + offset.clamp(-0.5, 0.5), best


def upsample(coarse: torch.Tensor, factor: int, height: int, width: int) -> torch.Tensor:
    """(H, W) bilinear upsampling of a (h, w) map made by `shrink(..., factor)`: fine pixel x
    sits at coarse coordinate (x - (factor - 1) / 2) / factor."""
    h, w = coarse.shape
    device = coarse.device
    u = (torch.arange(width, device=device) - (factor - 1) / 2) / factor
    v = (torch.arange(height, device=device) - (factor - 1) / 2) / factor
    grid = torch.stack(torch.meshgrid(v, u, indexing="ij")[::-1], dim=-1)
    grid = grid * torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], device=device) - 1.0
    return F.grid_sample(
        coarse[None, None], grid[None], mode="bilinear", padding_mode="border", align_corners=True
    )[0, 0]


def _sources(ref: ViewImage, sources: list[ViewImage]) -> list[Source]:
    device = ref.grey.device
    return [source(ref=ref.camera, grey=s.grey, camera=s.camera, device=device) for s in sources]


def plane_sweep(
    ref: ViewImage,
    sources: list[ViewImage],
    *,
    depths: tuple[float, float],
    step_px: float,
    max_planes: int,
    radius: int,
    best_k: int,
    min_var: float,
    chunk: int,
) -> torch.Tensor:
    """(H, W) inverse depth of the best fronto-parallel plane, refined between planes by a
    parabola. Planes are uniform in inverse depth over `depths` (near, far metres), `step_px`
    of disparity apart in the widest-baseline source, at most `max_planes` of them."""
    inv_far, inv_near = 1.0 / depths[1], 1.0 / depths[0]
    disparity = ref.camera.K[0, 0] * _widest_baseline(ref, sources) * (inv_near - inv_far)
    count = int(np.clip(np.ceil(disparity / step_px) + 1, 3, max_planes))
    step = (inv_near - inv_far) / (count - 1)
    inverse = inv_far + step * torch.arange(count, device=ref.grey.device)
    cost = sweep_cost(
        window_stats(ref.grey, radius, min_var),
        _sources(ref, sources),
        (1.0 / inverse)[:, None, None],
        best_k=best_k,
        min_var=min_var,
        chunk=chunk,
    )
    position, _ = winner(cost)
    return inv_far + step * position


def _widest_baseline(ref: ViewImage, sources: list[ViewImage]) -> float:
    """Metres between the reference camera and the farthest source camera."""
    return max(float(np.linalg.norm(s.camera.center - ref.camera.center)) for s in sources)


def refine(
    ref: ViewImage,
    sources: list[ViewImage],
    inverse: torch.Tensor,
    *,
    steps_px: tuple[float, ...],
    hypotheses: int,
    radius: int,
    best_k: int,
    min_var: float,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, WindowStats]:
    """Passes around the current inverse depth (H, W), one per step of `steps_px` (hypothesis
    spacing as the disparity in pixels of the widest-baseline source), `hypotheses` on each
    side. A hypothesis moves the whole surface, so every window follows its slant. Returns
    the inverse depth, its cost (H, W) and the reference's window statistics."""
    if not steps_px:
        raise ValueError("refine needs at least one step")
    stats = window_stats(ref.grey, radius, min_var)
    prepared = _sources(ref, sources)
    baseline = _widest_baseline(ref, sources)
    offsets = torch.arange(-hypotheses, hypotheses + 1, device=inverse.device)
    for step_px in steps_px:
        step = step_px / (ref.camera.K[0, 0] * baseline)
        candidates = (inverse[None] + step * offsets[:, None, None]).clamp(min=1e-3)
        volume = sweep_cost(
            stats, prepared, 1.0 / candidates, best_k=best_k, min_var=min_var, chunk=chunk
        )
        position, cost = winner(volume)
        inverse = inverse + step * (position - hypotheses)
    return inverse, cost, stats


def consistency(
    ref: Camera,
    depth: torch.Tensor,
    others: list[tuple[Camera, torch.Tensor]],
    *,
    max_reproj_px: float,
    max_depth_rel: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """How many of the `others` (camera, depth (Hs, Ws)) agree with the reference `depth`
    (H, W), and the sum of their depths seen from the reference where they agree.

    A pixel's point goes into the other view, takes that view's depth there, comes back: it
    agrees when it lands within `max_reproj_px` of where it started and its depth differs
    by at most `max_depth_rel` (relative)."""
    device = depth.device
    v, u = torch.meshgrid(
        torch.arange(ref.height, device=device, dtype=torch.float32),
        torch.arange(ref.width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    count = torch.zeros_like(depth)
    total = torch.zeros_like(depth)
    for cam, other_depth in others:
        a, b = relative_projection(ref, cam, device)
        p = depth[..., None] * a + b
        us, vs = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
        d = sample(other_depth[None, None], us[None], vs[None])[0, 0]
        back_a = _tensor(ref.K @ _rotation(cam, ref) @ np.linalg.inv(cam.K), device)
        back_b = _tensor(ref.K @ _translation(cam, ref), device)
        q = d * torch.einsum("ij,jhw->ihw", back_a, torch.stack([us, vs, torch.ones_like(us)]))
        q = q + back_b[:, None, None]
        err = torch.hypot(q[0] / q[2] - u, q[1] / q[2] - v)
        agree = (err <= max_reproj_px) & ((q[2] - depth).abs() <= max_depth_rel * depth)
        count += agree
        total += torch.where(agree, q[2], 0.0)
    return count, total


def _rotation(src: Camera, dst: Camera) -> np.ndarray:
    """Rotation taking `src` camera coordinates to `dst` camera coordinates."""
    return dst.world_2_cam[:3, :3] @ src.world_2_cam[:3, :3].T


def _translation(src: Camera, dst: Camera) -> np.ndarray:
    return dst.world_2_cam[:3, 3] - _rotation(src, dst) @ src.world_2_cam[:3, 3]


def normals_from_depth(depth: torch.Tensor, camera: Camera, radius: int) -> torch.Tensor:
    """(H, W, 3) unit camera-frame normals facing the camera, NaN where `depth` (H, W) is.

    Points are averaged over (2 radius + 1)^2 windows of valid pixels, then the normal is the
    cross product of central differences `radius` pixels apart on those averages (defined
    next to every valid pixel, so a hole costs no neighbours); the rare undefined one falls
    back to facing the camera along the pixel's ray."""
    rays = pixel_rays(camera, depth.device)
    valid = torch.isfinite(depth)
    points = torch.where(valid, depth, 0.0) * rays
    smooth = box(points, radius) / box(valid.to(depth.dtype), radius)[None]
    r = radius
    pad = F.pad(smooth[None], (r, r, r, r), mode="replicate")[0]
    dx = pad[:, r:-r, 2 * r :] - pad[:, r:-r, : -2 * r]
    dy = pad[:, 2 * r :, r:-r] - pad[:, : -2 * r, r:-r]
    normal = torch.linalg.cross(dy, dx, dim=0)
    normal = normal / normal.norm(dim=0, keepdim=True)
    normal = torch.where(torch.isfinite(normal).all(dim=0), normal, -rays)
    normal = normal / normal.norm(dim=0, keepdim=True)
    facing = (normal * rays).sum(dim=0, keepdim=True) > 0
    normal = torch.where(facing, -normal, normal)
    return torch.where(valid[None], normal, torch.nan).permute(1, 2, 0)


def splat_front(
    ref: Camera,
    others: list[tuple[Camera, torch.Tensor]],
    *,
    max_depth_rel: float,
    min_views: int,
) -> torch.Tensor:
    """(H, W) depth of the reference pixels seen by the other views' depth maps (Hs, Ws):
    each valid pixel of each other view goes to its nearest reference pixel (the nearest one
    per view wins); a reference pixel takes the front-most of those depths that `min_views`
    views agree on (relative difference within `max_depth_rel`), averaged over the views that
    agree with it. NaN where none does. Rounding to the pixel costs up to half a pixel of the
    surface's slope, which averaging over views shrinks."""
    device = others[0][1].device if others else torch.device("cpu")
    size = ref.height * ref.width
    project = _tensor(ref.K, device)
    splats = []
    for cam, depth in others:
        valid = torch.isfinite(depth)
        points = depth[valid] * pixel_rays(cam, device)[:, valid]
        moved = _tensor(_rotation(cam, ref), device) @ points
        moved = moved + _tensor(_translation(cam, ref), device)[:, None]
        pixels = project @ moved
        u = torch.round(pixels[0] / pixels[2]).long()
        v = torch.round(pixels[1] / pixels[2]).long()
        z = moved[2]
        inside = (z > 0) & (u >= 0) & (u < ref.width) & (v >= 0) & (v < ref.height)
        buffer = torch.full((size,), torch.inf, device=device)
        buffer.scatter_reduce_(0, v[inside] * ref.width + u[inside], z[inside], reduce="amin")
        splats.append(_close_holes(buffer.view(ref.height, ref.width), max_depth_rel))
    if not splats:
        return torch.full((ref.height, ref.width), torch.nan, device=device)
    z = torch.stack(splats)
    front = torch.full(z.shape[1:], torch.inf, device=device)
    for one in z:  # per view: does it have enough agreeing views? keep the nearest that does
        support = ((z - one).abs() <= max_depth_rel * one).sum(dim=0)
        front = torch.where((support >= min_views) & (one < front), one, front)
    agree = (z - front).abs() <= max_depth_rel * front
    mean = torch.where(agree, z, 0.0).sum(dim=0) / agree.sum(dim=0).clamp(min=1)
    return torch.where(torch.isfinite(front), mean, torch.nan)


def _close_holes(splat: torch.Tensor, max_depth_rel: float) -> torch.Tensor:
    """(H, W) `splat` (inf where empty) with each empty pixel between at least 3 splatted
    neighbours of one smooth surface (3 x 3, spread within `max_depth_rel`) set to their mean:
    pixels of a view land unevenly on another view's grid and leave pinholes."""
    found = torch.isfinite(splat)[None, None].to(splat.dtype)
    values = torch.where(torch.isfinite(splat), splat, 0.0)[None, None]
    count = F.avg_pool2d(found, 3, stride=1, padding=1, count_include_pad=True)[0, 0] * 9
    total = F.avg_pool2d(values, 3, stride=1, padding=1, count_include_pad=True)[0, 0] * 9
    high = F.max_pool2d(torch.where(found > 0, values, -torch.inf), 3, 1, 1)[0, 0]
    low = -F.max_pool2d(torch.where(found > 0, -values, -torch.inf), 3, 1, 1)[0, 0]
    smooth = (count >= 3) & (high - low <= max_depth_rel * low)
    return torch.where(torch.isinf(splat) & smooth, total / count.clamp(min=1), splat)


def nearest_filled(values: torch.Tensor) -> torch.Tensor:
    """(H, W) copy of `values` in which every NaN takes the value of the nearest finite pixel
    (all NaN stays all NaN): a starting guess for holes that continues the surface."""
    valid = torch.isfinite(values)
    if valid.all() or not valid.any():
        return values.clone()
    rows, cols = ndimage.distance_transform_edt(
        ~valid.cpu().numpy(), return_distances=False, return_indices=True
    )
    index = torch.as_tensor(rows * values.shape[1] + cols, device=values.device)
    return values.reshape(-1)[index.reshape(-1)].reshape(values.shape)


def match_score(
    ref: ViewImage,
    sources: list[ViewImage],
    depth: torch.Tensor,
    *,
    radius: int,
    best_k: int,
    min_var: float,
) -> torch.Tensor:
    """(H, W) best-k mean NCC of the reference windows at the given depths (H, W); NaN where
    the depth is."""
    valid = torch.isfinite(depth)
    cost = sweep_cost(
        window_stats(ref.grey, radius, min_var),
        _sources(ref, sources),
        torch.where(valid, depth, 1.0)[None],
        best_k=best_k,
        min_var=min_var,
        chunk=1,
    )[0]
    return torch.where(valid, 1.0 - cost, torch.nan)
