"""The paper's metrics (section 4.2, tables 1-4) as plain functions on plain arrays.

Depth: AbsRel and RMSE after a scale alignment (see `align_scale`). Correspondence: 2D and
3D end-point error and the share of matches within 3/5/10 px (table 2), forward-backward cycle
consistency error CCE (mean, median, share under 2 px; table 3), and the warping photometric
error WPE (L1, gradient, SSIM; table 3) of an image warped by the correspondences.

Conventions: pixels are (x, y) = (column, row) with centres on integers; a dense match map is
(H, W, 2) float, the matched pixel of each pixel of the source view, NaN where there is none
(`faceanything.correspondence.dense_matches` makes one); images are float in [0, 1].
Empty selections give NaN, never an exception.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter

ScaleAlignment = Literal["median", "lstsq", "none"]
THRESHOLDS_PX = (3.0, 5.0, 10.0)
"""Pixel thresholds of table 2."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DepthErrors:
    """Depth errors of one image (or of several aligned together)."""

    abs_rel: float
    """Mean |s d - d*| / d* over valid pixels."""
    rmse: float
    """sqrt(mean (s d - d*)^2) over valid pixels, in the units of the truth (metres)."""
    scale: float
    """The alignment scale s applied to the prediction."""
    pixels: int
    """Valid pixels counted."""


def align_scale(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, *, method: ScaleAlignment
) -> float:
    """Scale s that brings predicted depth `pred` to the truth `gt` (same shapes, any rank,
    e.g. (H, W) for one image or (S, H, W) for one scale per sequence) on `valid` pixels.

    Why: our network, like DA3, is trained on depth normalised so that the mean point norm is
    1, so its depth has no metric scale; the paper's table 1 is "in metric scale" for metric
    methods. "median": s = median(d*) / median(d) (the usual monocular protocol, robust to
    outliers such as background or hair bleeding into the mask; our default). "lstsq":
    s = sum(d d*) / sum(d^2), the scale that minimises the RMSE. "none": s = 1, for metric
    predictions.
    """
    if method == "none":
        return 1.0
    p, g = _valid_pair(pred, gt, valid)
    if not len(p):
        return float("nan")
    if method == "median":
        return float(np.median(g) / np.median(p))
    if method == "lstsq":
        return float(np.dot(p, g) / np.dot(p, p))
    raise ValueError(f"unknown scale alignment {method!r}")


def depth_errors(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    align: ScaleAlignment = "median",
) -> DepthErrors:
    """AbsRel and RMSE of `pred` against `gt` (same shapes) on `valid` pixels (default: finite
    truth > 0 and finite prediction > 0), after `align_scale`."""
    scale = align_scale(pred, gt, valid, method=align)
    p, g = _valid_pair(pred, gt, valid)
    if not len(p):
        return DepthErrors(abs_rel=float("nan"), rmse=float("nan"), scale=scale, pixels=0)
    p = p * scale
    return DepthErrors(
        abs_rel=float(np.mean(np.abs(p - g) / g)),
        rmse=float(np.sqrt(np.mean((p - g) ** 2))),
        scale=scale,
        pixels=len(p),
    )


def _valid_pair(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and truth {gt.shape} differ in shape")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(pred) & np.isfinite(gt) & (gt > 0) & (pred > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    return pred[ok], gt[ok]


def end_point_errors(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """Euclidean errors (M,) of predicted points against the truth, (..., D) each (D = 2 for
    pixels, 3 for 3D points), over entries that are `valid` (...) and finite in both."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and truth {gt.shape} differ in shape")
    ok = np.isfinite(pred).all(axis=-1) & np.isfinite(gt).all(axis=-1)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    return np.linalg.norm(pred[ok] - gt[ok], axis=-1)


def epe_summary(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    thresholds: tuple[float, ...] = THRESHOLDS_PX,
) -> dict[str, float]:
    """Table 2's columns for 2D matches (..., 2) in pixels: "epe" (mean end-point error) and
    "<3px", "<5px", "<10px" (share of errors below each threshold), plus "count"."""
    errors = end_point_errors(pred, gt, valid)
    out = {"epe": _mean(errors)}
    for t in thresholds:
        out[f"<{t:g}px"] = _mean(errors < t) if len(errors) else float("nan")
    out["count"] = float(len(errors))
    return out


def cycle_errors(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """(H, W) forward-backward cycle error in pixels: a pixel p of view i goes to q = F(p) in
    view j and back to B(q) in view i; the error is |B(q) - p|. `forward` (H, W, 2) is i -> j,
    `backward` (H', W', 2) is j -> i, both dense match maps. NaN where either step has no match
    or q falls outside view j."""
    forward, backward = np.asarray(forward, np.float64), np.asarray(backward, np.float64)
    h, w = forward.shape[:2]
    back = sample_nearest(backward, forward)
    rows, cols = np.mgrid[0:h, 0:w]
    return np.linalg.norm(back - np.stack([cols, rows], axis=-1), axis=-1)


def cce_summary(
    forward: np.ndarray,
    backward: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    threshold: float = 2.0,
) -> dict[str, float]:
    """Table 3's CCE columns over `valid` (H, W) pixels of view i where the cycle is defined:
    "cce_mean", "cce_median", "cce_<2px" (share under `threshold`), plus "count"."""
    errors = cycle_errors(forward, backward)
    ok = np.isfinite(errors) if valid is None else np.isfinite(errors) & valid
    e = errors[ok]
    return {
        "cce_mean": _mean(e),
        "cce_median": float(np.median(e)) if len(e) else float("nan"),
        f"cce_<{threshold:g}px": _mean(e < threshold) if len(e) else float("nan"),
        "count": float(len(e)),
    }


def sample_nearest(values: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Values (H, W, ...) at the nearest pixel of each of (..., 2) (x, y) positions; NaN where
    a position is NaN or outside the map."""
    values = np.asarray(values)
    h, w = values.shape[:2]
    with np.errstate(invalid="ignore"):
        x, y = np.rint(pixels[..., 0]), np.rint(pixels[..., 1])
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    out = np.full((*pixels.shape[:-1], *values.shape[2:]), np.nan)
    out[inside] = values[y[inside].astype(np.int64), x[inside].astype(np.int64)]
    return out


def warp(image_j: np.ndarray, matches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """View j's image (H', W', C) seen through the matches (H, W, 2) of view i's pixels: the
    warped image (H, W, C) (nearest pixel; eq. 2's matches are pixels) and where it is
    defined (H, W) bool. Undefined pixels hold NaN."""
    warped = sample_nearest(np.asarray(image_j, np.float64), matches)
    return warped, np.isfinite(warped).reshape(*warped.shape[:2], -1).all(axis=-1)


def ssim_map(
    a: np.ndarray, b: np.ndarray, *, sigma: float = 1.5, data_range: float = 1.0
) -> np.ndarray:
    """(H, W) structural similarity of two (H, W) or (H, W, C) images (Wang et al. 2004:
    Gaussian window sigma 1.5, K1 0.01, K2 0.03), averaged over channels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda x: gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect")  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.mean(axis=-1)


def wpe(
    image_i: np.ndarray,
    image_j: np.ndarray,
    matches: np.ndarray,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """Table 3's WPE columns: view j's image (H', W', C) warped into view i by the matches
    (H, W, 2) of view i's pixels, compared with view i's image (H, W, C) (floats in [0, 1]) on
    `valid` (H, W) pixels where the warp is defined.

    "wpe_l1": mean absolute difference; "wpe_grad": mean |d/dx(W - I)| + |d/dy(W - I)| with
    forward differences where both pixels count; "wpe_ssim": mean SSIM (undefined pixels take
    view i's own values before filtering so they do not drag their neighbours); "count".
    """
    image_i = np.asarray(image_i, np.float64)
    warped, ok = warp(image_j, matches)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    if warped.ndim == 2:
        warped, image_i = warped[..., None], image_i[..., None]
    if not ok.any():
        nan = float("nan")
        return {"wpe_l1": nan, "wpe_grad": nan, "wpe_ssim": nan, "count": 0.0}
    filled = np.where(ok[..., None], warped, image_i)
    diff = filled - image_i
    gx = np.abs(diff[:, 1:] - diff[:, :-1]).mean(axis=-1)
    gy = np.abs(diff[1:] - diff[:-1]).mean(axis=-1)
    ok_x, ok_y = ok[:, 1:] & ok[:, :-1], ok[1:] & ok[:-1]
    grad = _mean(gx[ok_x]) + _mean(gy[ok_y]) if ok_x.any() and ok_y.any() else float("nan")
    return {
        "wpe_l1": float(np.abs(diff).mean(axis=-1)[ok].mean()),
        "wpe_grad": grad,
        "wpe_ssim": float(ssim_map(filled, image_i)[ok].mean()),
        "count": float(ok.sum()),
    }


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if np.size(x) else float("nan")


def unproject(pixels: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame 3D points (..., 3) (OpenCV axes, depth's units) of (..., 2) (x, y) pixels
    with their nearest pixel's z-depth from `depth` (H, W) and intrinsics `K` (3, 3); NaN where
    a pixel is NaN, outside, or has no depth (for 3D EPE, table 4)."""
    pixels = np.asarray(pixels, np.float64)
    z = sample_nearest(np.asarray(depth, np.float64), pixels)
    x = (np.rint(pixels[..., 0]) - K[0, 2]) / K[0, 0]
    y = (np.rint(pixels[..., 1]) - K[1, 2]) / K[1, 1]
    return np.stack([x * z, y * z, z], axis=-1)
