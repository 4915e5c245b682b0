"""The float64 NumPy bicubic resize dlss_dist used before issue 10 (kept verbatim).

It rounds once at the end. ``dlss_dist.imaging.imresize`` now runs the same kernel in
Pillow's C code, rounding after each pass as MATLAB does for uint8 images; tests use
this copy to show the two agree within one grey level, and to prove the restructured
Beam job writes the same bytes as the old one when given the old resize.
"""

from __future__ import annotations

import functools

import numpy as np

from dlss_dist import imaging


@functools.lru_cache(maxsize=64)
def _sparse_weights(in_length: int, out_length: int) -> tuple[np.ndarray, np.ndarray]:
    matrix = imaging.resize_weights(in_length, out_length)
    taps = max(1, int((matrix != 0).sum(axis=1).max()))
    columns = np.zeros((out_length, taps), dtype=np.intp)
    weights = np.zeros((out_length, taps), dtype=np.float64)
    for row in range(out_length):
        (nonzero,) = np.nonzero(matrix[row])
        columns[row, : len(nonzero)] = nonzero
        weights[row, : len(nonzero)] = matrix[row, nonzero]
    return columns, weights


def _resize_axis0(values: np.ndarray, out_length: int) -> np.ndarray:
    columns, weights = _sparse_weights(values.shape[0], out_length)
    weights = weights.reshape(weights.shape + (1,) * (values.ndim - 1))
    out = values[columns[:, 0]] * weights[:, 0]
    for tap in range(1, columns.shape[1]):
        out += values[columns[:, tap]] * weights[:, tap]
    return out


def imresize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """MATLAB-convention bicubic in float64, rounded once (the pre-issue-10 imresize)."""
    image = np.asarray(image)
    values = image.astype(np.float64)
    out = _resize_axis0(values, height)
    out = _resize_axis0(out.swapaxes(0, 1), width).swapaxes(0, 1)
    return np.floor(np.clip(out, 0.0, 255.0) + 0.5).astype(np.uint8)


def degrade_bicubic(hr: np.ndarray, scale: int) -> np.ndarray:
    height, width = hr.shape[:2]
    return imresize(hr, height // scale, width // scale)
