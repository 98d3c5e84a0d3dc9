"""Multi-view FLAME tracking of one subject: one joint optimisation over all its timesteps.

Shared by every timestep: the identity (shape coefficients and static per-vertex offsets);
per timestep: expression, jaw, neck, eyes, rotation and translation, in the calibrated world
frame. Timesteps are not consecutive frames, so there is no temporal smoothness. Stages run
coarse to fine (`TrackerConfig.stages`): head pose from landmarks, every parameter from
landmarks, then the fused points and static offsets. A timestep whose residuals are far above
the subject's typical ones (median + k MAD) is dropped with its reason and the identity is
refined without it. Same inputs and config give the same result (no randomness; fixed
initialisation; Adam on CPU with a fixed thread count). One torch thread is the default: the
tensors are small, and on a busy 2-core machine two threads ran several times slower.

The pieces: energies in `energies.py`, start poses in `initialisation.py`, the reduced FLAME
evaluation in `subset.py`, the problem set-up in `optimisation.py`, the stage loop in
`fitting.py`, the settings in `settings.py`.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from flame_tracking.fitting import residuals, run_stage
from flame_tracking.lbs import FlameLayer, FlameParams
from flame_tracking.model import FlameModel
from flame_tracking.observations import SubjectObservations, TimestepObservation
from flame_tracking.optimisation import (
    Problem,
    build_problem,
    fitted_region,
    initial_variables,
    select_timesteps,
)
from flame_tracking.settings import PER_TIMESTEP, Progress, StageConfig, TrackerConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class TimestepParams:
    """FLAME parameters of one tracked timestep (names as `FlameParams`)."""

    expr: np.ndarray
    """(E,) expression coefficients."""
    rotation: np.ndarray
    """(3,) axis-angle about the root joint."""
    translation: np.ndarray
    """(3,) metres."""
    neck_pose: np.ndarray
    """(3,) axis-angle."""
    jaw_pose: np.ndarray
    """(3,) axis-angle."""
    eyes_pose: np.ndarray
    """(6,) left then right eye axis-angle."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TimestepReport:
    """What happened to one input timestep."""

    sequence: str
    """Sequence name."""
    frame: int
    """Frame index."""
    kept: bool
    """True when the timestep was tracked and is not an outlier."""
    reason: str
    """Why it was dropped ('' when kept)."""
    landmark_px: float
    """Median landmark reprojection error over visible landmarks and views (NaN untracked)."""
    point_mm: float
    """Median point-to-plane distance of the fitted fused points (NaN without points)."""
    num_views: int
    """Views with a detected face."""
    num_points: int
    """Fused points fitted at the end (inside the face region and near the mesh)."""

    @property
    def key(self) -> str:
        return f"{self.sequence}/{self.frame:05d}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackingResult:
    """The subject's identity, each kept timestep's parameters and every timestep's report."""

    shape: np.ndarray
    """(S,) shared identity coefficients."""
    static_offset: np.ndarray
    """(V, 3) shared per-vertex offsets in metres (zero outside the fitted region)."""
    params: dict[str, TimestepParams]
    """Timestep key ('sequence/frame') -> parameters, for kept timesteps, in input order."""
    reports: tuple[TimestepReport, ...]
    """Every input timestep, in input order."""
    stage_log: tuple[tuple[str, int, float, float], ...]
    """(stage, steps, seconds, final energy) per stage run, refinement included."""


def track(
    *,
    model: FlameModel,
    observations: SubjectObservations,
    config: TrackerConfig,
    progress: Progress | None = None,
) -> TrackingResult:
    """Track `observations` with `model` (which must carry a MediaPipe landmark embedding).

    Timesteps without landmarks in `config.min_views` views are dropped with their reason
    before optimisation; the others are tracked jointly, then residual outliers are dropped.
    With no usable timestep the result keeps the template identity and only the reasons.
    Raises ValueError as `check_trackable` does.
    """
    check_trackable(model=model, config=config)
    previous = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _track(model=model, observations=observations, config=config, progress=progress)
    finally:
        torch.set_num_threads(previous)


def check_trackable(*, model: FlameModel, config: TrackerConfig) -> None:
    """Raise ValueError when `model` cannot be tracked with `config` (no landmark embedding;
    no face region for `point_region='face'`), so a caller can fail before any work."""
    if model.lmk_face_idx is None:
        raise ValueError(
            f"FLAME model {model.source!r} has no MediaPipe landmark embedding; "
            "attach one with FlameModel.with_landmarks(**load_landmark_embedding(path))"
        )
    fitted_region(model, point_region=config.point_region)


def _track(
    *,
    model: FlameModel,
    observations: SubjectObservations,
    config: TrackerConfig,
    progress: Progress | None,
) -> TrackingResult:
    report = progress or (lambda fraction, message: None)
    reasons = {
        t.key: _unusable(t, model=model, min_views=config.min_views) for t in observations.timesteps
    }
    usable = tuple(t for t in observations.timesteps if not reasons[t.key])
    if not usable:
        return _untracked(model, observations, reasons)
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    problem = build_problem(model=model, timesteps=usable, config=config, dtype=dtype)
    variables = initial_variables(problem, config=config)
    log = _run_stages(problem, variables, config=config, report=report, span=(0.0, 0.85))
    keys = problem.keys
    stats = residuals(problem, variables, config=config)
    outliers = _outlier_reasons(stats[0], stats[1], config=config)
    reasons.update(zip(keys, outliers, strict=True))
    if any(outliers):
        keep = [i for i, reason in enumerate(outliers) if not reason]
        problem, variables = select_timesteps(problem, variables, keep=keep)
        last = dataclasses.replace(config.stages[-1], name="refine", steps=config.refine_steps)
        refine = dataclasses.replace(config, stages=(last,))
        log += _run_stages(problem, variables, config=refine, report=report, span=(0.9, 1.0))
        for column, values in zip(stats, residuals(problem, variables, config=config), strict=True):
            column[keep] = values
    report(1.0, f"tracked {len(problem.keys)} of {len(observations.timesteps)} timesteps")
    tracked = dict(zip(keys, zip(*stats, strict=True), strict=True))
    return _result(problem, variables, observations, reasons, tracked, log)


def _unusable(timestep: TimestepObservation, *, model: FlameModel, min_views: int) -> str:
    """Why `timestep` cannot be tracked ('' when it can)."""
    if not timestep.views:
        return "no face landmarks in any view"
    embedded = model.lmk_mediapipe_idx
    views = sum(bool(v.valid[embedded].any()) for v in timestep.views)
    if views < min_views:
        return f"face landmarks in {views} view(s), need at least {min_views}"
    return ""


def _run_stages(
    problem: Problem,
    variables: dict[str, torch.Tensor],
    *,
    config: TrackerConfig,
    report: Progress,
    span: tuple[float, float],
) -> list[tuple[str, int, float, float]]:
    """Run `config.stages` in order, reporting progress within `span`; (name, steps,
    seconds, final energy) of each."""
    log = []
    total = max(1, sum(s.steps for s in config.stages))
    done = 0
    for stage in config.stages:
        start = time.monotonic()

        def step_progress(k: int, stage: StageConfig = stage, done: int = done) -> None:
            fraction = span[0] + (span[1] - span[0]) * (done + k) / total
            report(fraction, f"stage {stage.name}: step {k}/{stage.steps}")

        energy = run_stage(problem, variables, stage=stage, config=config, progress=step_progress)
        log.append((stage.name, stage.steps, time.monotonic() - start, energy))
        done += stage.steps
    return log


def _threshold(values: np.ndarray, *, k: float, floor: float) -> float:
    """median + k * 1.4826 * MAD of the finite `values`, at least `floor`."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.inf
    median = float(np.median(finite))
    mad = float(np.median(np.abs(finite - median)))
    return max(median + k * 1.4826 * mad, floor)


def _outlier_reasons(
    landmark_px: np.ndarray, point_mm: np.ndarray, *, config: TrackerConfig
) -> list[str]:
    """Per timestep, why its residuals make it an outlier ('' when they do not)."""
    k = config.outlier_mad_k
    lmk_limit = _threshold(landmark_px, k=k, floor=config.min_landmark_threshold_px)
    pts_limit = _threshold(point_mm, k=k, floor=config.min_point_threshold_mm)
    reasons = []
    for lmk, pts in zip(landmark_px, point_mm, strict=True):
        parts = []
        if lmk > lmk_limit:
            parts.append(f"landmark residual {lmk:.1f} px > {lmk_limit:.1f} px threshold")
        if pts > pts_limit:
            parts.append(f"point residual {pts:.2f} mm > {pts_limit:.2f} mm threshold")
        reasons.append("; ".join(parts))
    return reasons


def _result(
    problem: Problem,
    variables: dict[str, torch.Tensor],
    observations: SubjectObservations,
    reasons: dict[str, str],
    tracked: dict[str, tuple[float, float, int]],
    log: list[tuple[str, int, float, float]],
) -> TrackingResult:
    """Collect the numbers of a finished optimisation into a `TrackingResult`."""
    values = {name: variables[name].detach().cpu().double().numpy() for name in variables}
    row = {key: i for i, key in enumerate(problem.keys)}
    params = {
        key: TimestepParams(**{name: values[name][i].copy() for name in PER_TIMESTEP})
        for key, i in row.items()
    }
    reports = []
    for t in observations.timesteps:
        lmk, pts, count = tracked.get(t.key, (np.nan, np.nan, 0))
        reports.append(
            TimestepReport(
                sequence=t.sequence,
                frame=t.frame,
                kept=not reasons[t.key],
                reason=reasons[t.key],
                landmark_px=float(lmk),
                point_mm=float(pts),
                num_views=len(t.views),
                num_points=int(count),
            )
        )
    offsets = np.zeros((problem.num_vertices, 3))
    offsets[problem.offset_ids] = values["static_offset"]
    return TrackingResult(
        shape=values["shape"],
        static_offset=offsets,
        params=params,
        reports=tuple(reports),
        stage_log=tuple(log),
    )


def _untracked(
    model: FlameModel, observations: SubjectObservations, reasons: dict[str, str]
) -> TrackingResult:
    """The result when no timestep could be tracked: template identity, only reasons."""
    reports = tuple(
        TimestepReport(
            sequence=t.sequence,
            frame=t.frame,
            kept=False,
            reason=reasons[t.key],
            landmark_px=np.nan,
            point_mm=np.nan,
            num_views=len(t.views),
            num_points=0,
        )
        for t in observations.timesteps
    )
    return TrackingResult(
        shape=np.zeros(model.num_shape),
        static_offset=np.zeros((model.num_vertices, 3)),
        params={},
        reports=reports,
        stage_log=(),
    )


def posed_vertices(
    model: FlameModel, result: TrackingResult, keys: tuple[str, ...] | None = None
) -> np.ndarray:
    """(T, V, 3) full tracked meshes (float64, metres) of `keys` (default: every kept one)."""
    keys = tuple(result.params) if keys is None else keys
    if not keys:
        return np.zeros((0, model.num_vertices, 3))
    stacked = {
        name: torch.tensor(np.stack([getattr(result.params[k], name) for k in keys]))
        for name in PER_TIMESTEP
    }
    layer = FlameLayer(model, torch.float64)
    with torch.no_grad():
        out = layer(
            FlameParams(
                shape=torch.tensor(result.shape),
                static_offset=torch.tensor(result.static_offset),
                **stacked,
            )
        )
    return out.vertices.numpy()


def neutral_vertices(
    model: FlameModel, *, shape: np.ndarray | None, static_offset: np.ndarray | None
) -> np.ndarray:
    """(V, 3) mesh at zero expression and pose (the canonical space), float64 metres; None
    for `shape` / `static_offset` means the template's."""
    params = FlameParams(
        shape=None if shape is None else torch.tensor(shape)[None],
        static_offset=None if static_offset is None else torch.tensor(static_offset)[None],
    )
    with torch.no_grad():
        return FlameLayer(model, torch.float64)(params).vertices[0].numpy()
