"""What the tracker sees of one subject: per timestep, per view landmarks, and fused points.

Plain arrays only (this package does not import `tasks`): cameras are OpenCV `K` and
`world_2_cam` as NeRSemble stores them, world units metres, pixel centres on integers. A view
where MediaPipe found no face is simply absent; a timestep with no views is kept here so the
tracker can report why it dropped it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

NUM_MEDIAPIPE_LANDMARKS = 478
"""MediaPipe Face Landmarker's landmark count (468 mesh points and 10 iris points)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewObservation:
    """One camera's MediaPipe landmarks of one timestep."""

    serial: str
    """Camera serial, e.g. '222200037'."""
    K: np.ndarray
    """(3, 3) intrinsics of the image the landmarks were detected in."""
    world_2_cam: np.ndarray
    """(4, 4) world (metres) to OpenCV camera transform."""
    landmarks: np.ndarray
    """(478, 2) MediaPipe landmark pixels (x right, y down, pixel centres on integers)."""
    valid: np.ndarray
    """(478,) bool: landmark usable (finite and inside the image)."""

    def __post_init__(self) -> None:
        n = NUM_MEDIAPIPE_LANDMARKS
        checks = {
            "K": (self.K, (3, 3)),
            "world_2_cam": (self.world_2_cam, (4, 4)),
            "landmarks": (self.landmarks, (n, 2)),
            "valid": (self.valid, (n,)),
        }
        for name, (value, shape) in checks.items():
            if np.shape(value) != shape:
                raise ValueError(
                    f"view {self.serial}: {name} has shape {np.shape(value)}, want {shape}"
                )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TimestepObservation:
    """Everything observed at one timestep (one sequence frame, all cameras at once)."""

    sequence: str
    """Sequence name, e.g. 'EXP-1-head'."""
    frame: int
    """Frame index in the sequence."""
    views: tuple[ViewObservation, ...]
    """Views where a face was found (possibly none)."""
    points: np.ndarray
    """(N, 3) fused surface points, world metres (N may be 0)."""
    normals: np.ndarray
    """(N, 3) unit normals of `points` (pointing out of the surface)."""

    def __post_init__(self) -> None:
        p, n = np.shape(self.points), np.shape(self.normals)
        if len(p) != 2 or p[1] != 3 or p != n:
            raise ValueError(f"timestep {self.key}: points {p} and normals {n} must be (N, 3)")

    @property
    def key(self) -> str:
        """'sequence/frame' label for reports and file names."""
        return f"{self.sequence}/{self.frame:05d}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubjectObservations:
    """A subject's tracking input: its timesteps in a fixed order."""

    subject: str
    """Subject id."""
    timesteps: tuple[TimestepObservation, ...]
    """Timesteps, each (sequence, frame) once."""

    def __post_init__(self) -> None:
        keys = [t.key for t in self.timesteps]
        if len(set(keys)) != len(keys):
            raise ValueError(f"subject {self.subject}: a timestep appears twice in {keys}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LandmarkBatch:
    """Landmarks of T timesteps padded to C views, for vectorised reprojection."""

    K: np.ndarray
    """(T, C, 3, 3) intrinsics (padding repeats a real view of the timestep)."""
    world_2_cam: np.ndarray
    """(T, C, 4, 4) world to camera transforms."""
    pixels: np.ndarray
    """(T, C, L, 2) observed pixels of the L embedded landmarks."""
    valid: np.ndarray
    """(T, C, L) bool: observed (False for padding and invalid detections)."""


def pack_landmarks(
    timesteps: tuple[TimestepObservation, ...], *, mediapipe_idx: np.ndarray
) -> LandmarkBatch:
    """Stack the views of `timesteps` (each needs at least one view), keeping the landmarks
    `mediapipe_idx` (L,) that the FLAME landmark embedding carries, in its order."""
    if any(not t.views for t in timesteps):
        raise ValueError("pack_landmarks: every timestep needs at least one view")
    t_count, c_count, l_count = (
        len(timesteps),
        max(len(t.views) for t in timesteps),
        len(mediapipe_idx),
    )
    K = np.zeros((t_count, c_count, 3, 3))
    world_2_cam = np.zeros((t_count, c_count, 4, 4))
    pixels = np.zeros((t_count, c_count, l_count, 2))
    valid = np.zeros((t_count, c_count, l_count), dtype=bool)
    for i, timestep in enumerate(timesteps):
        for c in range(c_count):
            view = timestep.views[min(c, len(timestep.views) - 1)]
            K[i, c], world_2_cam[i, c] = view.K, view.world_2_cam
            if c < len(timestep.views):
                pixels[i, c] = np.nan_to_num(view.landmarks[mediapipe_idx])
                valid[i, c] = view.valid[mediapipe_idx]
    return LandmarkBatch(K=K, world_2_cam=world_2_cam, pixels=pixels, valid=valid)


def voxel_downsample(
    points: np.ndarray, normals: np.ndarray, *, voxel_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Average points and normals per cubic voxel of `voxel_size` metres: evens out the
    density of a fused cloud and averages its noise. Output order follows the voxel keys,
    so equal inputs give equal outputs."""
    finite = np.isfinite(points).all(1) & np.isfinite(normals).all(1)
    points, normals = points[finite], normals[finite]
    if len(points) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    cells = np.floor(points / voxel_size).astype(np.int64)
    _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()

    def sums(values: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(inverse, v, len(counts)) for v in values.T], axis=1)

    mean_points = sums(points) / counts[:, None]
    mean_normals = sums(normals)
    length = np.linalg.norm(mean_normals, axis=1, keepdims=True)
    return mean_points, mean_normals / np.maximum(length, 1e-12)
