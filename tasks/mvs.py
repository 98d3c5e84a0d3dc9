"""Dense depth and normals for every view of one timestep (paper 3.3): EXR maps, plus COLMAP
depth/normal maps in the dense workspace so that COLMAP's fusion runs after it.

Backends: "torch", our multi-view stereo (CPU or GPU), and "colmap", COLMAP's PatchMatch
(`tasks.mvs_colmap`, needs pycolmap built with CUDA). The torch backend, per view: a
fronto-parallel plane sweep at reduced resolution, then full-resolution sweeps around that
surface (every window follows its slant), windowed NCC averaged over the best source views,
winner-take-all with a parabola between hypotheses; a geometric consistency check against
every other view; holes filled with the depth other views agree on (projected into the view);
then a second pass refines every view around that consistent, filled surface (holes start
from the nearest depth), and the check and the filling run again.

The defaults were chosen at NeRSemble's working size, 550x802, on the sample subject with
hair geometry (`benchmarks.bench_mvs`, whose docstring holds the table of what was tried): the
share of visible hair pixels with depth within 5 mm of the truth went from 80.4% (median error
0.20 mm; the code before, windows of radius 3) to 92.4% (0.23 mm), the face's from 95.9% to
98.6% (0.19 mm), for about 1.15x the time (129 s instead of 112 s CPU per 16-view timestep on
one thread). Without the second pass: 90.3% in 96 s.

EXR per view (`{maps_dir}/{image stem}.exr`): `depth` camera z in metres, `normal` unit WORLD
normal facing the camera (both NaN where invalid, like the truth maps), `confidence` the
best-k mean NCC at the final depth, in [0.001, 1] where valid (0 invalid; 1 for "colmap").
COLMAP's maps hold the same depth (0 invalid) and CAMERA-frame normals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import zlib  # noqa: F401  zlib must load before pycolmap (tasks.formats.colmap_cameras)
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pycolmap
import torch

from tasks import mvs_colmap, mvs_torch
from tasks.formats.cameras import Camera, project, world_to_camera
from tasks.formats.colmap_cameras import serial_of
from tasks.formats.exr import write_exr
from tasks.frames import image_name
from tasks.fusion import DenseWorkspace, WorkspaceView, load_views, write_colmap_map
from tasks.mvs_colmap import COLMAP_NEEDS_CUDA
from tasks.progress import Progress, silent

Backend = Literal["auto", "torch", "colmap"]
Status = Literal["ok", "partial", "failed"]
ViewState = Literal["ok", "failed"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MvsConfig:
    """How dense depth is estimated; every field except `device`/`num_threads` can change it."""

    backend: Backend = "auto"
    """"auto": "colmap" when pycolmap has CUDA, else "torch"."""
    device: str = "auto"
    """Torch device ("cpu", "cuda", "cuda:1"); "auto": CUDA when available."""
    num_threads: int | None = 1
    """Torch CPU threads (None: all cores); 1 ran 4-8x faster than 2 on a busy 2-core machine."""
    num_neighbours: int = 6
    """Source views matched against each reference view."""
    ideal_angle_deg: float = 20.0
    """Preferred angle between the reference and a source view at the scene."""
    angle_range_deg: tuple[float, float] = (5.0, 50.0)
    """Angles outside this range never make a source view."""
    depth_percentiles: tuple[float, float] = (1.0, 99.0)
    """Percentiles of the view's sparse point depths that bound the sweep."""
    depth_margin_m: float = 0.03
    """Metres added on both sides of the percentile range."""
    min_sparse_points: int = 20
    """A view observing fewer sparse points has no depth range: a recorded failure."""
    min_depth_range_m: float = 0.005
    """A percentile range narrower than this is degenerate: a recorded failure."""
    coarse_factor: int = 2
    """The plane sweep runs on images shrunk by this factor."""
    plane_step_px: float = 1.0
    """Coarse sweep: planes this many coarse pixels of disparity apart (widest baseline)."""
    num_planes: int = 192
    """Coarse sweep: at most this many planes (a deep range gets coarser steps)."""
    coarse_window_radius: int = 2
    """NCC window radius in coarse pixels (2 measured best at 550x802 and 275x401)."""
    window_radius: int = 2
    """NCC window radius in full-resolution pixels (2 measured best at 550x802 and 275x401)."""
    refine_steps_px: tuple[float, ...] = (1.0,)
    """Full-resolution passes: hypothesis spacing of each, as disparity in the widest baseline."""
    second_pass_steps_px: tuple[float, ...] = (1.0,)
    """Refinement passes around every view's consistent, hole-filled depth (holes start from
    the nearest depth in the image), then filtered and filled again; empty: no second pass."""
    fill_min_views: int = 2
    """Holes take the front-most depth this many other views' consistent maps agree on
    (projected into the view); 0: holes stay."""
    refine_hypotheses: int = 3
    """Hypotheses on each side of the current depth in a refinement pass."""
    best_k: int = 3
    """Per hypothesis, the mean cost of the best k source views (occlusion robustness)."""
    min_texture_std: float = 0.004
    """Reference windows with a grey standard deviation below this are invalid."""
    min_ncc: float = 0.3
    """Pixels whose best-k mean NCC is below this are invalid."""
    max_reproj_px: float = 2.0
    """Consistency: forward-backward reprojection error allowed, in pixels."""
    max_depth_rel: float = 0.005
    """Consistency: relative depth difference allowed (0.005 = 5 mm at 1 m)."""
    min_consistent_views: int = 1
    """Other views that must agree with a pixel's depth for it to stay valid."""
    average_consistent: bool = True
    """Replace a kept depth by the mean of its own and the agreeing views' depths."""
    normal_radius: int = 2
    """Normals: smoothing window radius and central-difference half span, in pixels."""
    region_margin_px: int = 32
    """Depth is sought in the box around the view's sparse points, this much wider (hair
    beyond the outermost sparse points)."""
    chunk: int = 16
    """Hypotheses evaluated at once (memory vs speed)."""
    colmap_window_radius: int = 5
    """COLMAP backend: PatchMatch NCC window radius."""
    colmap_min_consistent_views: int = 2
    """COLMAP backend: views that must agree in its geometric filter (COLMAP's default)."""

    def __post_init__(self) -> None:
        if self.num_neighbours < 1 or self.best_k < 1 or self.fill_min_views < 0:
            raise ValueError("num_neighbours, best_k >= 1 and fill_min_views >= 0")
        if self.coarse_factor < 1 or self.num_planes < 3 or self.refine_hypotheses < 1:
            raise ValueError("coarse_factor >= 1, num_planes >= 3, refine_hypotheses >= 1")
        if not self.refine_steps_px:
            raise ValueError("refine_steps_px needs at least one full-resolution pass")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewResult:
    """What became of one view."""

    name: str
    """Image name, e.g. 'cam_222200037.png'."""
    state: ViewState
    """"ok", or "failed" (no maps written)."""
    reason: str
    """Why it failed ('' when ok)."""
    neighbours: tuple[str, ...]
    """Source views used, best first."""
    depth_range: tuple[float, float] | None = None
    """Swept depth range in metres (None when there is none)."""
    valid_fraction: float = 0.0
    """Fraction of pixels with a valid depth after filtering."""
    exr_path: Path | None = None
    """The EXR maps (None when failed)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MvsResult:
    """What `run_mvs` made of one timestep."""

    status: Status
    """"ok" (every view has maps), "partial" (some do) or "failed" (none)."""
    reason: str
    """Why not ok ('' when ok)."""
    backend: Literal["torch", "colmap"]
    """The backend that ran."""
    device: str
    """Where it ran ("cpu", "cuda", ...)."""
    views: tuple[ViewResult, ...]
    """One entry per view, sorted by name."""
    seconds: float
    """Wall time."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DepthMaps:
    """One view's dense result in memory."""

    depth: np.ndarray
    """(H, W) float32 camera z in metres, NaN invalid."""
    normal: np.ndarray
    """(H, W, 3) float32 unit camera-frame normals facing the camera, NaN invalid."""
    confidence: np.ndarray
    """(H, W) float32: best-k mean NCC at the depth, in [0.001, 1] where valid, 0 invalid."""


def resolve_backend(backend: Backend) -> Literal["torch", "colmap"]:
    """ "auto" -> "colmap" when pycolmap was built with CUDA, else "torch"."""
    if backend == "auto":
        return "colmap" if pycolmap.has_cuda else "torch"
    return backend


def resolve_device(device: str) -> torch.device:
    """ "auto" -> CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def select_neighbours(
    views: Mapping[str, WorkspaceView], *, config: MvsConfig
) -> dict[str, tuple[str, ...]]:
    """Per view, the `num_neighbours` source views scoring highest on (shared sparse points
    + 1) x a Gaussian weight (10 degrees wide) of the angle at the view's scene centre (median
    sparse point) around `ideal_angle_deg`, COLMAP's heuristic in spirit; views outside
    `angle_range_deg` never count, and a view without sparse points gets none."""
    low, high = config.angle_range_deg
    chosen = {}
    for name, ref in views.items():
        scores = {}
        centre = np.median(ref.points, axis=0) if len(ref.points) else None
        for other_name, other in views.items():
            if centre is None or other_name == name:
                continue
            angle = _angle_deg(centre - ref.camera.center, centre - other.camera.center)
            if low <= angle <= high:
                shared = np.intersect1d(ref.point_ids, other.point_ids).size
                weight = np.exp(-0.5 * ((angle - config.ideal_angle_deg) / 10.0) ** 2)
                scores[other_name] = (shared + 1) * weight
        best = sorted(scores, key=scores.__getitem__, reverse=True)
        chosen[name] = tuple(best[: config.num_neighbours])
    return chosen


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def depth_range(
    view: WorkspaceView, *, config: MvsConfig
) -> tuple[tuple[float, float] | None, str]:
    """The swept depth range of a view from its sparse points, or None and why there is none
    (too few points in front of the camera, or a degenerate percentile range)."""
    z = world_to_camera(view.points, view.camera)[:, 2]
    z = z[z > 0]
    if len(z) < config.min_sparse_points:
        return None, f"{len(z)} sparse points in front of the camera (< {config.min_sparse_points})"
    low, high = np.percentile(z, config.depth_percentiles)
    if high - low < config.min_depth_range_m:
        return None, f"degenerate depth range {low:.4f}..{high:.4f} m from {len(z)} sparse points"
    margin = config.depth_margin_m
    return (float(max(low - margin, 0.5 * low)), float(high + margin)), ""


def _region(view: WorkspaceView, depths: tuple[float, float], margin: int) -> dict[str, int] | None:
    """Pixel box (x0, y0, x1, y1) around the projections of the view's sparse points within
    the swept depths, `margin` pixels wider (depth is only sought there); None when the box
    is too small to sweep (under 16 pixels a side) or misses the image."""
    cam = view.camera
    uv, z = project(view.points, cam)
    uv = uv[(z >= depths[0]) & (z <= depths[1])]
    x0, y0 = np.floor(uv.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + margin + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, cam.width), min(y1, cam.height)
    return None if x1 - x0 < 16 or y1 - y0 < 16 else {"x0": x0, "y0": y0, "x1": x1, "y1": y1}


def _photometric_depth(
    ref: mvs_torch.ViewImage,
    sources: list[mvs_torch.ViewImage],
    depths: tuple[float, float],
    region: dict[str, int],
    config: MvsConfig,
) -> torch.Tensor:
    """Depth (H, W), NaN where textureless, poorly matched, outside the range or outside
    `region`: a coarse plane sweep, then full-resolution refinement."""
    part = mvs_torch.crop(ref, **region)
    factor = config.coarse_factor
    coarse = mvs_torch.plane_sweep(
        mvs_torch.shrink(part, factor),
        [mvs_torch.shrink(s, factor) for s in sources],
        depths=depths,
        step_px=config.plane_step_px,
        max_planes=config.num_planes,
        radius=config.coarse_window_radius,
        best_k=config.best_k,
        min_var=config.min_texture_std**2,
        chunk=config.chunk,
    )
    height, width = part.grey.shape[-2:]
    start = mvs_torch.upsample(coarse, factor, height, width)
    return _refined(ref, part, sources, start, depths, region, config.refine_steps_px, config)


def _second_pass(
    ref: mvs_torch.ViewImage,
    sources: list[mvs_torch.ViewImage],
    depth: torch.Tensor,
    depths: tuple[float, float],
    region: dict[str, int],
    config: MvsConfig,
) -> torch.Tensor | None:
    """`_photometric_depth` refined from a consistent, filled depth (H, W) instead of a
    sweep; holes start from the nearest depth. None when `region` holds no depth at all."""
    rows, cols = slice(region["y0"], region["y1"]), slice(region["x0"], region["x1"])
    start = mvs_torch.nearest_filled(1.0 / depth[rows, cols])
    if not torch.isfinite(start).all():
        return None
    part = mvs_torch.crop(ref, **region)
    return _refined(ref, part, sources, start, depths, region, config.second_pass_steps_px, config)


def _refined(
    ref: mvs_torch.ViewImage,
    part: mvs_torch.ViewImage,
    sources: list[mvs_torch.ViewImage],
    start: torch.Tensor,
    depths: tuple[float, float],
    region: dict[str, int],
    steps_px: tuple[float, ...],
    config: MvsConfig,
) -> torch.Tensor:
    """Refine the inverse depth `start` (h, w) of the `region` crop `part` of `ref`; return
    the full-size depth (H, W), NaN where it fails the photometric filters."""
    inverse, cost, stats = mvs_torch.refine(
        part,
        sources,
        start,
        steps_px=steps_px,
        hypotheses=config.refine_hypotheses,
        radius=config.window_radius,
        best_k=config.best_k,
        min_var=config.min_texture_std**2,
        chunk=config.chunk,
    )
    depth = 1.0 / inverse
    valid = (
        (cost <= 1.0 - config.min_ncc)
        & (stats.var[0] >= config.min_texture_std**2)
        & (depth >= depths[0])
        & (depth <= depths[1])
    )
    full = torch.full(ref.grey.shape[-2:], torch.nan, device=depth.device)
    full[region["y0"] : region["y1"], region["x0"] : region["x1"]] = torch.where(
        valid, depth, torch.nan
    )
    return full


def _consistent(
    photometric: Mapping[str, torch.Tensor], cameras: Mapping[str, Camera], config: MvsConfig
) -> dict[str, torch.Tensor]:
    """Every view's depth (H, W) after the geometric consistency check against every other
    view (averaged over the agreeing views), its holes filled from the other views' checked
    depths (`fill_min_views`)."""
    checked = {}
    for name, depth in photometric.items():
        others = [(cameras[o], d) for o, d in photometric.items() if o != name]
        count, total = mvs_torch.consistency(
            cameras[name],
            depth,
            others,
            max_reproj_px=config.max_reproj_px,
            max_depth_rel=config.max_depth_rel,
        )
        if config.average_consistent:
            depth = (depth + total) / (1.0 + count)
        checked[name] = torch.where(count >= config.min_consistent_views, depth, torch.nan)
    if config.fill_min_views == 0:
        return checked
    filled = {}
    for name, depth in checked.items():
        splat = mvs_torch.splat_front(
            cameras[name],
            [(cameras[o], d) for o, d in checked.items() if o != name],
            max_depth_rel=config.max_depth_rel,
            min_views=config.fill_min_views,
        )
        filled[name] = torch.where(torch.isfinite(depth), depth, splat)
    return filled


def _finished(
    ref: mvs_torch.ViewImage,
    sources: list[mvs_torch.ViewImage],
    depth: torch.Tensor,
    config: MvsConfig,
) -> DepthMaps:
    """A view's maps from its final depth (H, W): normals and the match score there."""
    normal = mvs_torch.normals_from_depth(depth, ref.camera, config.normal_radius)
    valid = torch.isfinite(depth) & torch.isfinite(normal).all(dim=-1)
    score = mvs_torch.match_score(
        ref,
        sources,
        torch.where(valid, depth, torch.nan),
        radius=config.window_radius,
        best_k=config.best_k,
        min_var=config.min_texture_std**2,
    )
    confidence = torch.where(valid, torch.nan_to_num(score).clamp(1e-3, 1.0), 0.0)
    as_numpy = lambda t: t.cpu().numpy().astype(np.float32)  # noqa: E731
    return DepthMaps(
        depth=as_numpy(torch.where(valid, depth, torch.nan)),
        normal=as_numpy(torch.where(valid[..., None], normal, torch.nan)),
        confidence=as_numpy(confidence),
    )


def _plan(
    view: WorkspaceView, neighbours: tuple[str, ...], config: MvsConfig
) -> tuple[tuple[float, float] | None, dict[str, int] | None, str]:
    """Depth range and pixel region of a view, or why it cannot be swept."""
    depths, reason = depth_range(view, config=config)
    if depths is None:
        return None, None, reason
    if not neighbours:
        return depths, None, "no source view within the angle range"
    region = _region(view, depths, config.region_margin_px)
    if region is None:
        return depths, None, "the sparse points cover too little of the image"
    return depths, region, ""


def estimate_depth_maps(
    *,
    views: Mapping[str, WorkspaceView],
    config: MvsConfig = MvsConfig(),
    progress: Progress | None = None,
) -> tuple[dict[str, DepthMaps], dict[str, ViewResult]]:
    """The torch backend without files: filtered maps of the views that have them, and one
    result per view (`exr_path` None). A view without a depth range, sources or region, or
    whose every pixel is filtered out, is a failed view with the reason."""
    report = progress or silent
    device = resolve_device(config.device)
    neighbours = select_neighbours(views, config=config)
    images = {
        n: mvs_torch.view_image(image=v.image, camera=v.camera, device=device)
        for n, v in views.items()
    }
    sources = {n: [images[s] for s in neighbours[n]] for n in views}
    plans = {n: _plan(v, neighbours[n], config) for n, v in views.items()}
    swept = [n for n, (_, region, _) in plans.items() if region is not None]
    depth = {}
    for index, name in enumerate(swept):
        depths, region, _ = plans[name]
        depth[name] = _photometric_depth(images[name], sources[name], depths, region, config)
        report(0.6 * (index + 1) / len(swept), f"depth of {name}")
    cameras = {n: v.camera for n, v in views.items()}
    depth = _consistent(depth, cameras, config)
    if config.second_pass_steps_px:
        for index, name in enumerate(swept):
            depths, region, _ = plans[name]
            again = _second_pass(images[name], sources[name], depth[name], depths, region, config)
            depth[name] = depth[name] if again is None else again
            report(0.6 + 0.3 * (index + 1) / len(swept), f"second pass of {name}")
        depth = _consistent(depth, cameras, config)
    maps, reasons = {}, {n: reason for n, (_, _, reason) in plans.items()}
    for name in swept:
        result = _finished(images[name], sources[name], depth[name], config)
        if np.isfinite(result.depth).any():
            maps[name] = result
        else:
            reasons[name] = "every pixel failed the photometric or consistency filters"
    report(1.0, f"{len(maps)}/{len(views)} views have depth")
    return maps, {
        n: ViewResult(
            name=n,
            state="ok" if n in maps else "failed",
            reason=reasons[n],
            neighbours=neighbours[n],
            depth_range=plans[n][0],
            valid_fraction=float(np.isfinite(maps[n].depth).mean()) if n in maps else 0.0,
        )
        for n in views
    }


def run_mvs(
    *,
    workspace: DenseWorkspace,
    maps_dir: str | Path,
    config: MvsConfig = MvsConfig(),
    progress: Progress | None = None,
) -> MvsResult:
    """Dense depth of every workspace view with the configured backend: EXR maps into
    `maps_dir` and COLMAP geometric depth/normal maps into the workspace (stale maps of a
    failed view are removed, so fusion never reads an older run)."""
    start = time.monotonic()
    maps_dir = Path(maps_dir)
    maps_dir.mkdir(parents=True, exist_ok=True)
    views = load_views(workspace)
    if resolve_backend(config.backend) == "colmap":
        results, device = _run_colmap(workspace, views, maps_dir, config), "cuda"
    else:
        device = str(resolve_device(config.device))
        with _torch_threads(config.num_threads):
            maps, results = estimate_depth_maps(views=views, config=config, progress=progress)
        for name, view_maps in maps.items():
            write_colmap_map(workspace.depth_map_path(name), view_maps.depth)
            write_colmap_map(workspace.normal_map_path(name), view_maps.normal)
            exr = _write_view_exr(maps_dir, name, view_maps, views[name].camera)
            results[name] = dataclasses.replace(results[name], exr_path=exr)
    for name, result in results.items():
        if result.state == "failed":
            workspace.depth_map_path(name).unlink(missing_ok=True)
            workspace.normal_map_path(name).unlink(missing_ok=True)
    failed = [r for r in results.values() if r.state == "failed"]
    status: Status = "ok" if not failed else "partial" if len(failed) < len(results) else "failed"
    return MvsResult(
        status=status,
        reason="; ".join(f"{r.name}: {r.reason}" for r in failed),
        backend=resolve_backend(config.backend),
        device=device,
        views=tuple(results[n] for n in sorted(results)),
        seconds=time.monotonic() - start,
    )


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Torch's CPU thread count set to `count` for the block (None: left alone)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def maps_path(maps_dir: Path, serial: str) -> Path:
    """The EXR of one camera's maps in `maps_dir` (named after its image, cam_{serial})."""
    return Path(maps_dir) / f"{Path(image_name(serial)).stem}.exr"


def _write_view_exr(maps_dir: Path, name: str, maps: DepthMaps, camera: Camera) -> Path:
    """EXR of one view: depth, WORLD-frame normal (n_world = R^T n_cam), confidence."""
    normal_world = maps.normal @ camera.world_2_cam[:3, :3]
    channels = {"depth": maps.depth, "normal": normal_world, "confidence": maps.confidence}
    return write_exr(maps_path(maps_dir, serial_of(name)), channels)


def _run_colmap(
    workspace: DenseWorkspace,
    views: Mapping[str, WorkspaceView],
    maps_dir: Path,
    config: MvsConfig,
) -> dict[str, ViewResult]:
    """COLMAP PatchMatch (`tasks.mvs_colmap`) on our neighbour choice; its maps are copied
    to EXR (confidence 1 where valid). Without CUDA every view fails with COLMAP_NEEDS_CUDA."""
    neighbours = select_neighbours(views, config=config)
    if pycolmap.has_cuda:
        mvs_colmap.patch_match(
            workspace=workspace,
            neighbours={n: neighbours[n] for n in views},
            window_radius=config.colmap_window_radius,
            min_num_consistent=config.colmap_min_consistent_views,
        )
    results = {}
    for name, view in views.items():
        found = mvs_colmap.read_view(workspace, name) if pycolmap.has_cuda else COLMAP_NEEDS_CUDA
        if isinstance(found, str):
            results[name] = ViewResult(
                name=name, state="failed", reason=found, neighbours=neighbours[name]
            )
            continue
        depth, normal = found
        valid = np.isfinite(depth)
        maps = DepthMaps(depth=depth, normal=normal, confidence=valid.astype(np.float32))
        results[name] = ViewResult(
            name=name,
            state="ok",
            reason="",
            neighbours=neighbours[name],
            valid_fraction=float(valid.mean()),
            exr_path=_write_view_exr(maps_dir, name, maps, view.camera),
        )
    return results
