"""The training loss, paper eqs. 3-6, on valid pixels, each term kept for logging.

For a prediction X in {D (depth), R (ray map), C (canonical map)} with truth X*, confidence W
and valid pixels Omega (|Omega| of them):

    reg  = 1/|Omega| sum_p |X(p) - X*(p)|                                        (3)
    conf = 1/|Omega| sum_p (gamma |X(p) - X*(p)| W(p) - alpha log W(p))          (4)
    grad = 1/|Omega| sum_p (|grad_x E(p)| + |grad_y E(p)|),  E = X - X*           (5)
    L    = sum_{X in D, R} (reg + conf + grad) + lambda_C (reg + conf + grad)_C   (6)

|v| of a vector-valued pixel (ray 6, canonical 3) is its L1 norm (sum over channels), so that
the confidence weighs one per-pixel error. The gradient is a forward difference, counted only
where both pixels are valid (a difference across the mask edge would supervise the invalid
side); the sum is still divided by |Omega| as eq. 5 writes.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Weights of eqs. 4 and 6."""

    alpha: float = 0.2
    """Weight of the -log W confidence regulariser (eq. 4)."""
    gamma: float = 1.0
    """Weight of the confidence-weighted error (eq. 4)."""
    lambda_canonical: float = 5.0
    """Weight of the canonical-map terms (eq. 6)."""
    depth_weight: float = 1.0
    """Weight of the depth terms in eq. 6 (1 in the paper; an ablation)."""


TERMS = ("reg", "conf", "grad")
KINDS = ("depth", "ray", "canonical")
"""Map kinds: prediction keys, and truth keys of a batch (see `faceanything.data`)."""


def map_terms(
    pred: Tensor, true: Tensor, conf: Tensor, valid: Tensor, *, config: LossConfig
) -> dict[str, Tensor]:
    """reg, conf and grad terms (eqs. 3-5) of one map kind.

    Args:
        pred, true: [..., H, W] (scalar maps) or [..., H, W, C] (vector maps).
        conf: [..., H, W] predicted confidence W > 0.
        valid: [..., H, W] bool, the pixels Omega.
    """
    if pred.dim() == conf.dim():  # scalar map: give it a channel axis
        pred, true = pred[..., None], true[..., None]
    valid = valid.bool()
    count = valid.sum().clamp(min=1)
    error = torch.where(valid[..., None], pred.float() - true.float(), 0.0)  # E, 0 off Omega
    absolute = error.abs().sum(-1)  # [..., H, W]
    reg = absolute.sum() / count
    weight = conf.float()
    confidence = (
        torch.where(
            valid, config.gamma * absolute * weight - config.alpha * torch.log(weight), 0.0
        ).sum()
        / count
    )
    dx = (error[..., :, 1:, :] - error[..., :, :-1, :]).abs().sum(-1)
    dy = (error[..., 1:, :, :] - error[..., :-1, :, :]).abs().sum(-1)
    both_x = valid[..., :, 1:] & valid[..., :, :-1]
    both_y = valid[..., 1:, :] & valid[..., :-1, :]
    grad = ((dx * both_x).sum() + (dy * both_y).sum()) / count
    return {"reg": reg, "conf": confidence, "grad": grad}


def face_anything_loss(
    pred: dict[str, Tensor], batch: dict[str, Tensor], *, config: LossConfig | None = None
) -> dict[str, Tensor]:
    """Eq. 6 ("loss") and its nine terms ("depth_reg", ..., "canonical_grad") of a forward's
    output against a batch's targets `depth`, `ray`, `canonical` with `*_valid` masks."""
    config = config or LossConfig()
    terms: dict[str, Tensor] = {}
    for key in KINDS:
        found = map_terms(
            pred[key], batch[key], pred[f"{key}_conf"], batch[f"{key}_valid"], config=config
        )
        terms.update({f"{key}_{name}": value for name, value in found.items()})
    depth = sum(terms[f"depth_{t}"] for t in TERMS)
    ray = sum(terms[f"ray_{t}"] for t in TERMS)
    canonical = sum(terms[f"canonical_{t}"] for t in TERMS)
    loss = config.depth_weight * depth + ray + config.lambda_canonical * canonical
    return {"loss": loss, **terms}


def monocular_depth_loss(pred: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Stage 1 (paper 3.2): the masked L1 depth regression, eq. 3's term on the valid
    (foreground) pixels, as "loss" and "depth_reg"."""
    valid = batch["depth_valid"].bool()
    error = torch.where(valid, pred["depth"].float() - batch["depth"].float(), 0.0).abs()
    reg = error.sum() / valid.sum().clamp(min=1)
    return {"loss": reg, "depth_reg": reg}
