"""Eqs. 3-6 against values worked out by hand on 2x2 maps."""

from __future__ import annotations

import math

import pytest
import torch
from fa_scene import one_thread  # noqa: F401 (fixture)

from faceanything.train.losses import LossConfig, face_anything_loss, map_terms

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = LossConfig()


def test_scalar_map_terms_by_hand():
    # E = [[0, 1], [2, (3, invalid)]], W = 2, |Omega| = 3
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    true = torch.ones(1, 2, 2)
    conf = torch.full((1, 2, 2), 2.0)
    valid = torch.tensor([[[True, True], [True, False]]])
    terms = map_terms(pred, true, conf, valid, config=CONFIG)
    assert terms["reg"].item() == pytest.approx(1.0)  # (0 + 1 + 2) / 3
    # (1 * (0 + 1 + 2) * 2 - 3 * 0.2 * log 2) / 3
    assert terms["conf"].item() == pytest.approx(2.0 - 0.2 * math.log(2.0))
    # x: |1 - 0| on row 0 (row 1's pair has an invalid pixel); y: |2 - 0| on column 0
    assert terms["grad"].item() == pytest.approx((1.0 + 2.0) / 3)


def test_vector_map_uses_l1_norm_per_pixel():
    pred = torch.tensor([[[[1.0, -2.0, 0.0], [0.0, 0.0, 0.5]]]])  # [1, 1, 2, 3]
    true = torch.zeros(1, 1, 2, 3)
    conf = torch.tensor([[[1.0, 3.0]]])
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    terms = map_terms(pred, true, conf, valid, config=LossConfig(alpha=0.5, gamma=2.0))
    assert terms["reg"].item() == pytest.approx((3.0 + 0.5) / 2)
    conf_sum = (2 * 3.0 * 1.0 - 0.5 * math.log(1.0)) + (2 * 0.5 * 3.0 - 0.5 * math.log(3.0))
    assert terms["conf"].item() == pytest.approx(conf_sum / 2)
    assert terms["grad"].item() == pytest.approx((1.0 + 2.0 + 0.5) / 2)  # |E(0,1) - E(0,0)|_1


def test_no_valid_pixel_gives_zero_terms():
    terms = map_terms(
        torch.rand(1, 3, 3), torch.rand(1, 3, 3), torch.full((1, 3, 3), 2.0),
        torch.zeros(1, 3, 3, dtype=torch.bool), config=CONFIG,
    )  # fmt: skip
    assert all(v.item() == 0.0 for v in terms.values())


def test_total_weights_canonical_by_lambda():
    B, S, H, W, h, w = 1, 2, 4, 4, 2, 2
    pred = {
        "depth": torch.full((B, S, H, W), 2.0),
        "depth_conf": torch.ones(B, S, H, W),
        "ray": torch.zeros(B, S, h, w, 6),
        "ray_conf": torch.ones(B, S, h, w),
        "canonical": torch.full((B, S, H, W, 3), 0.1),
        "canonical_conf": torch.ones(B, S, H, W),
    }
    batch = {
        "depth": torch.ones(B, S, H, W),
        "depth_valid": torch.ones(B, S, H, W, dtype=torch.bool),
        "ray": torch.ones(B, S, h, w, 6),
        "ray_valid": torch.ones(B, S, h, w, dtype=torch.bool),
        "canonical": torch.zeros(B, S, H, W, 3),
        "canonical_valid": torch.ones(B, S, H, W, dtype=torch.bool),
    }
    out = face_anything_loss(pred, batch, config=CONFIG)
    # constant errors: no gradient term; W = 1: conf = gamma * reg
    assert out["depth_reg"].item() == pytest.approx(1.0)
    assert out["ray_reg"].item() == pytest.approx(6.0)
    assert out["canonical_reg"].item() == pytest.approx(0.3)
    assert out["canonical_grad"].item() == 0.0
    assert out["loss"].item() == pytest.approx(2 * 1.0 + 2 * 6.0 + 5 * 2 * 0.3)
    assert set(out) == {"loss"} | {
        f"{k}_{t}" for k in ("depth", "ray", "canonical") for t in ("reg", "conf", "grad")
    }
