"""Colour correction against colour-science's numbers and against a known colour cast."""

import numpy as np
import pytest

from tasks.formats.color import (
    CHEUNG2004_TERMS,
    apply_color_correction,
    augment_cheung2004,
    fit_color_correction,
    linear_to_srgb,
    srgb_to_linear,
)

PIXELS = np.array([[[12, 200, 90], [255, 128, 0], [40, 40, 40], [230, 180, 160]]], np.uint8)


@pytest.fixture
def image() -> np.ndarray:
    """A smooth 64x48 sRGB test image covering dark to bright colours."""
    y, x = np.mgrid[0:64, 0:48] / np.array([63.0, 47.0])[:, None, None]
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x * y)], axis=-1)
    return np.rint(rgb * 255).astype(np.uint8)


def test_identity_matrix_leaves_image_unchanged(image: np.ndarray) -> None:
    assert np.array_equal(apply_color_correction(image, np.eye(3)), image)
    for terms in (4, 8, 22):  # identity on the linear terms, zero on the others
        matrix = np.zeros((3, terms))
        matrix[:, :3] = np.eye(3)
        assert np.array_equal(apply_color_correction(image, matrix), image)


@pytest.mark.parametrize("terms", CHEUNG2004_TERMS)
def test_augmented_terms_have_right_columns(terms: int) -> None:
    rgb = np.array([[0.2, 0.5, 0.8], [1.0, 1.0, 1.0]])
    out = augment_cheung2004(rgb, terms=terms)
    assert out.shape == (2, terms)
    assert np.allclose(out[:, :3], rgb)  # every expansion starts with R, G, B
    assert np.allclose(out[1], 1.0)  # all monomials of 1 are 1


def test_augmented_terms_follow_colour_science_order() -> None:
    r, g, b = 0.2, 0.5, 0.8
    assert np.allclose(
        augment_cheung2004(np.array([[r, g, b]]), terms=5), [[r, g, b, r * g * b, 1]]
    )
    expected_10 = [r, g, b, r * g, r * b, g * b, r * r, g * g, b * b, 1]
    assert np.allclose(augment_cheung2004(np.array([[r, g, b]]), terms=10), [expected_10])
    out_22 = augment_cheung2004(np.array([[r, g, b]]), terms=22)[0]
    assert np.allclose(
        out_22[10:16], [r * r * g, g * g * b, b * b * r, r * r * b, g * g * r, b * b * g]
    )
    assert np.allclose(out_22[19:], [r * r * g * b, r * g * g * b, r * g * b * b])


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        (
            [[0.9, 0.1, 0.0], [0.05, 1.1, -0.05], [0.0, -0.1, 1.2]],
            [[[70, 208, 72], [246, 146, 0], [40, 42, 42], [226, 191, 165]]],
        ),
        (
            [
                [1.05, 0.02, -0.03, 0.10, -0.05, 0.00, 0.20, 0.01],
                [0.01, 0.95, 0.04, -0.10, 0.00, 0.05, -0.10, 0.00],
                [-0.02, 0.03, 1.10, 0.00, 0.08, -0.06, 0.00, -0.01],
            ],
            [[[41, 197, 96], [255, 122, 0], [50, 40, 31], [242, 172, 167]]],
        ),
    ],
)
def test_matches_colour_science(matrix: list, expected: list) -> None:
    """Expected values: colour-science 0.4.7 cctf_decoding ->
    apply_matrix_colour_correction_Cheung2004 -> cctf_encoding, clipped and rounded."""
    assert apply_color_correction(PIXELS, np.array(matrix)).tolist() == expected


@pytest.mark.parametrize("terms", [3, 10])
def test_fitted_matrix_undoes_colour_cast(image: np.ndarray, terms: int) -> None:
    cast = np.array([[0.85, 0.10, 0.00], [0.05, 0.75, 0.05], [0.00, 0.10, 0.65]])  # no clipping
    cast_image = apply_color_correction(image, cast)
    assert np.abs(cast_image.astype(int) - image).mean() > 10
    matrix = fit_color_correction(source_rgb=cast_image, target_rgb=image, terms=terms)
    assert matrix.shape == (3, terms)
    restored = apply_color_correction(cast_image, matrix)
    assert np.abs(restored.astype(int) - image).mean() < 1.0


def test_srgb_round_trip() -> None:
    x = np.linspace(0, 1, 1001)
    assert np.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    assert srgb_to_linear(np.array([0.04045]))[0] == pytest.approx(0.04045 / 12.92)


def test_bad_inputs_are_rejected(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="not 6"):
        apply_color_correction(image, np.zeros((3, 6)))
    with pytest.raises(ValueError, match=r"\(3, terms\)"):
        apply_color_correction(image, np.eye(4))
    with pytest.raises(ValueError, match="uint8"):
        apply_color_correction(image.astype(np.float32), np.eye(3))
    with pytest.raises(ValueError, match="not 6"):
        augment_cheung2004(np.zeros((1, 3)), terms=6)
