"""The paper's metrics against hand-computed values, and the fast eq. 2 against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.data import astronaut

from faceanything.correspondence import (
    CanonicalIndex,
    IndexConfig,
    build_indices,
    confident_pixels,
    dense_matches,
    match_indices,
    match_pairs,
    track_points,
)
from faceanything.metrics import (
    align_scale,
    cce_summary,
    cycle_errors,
    depth_errors,
    epe_summary,
    ssim_map,
    unproject,
    wpe,
)


def identity_matches(h: int, w: int, shift: tuple[float, float] = (0, 0)) -> np.ndarray:
    rows, cols = np.mgrid[0:h, 0:w]
    return np.stack([cols + shift[0], rows + shift[1]], axis=-1).astype(np.float64)


def test_depth_errors_by_hand():
    gt = np.array([[1.0, 2.0], [4.0, np.nan]])
    exact = depth_errors(gt * 0.5, gt, align="median")
    assert exact.scale == pytest.approx(2.0) and exact.abs_rel == pytest.approx(0.0)
    assert exact.rmse == pytest.approx(0.0) and exact.pixels == 3
    raw = depth_errors(gt * 0.5, gt, align="none")
    # |0.5-1|/1, |1-2|/2, |2-4|/4 -> 0.5 each; squared errors 0.25, 1, 4 -> mean 1.75
    assert raw.abs_rel == pytest.approx(0.5) and raw.rmse == pytest.approx(np.sqrt(1.75))
    pred = np.array([[1.0, 1.0], [1.0, 7.0]])
    # medians 2 / 1 -> s = 2; errors |2-1|/1, 0, |2-4|/4 -> (1 + 0 + 0.5) / 3
    med = depth_errors(pred, gt, align="median")
    assert med.scale == pytest.approx(2.0) and med.abs_rel == pytest.approx(0.5)
    assert med.rmse == pytest.approx(np.sqrt((1 + 0 + 4) / 3))
    # least squares: s = (1 + 2 + 4) / 3 minimises sum (s p - g)^2 with p = 1
    assert align_scale(pred, gt, method="lstsq") == pytest.approx(7 / 3)
    masked = depth_errors(pred, gt, np.array([[True, False], [False, False]]), align="none")
    assert masked.abs_rel == pytest.approx(0.0) and masked.pixels == 1
    assert np.isnan(depth_errors(pred, gt, np.zeros((2, 2), bool)).abs_rel)


def test_epe_of_a_known_shift():
    truth = identity_matches(20, 30)
    pred = truth + [3.0, 4.0]  # 5 px everywhere
    s = epe_summary(pred, truth)
    assert s["epe"] == pytest.approx(5.0) and s["count"] == 600
    assert (s["<3px"], s["<5px"], s["<10px"]) == (0.0, 0.0, 1.0)
    pred[:10] = truth[:10] + [1.0, 0.0]
    pred[0, 0] = np.nan  # unmatched pixels are left out
    s = epe_summary(pred, truth)
    assert s["count"] == 599 and s["<3px"] == pytest.approx(299 / 599)
    assert s["epe"] == pytest.approx((299 * 1 + 300 * 5) / 599)
    p3 = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert epe_summary(p3 + [0, 0, 0.002], p3)["epe"] == pytest.approx(0.002)


def test_cycle_consistency_by_hand():
    h, w = 10, 12
    forward = identity_matches(h, w, (2, 1))  # i -> j moves by (2, 1)
    backward = identity_matches(h, w, (-2, -1))  # and back exactly
    errors = cycle_errors(forward, backward)
    assert np.all(errors[: h - 1, : w - 2] == 0) and np.isnan(errors[h - 1]).all()
    s = cce_summary(forward, backward)
    assert (s["cce_mean"], s["cce_median"], s["cce_<2px"]) == (0.0, 0.0, 1.0)
    assert s["count"] == (h - 1) * (w - 2)
    backward[..., 0] -= 3.0  # the way back overshoots by 3 px
    s = cce_summary(forward, backward)
    assert s["cce_mean"] == pytest.approx(3.0) and s["cce_<2px"] == 0.0


def test_wpe_identical_and_shifted_images():
    image = astronaut()[100:200, 150:250].astype(np.float64) / 255.0
    s = wpe(image, image, identity_matches(100, 100))
    assert s["wpe_l1"] == 0.0 and s["wpe_grad"] == 0.0 and s["wpe_ssim"] == pytest.approx(1.0)
    assert ssim_map(image, image) == pytest.approx(np.ones((100, 100)))
    moved = np.roll(image, (4, 3), axis=(0, 1))  # image j is image i moved by (3, 4) px
    good = wpe(image, moved, identity_matches(100, 100, (3, 4)))
    assert good["wpe_l1"] == 0.0 and good["wpe_ssim"] == pytest.approx(1.0)
    assert good["count"] == 96 * 97
    bad = wpe(image, moved, identity_matches(100, 100))
    assert bad["wpe_l1"] > 0.02 and bad["wpe_grad"] > 0.01 and bad["wpe_ssim"] < 0.9
    flat = np.full((8, 8), 0.25)  # hand value: L1 of 0.25 against 0.5
    half = wpe(flat, flat * 2, identity_matches(8, 8))
    assert half["wpe_l1"] == pytest.approx(0.25) and half["wpe_grad"] == pytest.approx(0.0)


def test_unproject_a_pinhole():
    K = np.array([[100.0, 0, 10], [0, 100.0, 20], [0, 0, 1]])
    depth = np.full((40, 30), 2.0)
    points = unproject(np.array([[10.0, 20.0], [60.0, 20.0], [15.0, 25.0]]), depth, K)
    assert np.allclose(points[0], [0, 0, 2]) and np.isnan(points[1]).all()
    assert np.allclose(points[2], [0.1, 0.1, 2])


def smooth_head(n: int, *, shift=(0.0, 0.0), turn: float = 0.0) -> np.ndarray:
    """(n, n, 3) canonical map of a half ellipsoid (metres) seen from the front, NaN off it."""
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float64)
    u = (cols - n / 2 - shift[0]) / (0.42 * n)
    v = (rows - n / 2 - shift[1]) / (0.45 * n)
    r2 = u * u + v * v
    z = np.sqrt(np.clip(1 - r2, 0, None))
    c, s = np.cos(turn), np.sin(turn)
    out = np.stack([0.09 * (c * u + s * z), -0.12 * v, 0.1 * (c * z - s * u)], axis=-1)
    out[r2 >= 1] = np.nan
    return out


def brute_force(points: np.ndarray, canonical: np.ndarray, valid: np.ndarray):
    rows, cols = np.nonzero(valid)
    d = np.linalg.norm(points[:, None] - canonical[rows, cols][None], axis=-1)
    best = d.argmin(axis=1)
    return np.stack([cols[best], rows[best]], axis=1), d.min(axis=1)


def test_fast_correspondence_equals_brute_force():
    rng = np.random.default_rng(0)
    source = smooth_head(40, shift=(2, -1), turn=0.1) + rng.normal(0, 2e-4, (40, 40, 3))
    target = smooth_head(40)
    confidence = rng.uniform(1, 3, (40, 40))
    config = IndexConfig(confidence_quantile=0.3, stride=2)
    index = CanonicalIndex(target, confidence=confidence, config=config)
    valid = confident_pixels(target, confidence=confidence, config=config)
    assert len(index) == valid.sum() and valid[1::2].sum() == 0
    grid = np.isfinite(target[..., 0]) & (np.indices((40, 40)) % 2 == 0).all(axis=0)
    keep = grid & (confidence >= np.quantile(confidence[grid], 0.3))  # the confident 70 %
    assert np.array_equal(valid, keep) and 0.69 < keep.sum() / grid.sum() < 0.71
    src = CanonicalIndex(source)
    matches = match_indices(src, index, workers=2)
    expected, distance = brute_force(src.points, target, valid)
    assert np.array_equal(matches.target, expected)
    assert np.allclose(matches.distance, distance) and matches.found.all()
    # the same through the threaded helpers, and a distance limit
    indices = build_indices(
        np.stack([target, target]), confidence=np.stack([confidence] * 2), config=config, workers=2
    )
    pair = match_pairs([src, *indices], [(0, 1), (0, 2)], workers=2)
    assert all(np.array_equal(m.target, expected) for m in pair)
    tracks = track_points(src.points[:50], indices, max_distance=0.004, workers=2)
    assert tracks.pixels.shape == (2, 50, 2)
    assert np.array_equal(tracks.found[0], distance[:50] < 0.004)
    assert np.array_equal(tracks.pixels[1][tracks.found[1]], expected[:50][tracks.found[1]])
    dense = dense_matches(matches, (40, 40))
    x, y = src.pixels[0]
    assert np.array_equal(dense[y, x], expected[0]) and np.isnan(dense[0, 0]).all()
