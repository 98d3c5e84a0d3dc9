"""The tracker's settings: stages, step sizes, weights and limits, as plain dataclasses.

Their own module, so that the tracker, the optimisation problem and the fitting loop all read
them without importing each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

from flame_tracking.energies import EnergyWeights

Variable = Literal[
    "shape",
    "static_offset",
    "expr",
    "rotation",
    "translation",
    "neck_pose",
    "jaw_pose",
    "eyes_pose",
]
PER_TIMESTEP: tuple[Variable, ...] = (
    "expr",
    "rotation",
    "translation",
    "neck_pose",
    "jaw_pose",
    "eyes_pose",
)
"""Variables with one row per timestep; `shape` and `static_offset` are shared."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageConfig:
    """One optimisation stage."""

    name: str
    """Label for logs and progress."""
    steps: int
    """Adam steps."""
    variables: tuple[Variable, ...]
    """Variables optimised; the others stay fixed."""
    points: bool = False
    """Fit the fused points (and compute FLAME on the whole fitted region)."""
    landmark_scale: float = 1.0
    """Multiplier of the landmark robust scale: wide while the pose is still coarse."""
    point_scale: float = 1.0
    """Multiplier of the point robust scale: wide while the identity is still coarse."""
    landmark_weight: float = 1.0
    """Multiplier of the landmark weight: small once points fit (landmarks only stop sliding)."""
    prior_weight: float = 1.0
    """Multiplier of the shape and expression priors: small once the dense points fit."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LearningRates:
    """Adam step sizes per variable, in each variable's own units."""

    shape: float = 0.05
    """Identity coefficients (unit variance)."""
    static_offset: float = 1e-4
    """Metres."""
    expr: float = 0.05
    """Expression coefficients."""
    rotation: float = 0.01
    """Radians."""
    translation: float = 1e-3
    """Metres."""
    neck_pose: float = 0.01
    """Radians."""
    jaw_pose: float = 0.01
    """Radians."""
    eyes_pose: float = 0.01
    """Radians."""


Progress = Callable[[float, str], None]
"""progress(fraction done in [0, 1], message): `tasks.progress.Progress`, restated here because
flame_tracking does not import tasks."""

DEFAULT_STAGES = (
    StageConfig(name="rigid", steps=60, variables=("rotation", "translation"), landmark_scale=4.0),
    StageConfig(name="landmarks", steps=200, variables=("shape", *PER_TIMESTEP)),
    StageConfig(
        name="points",
        steps=200,
        variables=("shape", *PER_TIMESTEP),
        points=True,
        point_scale=2.5,
        landmark_weight=0.05,
        prior_weight=0.005,
    ),
    StageConfig(
        name="offsets",
        steps=100,
        variables=("shape", "static_offset", *PER_TIMESTEP),
        points=True,
        landmark_weight=0.05,
        prior_weight=0.005,
    ),
)
"""Head pose from landmarks; all parameters from landmarks (strong priors); then the points
take over (landmarks and priors weak, a wide robust scale first); static offsets last."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    """How a subject is tracked; every field can change the result."""

    stages: tuple[StageConfig, ...] = DEFAULT_STAGES
    """Optimisation stages in order, coarse to fine."""
    refine_steps: int = 100
    """Steps of the last stage run again on the kept timesteps after dropping outliers."""
    learning_rates: LearningRates = LearningRates()
    """Adam step sizes per variable (their units differ)."""
    final_lr_fraction: float = 0.05
    """Each stage's step sizes decay (cosine) to this fraction of their start."""
    weights: EnergyWeights = EnergyWeights()
    """Energy weights and robust scales."""
    correspondence_every: int = 10
    """Steps between updates of point correspondences and landmark visibility."""
    point_region: Literal["face", "head"] = "face"
    """Points fit the model's `face_vertex_ids` (an error if it has none) or every vertex."""
    point_max_distance: float = 0.01
    """Metres: a point further than this from its nearest vertex is not fitted."""
    point_min_normal_cos: float = 0.5
    """A point whose normal disagrees more than this with its vertex's is not fitted."""
    max_points: int = 4000
    """Points per timestep kept for the point term (evenly subsampled past this)."""
    landmark_min_cos: float = 0.1
    """A landmark whose surface faces a camera less than this is ignored in that view."""
    min_views: int = 2
    """A timestep needs landmarks in this many views (to triangulate its start pose)."""
    init_max_error_px: float = 20.0
    """Views further than this from a first triangulation are left out of the start pose."""
    outlier_mad_k: float = 4.0
    """A residual above median + k * 1.4826 * MAD over the subject's timesteps is an outlier."""
    min_landmark_threshold_px: float = 3.0
    """The landmark outlier threshold is never below this (median pixel error)."""
    min_point_threshold_mm: float = 1.5
    """The point outlier threshold is never below this (median point-to-plane error)."""
    jaw_limits: tuple[tuple[float, float], ...] = ((-0.05, 0.6), (-0.15, 0.15), (-0.1, 0.1))
    """(lower, upper) radians of the jaw rotation's x (opening), y and z components."""
    eye_limit: float = 0.6
    """Radians each eye rotation component may reach."""
    dtype: Literal["float32", "float64"] = "float32"
    """Torch dtype of the optimisation."""
    threads: int | None = 1
    """Torch CPU threads while tracking (restored after; None: torch's setting)."""

    def __post_init__(self) -> None:
        if self.point_region not in ("face", "head"):
            raise ValueError(f"point_region must be 'face' or 'head', got {self.point_region!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not self.stages or self.min_views < 1 or len(self.jaw_limits) != 3:
            raise ValueError("need at least one stage, min_views >= 1 and three jaw limits")
