"""NeRSemble's per-camera colour correction, as the official kit applies it with colour-science.

The kit decodes sRGB to linear, expands each pixel into the polynomial terms of Cheung et
al. (2004) (colour-science's `matrix_augmented_Cheung2004`; the number of terms is the
matrix's column count), multiplies by the (3, terms) matrix with one row per output channel,
encodes back to sRGB and clips. This module reimplements that without colour-science.
One difference: the kit truncates to uint8, we round, so an identity matrix is exact.
"""

from __future__ import annotations

import numpy as np

_TERMS_TEXT = {
    3: "R G B",
    4: "R G B 1",
    5: "R G B RGB 1",
    7: "R G B RG RB GB 1",
    8: "R G B RG RB GB RGB 1",
    10: "R G B RG RB GB RR GG BB 1",
    11: "R G B RG RB GB RR GG BB RGB 1",
    14: "R G B RG RB GB RR GG BB RGB RRR GGG BBB 1",
    16: "R G B RG RB GB RR GG BB RGB RRG GGB BBR RRR GGG BBB",
    17: "R G B RG RB GB RR GG BB RGB RRG GGB BBR RRR GGG BBB 1",
    19: "R G B RG RB GB RR GG BB RGB RRG GGB BBR RRB GGR BBG RRR GGG BBB",
    20: "R G B RG RB GB RR GG BB RGB RRG GGB BBR RRB GGR BBG RRR GGG BBB 1",
    22: "R G B RG RB GB RR GG BB RGB RRG GGB BBR RRB GGR BBG RRR GGG BBB RRGB RGGB RGBB",
    35: "R G B RG RB GB RR GG BB RGB RRG GGB BBR RRB GGR BBG RRR GGG BBB "
    "RRRG RRRB GGGR GGGB BBBR BBBG RRGB RGGB RGBB RRGG RRBB GGBB RRRR GGGG BBBB 1",
}
"""Cheung 2004 expansions by term count: each word is a product of channels, '1' a constant."""

CHEUNG2004_TERMS = tuple(_TERMS_TEXT)
"""Term counts colour-science's `matrix_augmented_Cheung2004` defines."""

_EXPONENTS = {
    n: np.array([[word.count(c) for c in "RGB"] for word in text.split()], dtype=np.int64)
    for n, text in _TERMS_TEXT.items()
}
"""Term count -> (terms, 3) exponents of R, G, B in each term."""


def _check_terms(terms: int) -> None:
    if terms not in _EXPONENTS:
        raise ValueError(f"Cheung 2004 defines {CHEUNG2004_TERMS} terms, not {terms}")


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding of values in [0, 1] (colour-science's `cctf_decoding`)."""
    srgb = np.asarray(srgb, dtype=np.float64)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding of linear values, clipped to [0, 1] first."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


_SRGB_UINT8_TO_LINEAR = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)
"""Linear value of each uint8 sRGB code: decoding an image is one table lookup."""


def augment_cheung2004(rgb: np.ndarray, *, terms: int) -> np.ndarray:
    """(N, 3) linear RGB -> (N, terms) Cheung 2004 polynomial terms, in colour-science's order."""
    _check_terms(terms)
    rgb = np.asarray(rgb)
    out = np.empty((rgb.shape[0], terms), dtype=rgb.dtype if rgb.dtype.kind == "f" else float)
    for k, exponents in enumerate(_EXPONENTS[terms]):
        column = np.ones(rgb.shape[0], dtype=out.dtype)
        for c, e in enumerate(exponents):
            for _ in range(e):
                column *= rgb[:, c]
        out[:, k] = column
    return out


def validate_color_matrix(matrix: np.ndarray) -> np.ndarray:
    """The matrix as float64 (3, terms), or ValueError if it is not a usable Cheung 2004 matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != 3:
        raise ValueError(f"colour correction matrix must be (3, terms), got {matrix.shape}")
    _check_terms(matrix.shape[1])
    if not np.all(np.isfinite(matrix)):
        raise ValueError("colour correction matrix has non-finite entries")
    return matrix


def apply_color_correction(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Colour-correct an (H, W, 3) uint8 sRGB image with a (3, terms) matrix; returns uint8.

    corrected_linear = augment(linear) @ matrix.T per pixel, as colour-science's
    `apply_matrix_colour_correction_Cheung2004` does (a row of `matrix` per output channel).
    """
    matrix = validate_color_matrix(matrix)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    linear = _SRGB_UINT8_TO_LINEAR[image.reshape(-1, 3)]
    terms = augment_cheung2004(linear, terms=matrix.shape[1])
    corrected = terms @ matrix.T.astype(np.float32)
    srgb = linear_to_srgb(corrected.astype(np.float32))
    return np.rint(srgb * 255.0).astype(np.uint8).reshape(image.shape)


def fit_color_correction(
    *, source_rgb: np.ndarray, target_rgb: np.ndarray, terms: int = 3
) -> np.ndarray:
    """Least-squares (3, terms) matrix that maps `source_rgb` colours onto `target_rgb`.

    Both are uint8 sRGB colours of matching pixels, shape (..., 3); the fit is in linear RGB
    like the correction itself (colour-science's `matrix_colour_correction_Cheung2004`).
    Used to make matrices that undo a simulated camera colour cast.
    """
    _check_terms(terms)
    source = _SRGB_UINT8_TO_LINEAR[np.asarray(source_rgb, dtype=np.uint8).reshape(-1, 3)]
    target = _SRGB_UINT8_TO_LINEAR[np.asarray(target_rgb, dtype=np.uint8).reshape(-1, 3)]
    if source.shape != target.shape:
        raise ValueError(f"source {source.shape} and target {target.shape} differ in size")
    design = augment_cheung2004(source.astype(np.float64), terms=terms)
    solution, *_ = np.linalg.lstsq(design, target.astype(np.float64), rcond=None)
    return solution.T
