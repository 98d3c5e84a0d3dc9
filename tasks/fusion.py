"""The dense workspace of one timestep and COLMAP's stereo fusion into a point cloud (paper 3.3).

Layout (COLMAP's, made by `pycolmap.undistort_images` from the images and the SfM model):

    images/cam_{serial}.png                      the views (PINHOLE cameras: plain copies)
    sparse/                                      the model, principal points moved (see below)
    stereo/depth_maps/{image}.{kind}.bin         z-depth in metres, 0 = invalid
    stereo/normal_maps/{image}.{kind}.bin        unit normals in the camera frame, facing it
    stereo/fusion.cfg, stereo/patch-match.cfg    images to fuse, source images per image

`kind` is "photometric" or "geometric" (after the consistency filter); fusion reads one kind.

Half a pixel: COLMAP's SfM puts the centre of the top-left pixel at (0.5, 0.5), but its MVS
(PatchMatch and fusion) casts the ray of pixel (col, row) through (col, row) with the same K.
The workspace's principal points are moved by -0.5 px so that both agree with the OpenCV
convention of `tasks.formats.cameras`: the workspace K is our K. Measured on exact depth maps of the
sample head: fused points 0.02 mm (median) off the surface with the shift, 0.22 mm without.

Map files are COLMAP's `Mat`: an ASCII header "W&H&C&", then float32 little-endian channel
planes one after another. pycolmap 4.2.1's `NormalMap.from_array` writes the three channels
interleaved, which fusion then reads as garbage normals (almost nothing fuses), so this module
writes and reads the files itself.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import zlib  # noqa: F401  zlib must load before pycolmap (tasks.formats.colmap_cameras)
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pycolmap

from tasks.formats.atomic import atomic_file, write_bytes
from tasks.formats.cameras import Camera
from tasks.formats.colmap_cameras import serial_of
from tasks.formats.ply import read_ply_vertices

MapKind = Literal["photometric", "geometric"]
FusionStatus = Literal["ok", "empty"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkspaceView:
    """One view of the workspace, as the dense stereo needs it."""

    name: str
    """Image name in the model, e.g. 'cam_222200037.png'."""
    camera: Camera
    """The view's camera (OpenCV convention, metres; the workspace K is our K)."""
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    points: np.ndarray
    """(N, 3) world positions (metres) of the sparse points this view observes."""
    point_ids: np.ndarray
    """(N,) int64 ids of those points in the model (shared ids = shared observations)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DenseWorkspace:
    """A COLMAP dense workspace folder and the images it holds."""

    root: Path
    """The workspace folder."""
    image_names: tuple[str, ...]
    """Names of the workspace's images, sorted."""

    @property
    def sparse_dir(self) -> Path:
        """The model (binary), in the MVS pixel convention."""
        return self.root / "sparse"

    @property
    def stereo_dir(self) -> Path:
        """Depth maps, normal maps and the configuration files."""
        return self.root / "stereo"

    def image_path(self, name: str) -> Path:
        """The image file of `name`."""
        return self.root / "images" / name

    def depth_map_path(self, name: str, kind: MapKind = "geometric") -> Path:
        """COLMAP's depth map file of image `name`."""
        return self.stereo_dir / "depth_maps" / f"{name}.{kind}.bin"

    def normal_map_path(self, name: str, kind: MapKind = "geometric") -> Path:
        """COLMAP's normal map file of image `name`."""
        return self.stereo_dir / "normal_maps" / f"{name}.{kind}.bin"


def prepare_workspace(
    *,
    images_dir: str | os.PathLike,
    sparse_dir: str | os.PathLike,
    output: str | os.PathLike,
    image_names: Sequence[str] = (),
) -> DenseWorkspace:
    """Make the dense workspace `output` (replaced if present) from the images and the model.

    `image_names` limits it to those images (default: all of the model). Raises ValueError when
    the undistorted model is not PINHOLE (the half-pixel move assumes it).
    """
    output = Path(output)
    if output.exists():
        shutil.rmtree(output)
    pycolmap.undistort_images(
        output, Path(sparse_dir), Path(images_dir), image_names=list(image_names)
    )
    model = pycolmap.Reconstruction(output / "sparse")
    for camera in model.cameras.values():
        if camera.model_name != "PINHOLE":
            raise ValueError(f"{output}: camera {camera.camera_id} is {camera.model_name}")
        params = np.array(camera.params, dtype=np.float64)
        params[2:4] -= 0.5
        camera.params = params
    model.write_binary(output / "sparse")
    return open_workspace(output)


def open_workspace(root: str | os.PathLike) -> DenseWorkspace:
    """The workspace at `root` (made by `prepare_workspace`); its images are the ones listed in
    stereo/fusion.cfg (the model may hold more when `image_names` limited the workspace)."""
    root = Path(root)
    config = root / "stereo" / "fusion.cfg"
    if not (root / "sparse").is_dir() or not config.is_file():
        raise FileNotFoundError(f"no dense workspace at {root} (no sparse/ or fusion.cfg)")
    names = tuple(sorted(line.strip() for line in config.read_text().splitlines() if line.strip()))
    return DenseWorkspace(root=root, image_names=names)


def load_views(workspace: DenseWorkspace) -> dict[str, WorkspaceView]:
    """Image name -> the view's camera, pixels and observed sparse points (workspace images)."""
    model = pycolmap.Reconstruction(workspace.sparse_dir)
    seen: dict[int, dict[int, np.ndarray]] = {image_id: {} for image_id in model.images}
    for point_id, point in model.points3D.items():
        for element in point.track.elements:
            seen[element.image_id][point_id] = point.xyz
    views = {}
    for image_id, image in model.images.items():
        if image.name not in workspace.image_names:
            continue
        world_2_cam = np.eye(4)
        world_2_cam[:3] = image.cam_from_world().matrix()
        camera = Camera(
            serial=serial_of(image.name),
            K=np.asarray(image.camera.calibration_matrix(), dtype=np.float64),
            world_2_cam=world_2_cam,
            width=image.camera.width,
            height=image.camera.height,
        )
        observed = seen[image_id]
        views[image.name] = WorkspaceView(
            name=image.name,
            camera=camera,
            image=_read_rgb(workspace.image_path(image.name)),
            points=np.array(list(observed.values()), dtype=np.float64).reshape(-1, 3),
            point_ids=np.array(list(observed), dtype=np.int64),
        )
    return dict(sorted(views.items()))


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_colmap_map(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an (H, W) or (H, W, C) float map in COLMAP's `Mat` format (NaN written as 0)."""
    path = Path(path)
    data = np.nan_to_num(np.asarray(array, dtype=np.float32), nan=0.0)
    if data.ndim == 2:
        data = data[..., None]
    height, width, channels = data.shape
    header = f"{width}&{height}&{channels}&".encode()
    body = np.ascontiguousarray(data.transpose(2, 0, 1), dtype="<f4").tobytes()
    return write_bytes(path, header + body)


def read_colmap_map(path: str | os.PathLike) -> np.ndarray:
    """An (H, W) or (H, W, C) float32 map from a COLMAP `Mat` file."""
    raw = Path(path).read_bytes()
    fields = raw.split(b"&", 3)
    try:
        width, height, channels = (int(v) for v in fields[:3])
        data = np.frombuffer(fields[3], dtype="<f4").reshape(channels, height, width)
    except (ValueError, IndexError) as err:
        raise ValueError(f"{path}: not a COLMAP map file ({err})") from err
    maps = np.ascontiguousarray(data.transpose(1, 2, 0))
    return maps[..., 0] if channels == 1 else maps


@dataclasses.dataclass(frozen=True, kw_only=True)
class FusionConfig:
    """COLMAP's fusion settings (`pycolmap.StereoFusionOptions`) and what counts as a result."""

    kind: MapKind = "geometric"
    """Which depth/normal maps to fuse."""
    min_num_pixels: int = 3
    """Pixels (over all views) that must agree to make a point."""
    max_reproj_error: float = 2.0
    """Pixels: how far a pixel may be from the projection of the point it joins."""
    max_depth_error: float = 0.01
    """Relative depth difference allowed between a pixel and the point it joins."""
    max_normal_error: float = 10.0
    """Degrees between a pixel's normal and the point's."""
    min_points: int = 1000
    """Fewer fused points than this is an "empty" result."""
    num_threads: int = 1
    """Fusion threads (-1: all cores); 1 keeps the fused cloud identical from run to run."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FusionResult:
    """What `fuse_workspace` made."""

    status: FusionStatus
    """"ok", or "empty" when too few points fused."""
    reason: str
    """Why it is empty ('' when ok)."""
    ply_path: Path
    """The fused cloud (binary PLY: x y z nx ny nz red green blue, metres, world frame)."""
    num_points: int
    """Fused points."""
    seconds: float
    """Wall time."""


def fuse_workspace(
    *,
    workspace: DenseWorkspace,
    output_ply: str | os.PathLike,
    config: FusionConfig = FusionConfig(),
) -> FusionResult:
    """Fuse the workspace's depth and normal maps with COLMAP into `output_ply` (atomic).

    Views without maps are skipped by COLMAP; no maps at all, or fewer than `min_points`
    points, is an "empty" result with the reason (the PLY is written all the same).
    """
    start = time.monotonic()
    output_ply = Path(output_ply)
    with_maps = [
        n
        for n in workspace.image_names
        if workspace.depth_map_path(n, config.kind).is_file()
        and workspace.normal_map_path(n, config.kind).is_file()
    ]
    options = pycolmap.StereoFusionOptions(
        min_num_pixels=config.min_num_pixels,
        max_reproj_error=config.max_reproj_error,
        max_depth_error=config.max_depth_error,
        max_normal_error=config.max_normal_error,
        num_threads=config.num_threads,
    )
    with atomic_file(output_ply) as tmp:
        model = pycolmap.stereo_fusion(
            tmp, workspace.root, input_type=config.kind, options=options, output_type="ply"
        )
        tmp.with_name(tmp.name + ".vis").unlink(missing_ok=True)
    count = model.num_points3D()
    reason = ""
    if not with_maps:
        reason = f"no {config.kind} depth and normal maps in {workspace.stereo_dir}"
    elif count < config.min_points:
        reason = f"{count} fused points < {config.min_points} (from {len(with_maps)} views)"
    return FusionResult(
        status="empty" if reason else "ok",
        reason=reason,
        ply_path=output_ply,
        num_points=count,
        seconds=time.monotonic() - start,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class FusedCloud:
    """A fused point cloud in world coordinates (metres)."""

    points: np.ndarray
    """(N, 3) float64 positions."""
    normals: np.ndarray
    """(N, 3) float64 unit normals."""
    colors: np.ndarray
    """(N, 3) uint8 RGB."""


def read_fused_ply(path: str | os.PathLike) -> FusedCloud:
    """The vertices of a binary little-endian PLY written by COLMAP's fusion."""
    vertices = read_ply_vertices(path)

    def columns(*names: str) -> np.ndarray:
        return np.stack([vertices[n] for n in names], axis=1)

    return FusedCloud(
        points=columns("x", "y", "z").astype(np.float64),
        normals=columns("nx", "ny", "nz").astype(np.float64),
        colors=columns("red", "green", "blue").astype(np.uint8),
    )
