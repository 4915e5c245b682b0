"""Our PSNR/SSIM against scikit-image's on the same images (photographs, not noise)."""

import numpy as np
import pytest
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dlss_dist.evaluation import metrics

SKIMAGE_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)


@pytest.fixture(scope="module")
def pair():
    """A real photograph and a degraded copy (blur by 2x2 box + noise), both uint8."""
    hr = skdata.astronaut()[100:196, 150:230]  # 96x80, not square on purpose
    blurred = (
        hr.astype(np.float64)
        + np.roll(hr, 1, axis=0)
        + np.roll(hr, 1, axis=1)
        + np.roll(np.roll(hr, 1, axis=0), 1, axis=1)
    ) / 4
    noise = np.random.default_rng(0).normal(0, 3, hr.shape)
    sr = np.clip(np.round(blurred + noise), 0, 255).astype(np.uint8)
    return hr, sr


@pytest.mark.parametrize("border", [0, 4])
def test_rgb_metrics_agree_with_skimage(pair, border):
    hr, sr = pair
    crop = (slice(border, hr.shape[0] - border), slice(border, hr.shape[1] - border))
    expected_psnr = peak_signal_noise_ratio(hr[crop], sr[crop], data_range=255)
    expected_ssim = structural_similarity(hr[crop], sr[crop], channel_axis=-1, **SKIMAGE_SSIM)
    assert metrics.psnr(hr, sr, border=border) == pytest.approx(expected_psnr, abs=1e-6)
    assert metrics.ssim(hr, sr, border=border) == pytest.approx(expected_ssim, abs=1e-6)


def test_y_metrics_agree_with_skimage(pair):
    hr, sr = pair
    hr_y, sr_y = metrics.rgb_to_y(hr)[4:-4, 4:-4], metrics.rgb_to_y(sr)[4:-4, 4:-4]
    got = metrics.image_metrics(hr, sr, border=4)
    assert got["psnr_y"] == pytest.approx(
        peak_signal_noise_ratio(hr_y, sr_y, data_range=255), abs=1e-6
    )
    assert got["ssim_y"] == pytest.approx(
        structural_similarity(hr_y, sr_y, **SKIMAGE_SSIM), abs=1e-6
    )


def test_y_is_bt601():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8)
    np.testing.assert_allclose(metrics.rgb_to_y(rgb), [[16.0, 235.0, 16.0 + 65.481]], atol=1e-9)


def test_identical_images():
    image = skdata.astronaut()[:32, :32]
    assert metrics.psnr(image, image) == float("inf")
    assert metrics.ssim(image, image) == pytest.approx(1.0)


def test_errors_name_the_problem():
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(image, image[:8])
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(image, image, border=4)
