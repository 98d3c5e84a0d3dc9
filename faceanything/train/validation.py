"""What training checks on held-out batches: losses, two figures beside trivial baselines, and a
picture.

- Depth AbsRel, prediction scaled per image by median(true) / median(predicted) over valid
  pixels (the network's depth is in a normalised scale), beside the constant predictor (each
  image's true median everywhere: the best constant under that alignment, near enough).
- Canonical-NN correspondence EPE (eq. 2) on temporal sequences (one camera, S timesteps): each
  valid pixel p of view 0 is matched in view j by nearest neighbour of C_0(p) among view j's
  pixels, on predicted maps and on true maps; EPE is the pixel distance of the two matches,
  beside zero motion (p itself). Candidates Omega_j are the true canonical mask of view j, and
  pixels whose true match lies more than `max_true_distance` away (occluded) are left out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib
import numpy as np
import torch
from torch import Tensor

from faceanything.correspondence import CanonicalIndex
from faceanything.metrics import depth_errors

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclasses.dataclass(frozen=True, kw_only=True)
class Figures:
    """Held-out figures of one evaluation."""

    abs_rel: float
    """Depth AbsRel of the prediction (median-aligned)."""
    abs_rel_constant: float
    """Depth AbsRel of the constant-depth predictor."""
    epe: float
    """Canonical-NN correspondence end-point error (px) of the prediction."""
    epe_zero: float
    """End-point error (px) of zero motion."""


def depth_abs_rel(pred: Tensor, true: Tensor, valid: Tensor) -> tuple[list[float], list[float]]:
    """Per-image AbsRel of median-aligned predictions and of the constant predictor, over
    [N, H, W] maps (`faceanything.metrics.depth_errors`)."""
    ours, constant = [], []
    for p, t, v in zip(pred.float().numpy(), true.float().numpy(), valid.numpy(), strict=True):
        if v.sum() < 10:
            continue
        ours.append(depth_errors(p, t, v).abs_rel)
        constant.append(depth_errors(np.full_like(t, np.median(t[v])), t, v, align="none").abs_rel)
    return ours, constant


def nn_matches(
    source: np.ndarray, target: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest pixel (x, y) [N, 2] in `target` [H, W, 3] (within `mask`) of each canonical
    point of `source` [N, 3], and the canonical distance [N] (eq. 2, `CanonicalIndex`)."""
    pixels, distance, _ = CanonicalIndex(target, mask).query(source)
    return pixels, distance


def correspondence_epe(
    pred: Tensor,
    true: Tensor,
    valid: Tensor,
    K: Tensor,
    *,
    max_true_distance: float = 0.005,
) -> tuple[list[float], list[float]]:
    """EPE (px) of predicted and of zero-motion matches from view 0 to each later view of
    canonical maps [S, H, W, 3] with true validity [S, H, W] (module docstring).

    The views are one camera's, each cropped on its own: pixels of view j are brought into
    view 0's crop by K_0 K_j^-1 [S, 3, 3] so that zero motion means the same camera pixel."""
    to_first = (K[0].double() @ torch.linalg.inv(K.double())).numpy()  # [S, 3, 3]
    pred, true, valid = pred.float().numpy(), true.float().numpy(), valid.numpy()
    rows, cols = np.nonzero(valid[0])
    if len(rows) < 10:
        return [], []
    pixels = np.stack([cols, rows], axis=1)
    ours, zero = [], []
    for j in range(1, len(pred)):
        if valid[j].sum() < 10:
            continue
        truth, distance = nn_matches(true[0][rows, cols], true[j], valid[j])
        keep = distance < max_true_distance
        if not keep.any():
            continue
        guess, _ = nn_matches(pred[0][rows, cols], pred[j], valid[j])
        truth, guess = _moved(truth, to_first[j]), _moved(guess, to_first[j])
        ours.append(np.linalg.norm(guess[keep] - truth[keep], axis=1).mean())
        zero.append(np.linalg.norm(pixels[keep] - truth[keep], axis=1).mean())
    return ours, zero


def _moved(pixels: np.ndarray, A: np.ndarray) -> np.ndarray:
    """(N, 2) pixels through a 3x3 affine map."""
    return pixels @ A[:2, :2].T + A[:2, 2]


def figures(outputs: list[dict[str, Tensor]], batches: list[dict[str, object]]) -> Figures:
    """Figures over evaluation batches and the network's outputs for them."""
    abs_rel, abs_const, epe, epe_zero = [], [], [], []
    for out, batch in zip(outputs, batches, strict=True):
        a, c = depth_abs_rel(
            out["depth"].flatten(0, 1),
            batch["depth"].flatten(0, 1),
            batch["depth_valid"].flatten(0, 1),
        )
        abs_rel += a
        abs_const += c
        if batch["strategy"] == "temporal":
            for b in range(len(batch["keys"])):
                e, z = correspondence_epe(
                    out["canonical"][b],
                    batch["canonical"][b],
                    batch["canonical_valid"][b],
                    batch["K"][b],
                )
                epe += e
                epe_zero += z

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    return Figures(
        abs_rel=mean(abs_rel),
        abs_rel_constant=mean(abs_const),
        epe=mean(epe),
        epe_zero=mean(epe_zero),
    )


def canonical_colours(
    canonical: Tensor, valid: Tensor | None = None, span: float = 0.3
) -> np.ndarray:
    """[H, W, 3] canonical metres (centred) as RGB in [0, 1] (black where not valid)."""
    rgb = (canonical.float().numpy() / span + 0.5).clip(0, 1)
    if valid is not None:
        rgb = rgb * valid.numpy()[..., None]
    return rgb


def save_picture(
    path: Path, batch: dict[str, object], out: dict[str, Tensor], *, rows: int = 4
) -> Path:
    """PNG of the first images of a batch: input, predicted and true depth (same colour scale,
    prediction median-aligned), predicted (where the truth is valid) and true canonical map."""
    images = batch["images"].flatten(0, 1)
    count = min(rows, len(images))
    fig, axes = plt.subplots(count, 5, figsize=(12, 2.6 * count), squeeze=False)
    titles = ("input", "depth (pred)", "depth (true)", "canonical (pred)", "canonical (true)")
    depth_true, depth_valid = batch["depth"].flatten(0, 1), batch["depth_valid"].flatten(0, 1)
    depth_pred = out["depth"].flatten(0, 1).float()
    canon_true, canon_valid = (
        batch["canonical"].flatten(0, 1),
        batch["canonical_valid"].flatten(0, 1),
    )
    canon_pred = out["canonical"].flatten(0, 1)
    for i in range(count):
        valid = depth_valid[i]
        truth = torch.where(valid, depth_true[i], torch.nan)
        pred = depth_pred[i]
        if valid.sum() > 0:
            pred = pred * depth_true[i][valid].median() / pred[valid].median()
            low, high = depth_true[i][valid].min().item(), depth_true[i][valid].max().item()
        else:
            low, high = pred.min().item(), pred.max().item()
        panels = (
            images[i].permute(1, 2, 0).numpy(),
            torch.where(valid, pred, torch.nan).numpy(),
            truth.numpy(),
            canonical_colours(canon_pred[i], canon_valid[i]),
            canonical_colours(canon_true[i], canon_valid[i]),
        )
        for j, panel in enumerate(panels):
            kwargs = {"vmin": low, "vmax": high, "cmap": "turbo"} if j in (1, 2) else {}
            axes[i, j].imshow(panel, **kwargs)
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
