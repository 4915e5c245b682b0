"""PSNR and SSIM as super-resolution papers report them (NumPy, float64).

Conventions (the ones published SR tables use, so numbers stay comparable):

* images are uint8 RGB (or float on the same 0..255 scale), ``data_range = 255``;
* ``border`` pixels are cropped from every side first (border = scale in dlss-eval);
* Y is the BT.601 luma of ``rgb2ycbcr``: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` for
  R, G, B in [0, 1], kept as float (not rounded);
* SSIM is Wang et al.'s: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
  population (not sample) covariances, averaged over the "valid" positions (where the whole
  window is inside the image) and, for RGB, over the channels. This equals
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255, channel_axis=-1)``.
"""

from __future__ import annotations

import numpy as np

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma (16..235) of an RGB image on the 0..255 scale, as float64 [H, W]."""
    rgb = np.asarray(image, np.float64) / 255.0
    return 16.0 + rgb @ np.array([65.481, 128.553, 24.966])


def _prepare(a: np.ndarray, b: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border:
        if min(a.shape[0], a.shape[1]) <= 2 * border:
            raise ValueError(f"image {a.shape[:2]} is too small for a border crop of {border}")
        a = a[border:-border, border:-border]
        b = b[border:-border, border:-border]
    return a.astype(np.float64), b.astype(np.float64)


def psnr(reference: np.ndarray, test: np.ndarray, *, border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images).

    Args:
      reference, test: [H, W] or [H, W, C] images on the 0..255 scale, same shape.
      border: pixels cropped from each side before measuring.
    """
    a, b = _prepare(reference, test, border)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(DATA_RANGE**2 / mse))


def _gaussian_kernel() -> np.ndarray:
    radius = SSIM_WINDOW // 2
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x**2) / (2.0 * SSIM_SIGMA**2))
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of an [H, W] image with a symmetric 1-D kernel."""
    size = kernel.size
    rows = np.lib.stride_tricks.sliding_window_view(image, size, axis=0) @ kernel
    return np.lib.stride_tricks.sliding_window_view(rows, size, axis=1) @ kernel


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    kernel = _gaussian_kernel()
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    mu_a = _filter_valid(a, kernel)
    mu_b = _filter_valid(b, kernel)
    var_a = _filter_valid(a * a, kernel) - mu_a**2
    var_b = _filter_valid(b * b, kernel) - mu_b**2
    cov = _filter_valid(a * b, kernel) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim_map.mean())


def ssim(reference: np.ndarray, test: np.ndarray, *, border: int = 0) -> float:
    """Structural similarity (Wang et al. 2004), mean over valid windows and channels.

    Args:
      reference, test: [H, W] or [H, W, C] images on the 0..255 scale, same shape, at least
        11x11 after the border crop.
      border: pixels cropped from each side before measuring.
    """
    a, b = _prepare(reference, test, border)
    if min(a.shape[0], a.shape[1]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after the border crop, "
            f"got {a.shape[1]}x{a.shape[0]}"
        )
    if a.ndim == 2:
        return _ssim_2d(a, b)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c]) for c in range(a.shape[-1])]))


def image_metrics(hr: np.ndarray, sr: np.ndarray, *, border: int) -> dict[str, float]:
    """PSNR and SSIM of `sr` against `hr` on RGB and on Y.

    Returns:
      {"psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y"}.
    """
    hr_y, sr_y = rgb_to_y(hr), rgb_to_y(sr)
    return {
        "psnr_rgb": psnr(hr, sr, border=border),
        "ssim_rgb": ssim(hr, sr, border=border),
        "psnr_y": psnr(hr_y, sr_y, border=border),
        "ssim_y": ssim(hr_y, sr_y, border=border),
    }
