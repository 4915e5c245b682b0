"""Real-world degradations: kernel shapes, noise statistics, JPEG, determinism, evaluation."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import load_photo, plain_resize_degradation
from PIL import Image

from dlss_dist import degradations, imaging
from dlss_dist.evaluation import metrics


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_photo("astronaut")[64:128, 160:224]  # 64x64, face and background


def _moments(kernel: np.ndarray) -> tuple[float, float, float]:
    """Second moments (var_x, var_y, cov) of a kernel about its centre."""
    size = kernel.shape[0]
    axis = np.arange(size) - (size - 1) / 2
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return (kernel * x**2).sum(), (kernel * y**2).sum(), (kernel * x * y).sum()


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])  # sampled finer than 1 px is not Gaussian
def test_isotropic_gaussian_sums_to_one_with_the_requested_width(sigma):
    kernel = degradations.gaussian_kernel(sigma).numpy()
    assert kernel.shape == (21, 21)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
    var_x, var_y, cov = _moments(kernel)
    # The 21-tap grid truncates at >3 sigma; a sampled Gaussian's variance is sigma^2.
    assert math.sqrt(var_x) == pytest.approx(sigma, rel=0.03)
    assert math.sqrt(var_y) == pytest.approx(sigma, rel=0.03)
    assert cov == pytest.approx(0.0, abs=1e-5)


def test_anisotropic_gaussian_has_its_axes_and_rotation():
    kernel = degradations.gaussian_kernel(2.5, 0.8, 0.0).numpy()
    var_x, var_y, _ = _moments(kernel)
    assert math.sqrt(var_x) == pytest.approx(2.5, rel=0.03)
    assert math.sqrt(var_y) == pytest.approx(0.8, rel=0.05)
    rotated = degradations.gaussian_kernel(2.5, 0.8, math.pi / 2).numpy()
    np.testing.assert_allclose(rotated, kernel.T, atol=1e-6)
    # At 45 degrees the covariance is (sx^2 - sy^2) / 2 with the variances equal.
    diagonal = degradations.gaussian_kernel(2.5, 0.8, math.pi / 4).numpy()
    var_x, var_y, cov = _moments(diagonal)
    assert var_x == pytest.approx(var_y, rel=1e-3)
    assert cov == pytest.approx((2.5**2 - 0.8**2) / 2, rel=0.05)


def test_kernel_size_limits_the_support():
    for size in (7, 13, 21):
        kernel = degradations.gaussian_kernel(3.0, kernel_size=size).numpy()
        half = (21 - size) // 2
        assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
        if half:
            assert not kernel[:half].any() and not kernel[:, -half:].any()
        assert (kernel[half : 21 - half, half : 21 - half] > 0).all()


def test_generalized_and_plateau_shapes():
    gaussian = degradations.gaussian_kernel(2.0, 2.0, 0.0).numpy()
    generalized = degradations.generalized_gaussian_kernel(2.0, 2.0, 0.0, 1.0).numpy()
    np.testing.assert_allclose(generalized, gaussian, atol=1e-6)  # beta = 1 is Gaussian
    peaky = degradations.generalized_gaussian_kernel(2.0, 2.0, 0.0, 0.5).numpy()
    flat = degradations.generalized_gaussian_kernel(2.0, 2.0, 0.0, 4.0).numpy()
    # beta < 1: a sharper peak and heavier tails; beta > 1: a flat top that falls off fast.
    neighbour = [k[10, 11] / k[10, 10] for k in (peaky, gaussian, flat)]
    assert neighbour[0] < neighbour[1] < 0.99 < neighbour[2]
    far = [k[10, 18] / k[10, 10] for k in (peaky, gaussian, flat)]
    assert far[0] > far[1] > far[2]
    plateau = degradations.plateau_kernel(2.0, 2.0, 0.0, 2.0).numpy()
    assert plateau.sum() == pytest.approx(1.0, abs=1e-5)
    # 1 / (1 + q^beta): half the peak at q = 1, i.e. one sigma from the centre.
    assert plateau[10, 12] / plateau[10, 10] == pytest.approx(0.5, rel=1e-4)


def test_sinc_kernel_is_a_low_pass_with_ringing():
    kernel = degradations.sinc_kernel(math.pi / 3).numpy()
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
    assert kernel.min() < 0  # side lobes: what makes ringing
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-7)
    # Frequency response: ~1 well inside the cutoff, ~0 well outside it.
    response = np.abs(np.fft.fft2(kernel, (256, 256)))
    frequency = np.fft.fftfreq(256) * 2 * np.pi
    assert response[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert response[0, np.argmin(np.abs(frequency - 0.5))] > 0.9
    assert response[0, np.argmin(np.abs(frequency - 2.5))] < 0.1


def test_filter2d_keeps_flat_images_and_blurs_edges():
    flat = tf.fill([9, 11, 3], 0.4)
    np.testing.assert_allclose(
        degradations.filter2d(flat, degradations.gaussian_kernel(3.0)), flat, atol=1e-6
    )
    step = tf.constant(np.repeat(np.repeat([[0.0] * 8 + [1.0] * 8], 16, 0)[..., None], 3, 2))
    blurred = degradations.filter2d(tf.cast(step, tf.float32), degradations.gaussian_kernel(1.0))
    row = blurred.numpy()[8, :, 0]
    assert row[0] == pytest.approx(0.0, abs=1e-6) and row[-1] == pytest.approx(1.0, abs=1e-6)
    assert 0.1 < row[7] < 0.5 < row[8] < 0.9  # the edge is now a ramp


@pytest.mark.parametrize("gray", [False, True])
def test_gaussian_noise_has_the_requested_sigma(gray):
    image = tf.fill([96, 96, 3], 0.5)
    noisy = degradations.add_gaussian_noise(image, 10 / 255, [3, 4], gray=gray).numpy() - 0.5
    assert noisy.std() * 255 == pytest.approx(10.0, rel=0.03)
    assert abs(noisy.mean()) * 255 < 0.2
    same_on_channels = np.allclose(noisy[..., 0], noisy[..., 1])
    assert same_on_channels == gray


def test_poisson_noise_is_signal_dependent():
    levels = tf.constant(np.repeat([0.1, 0.8], 96 * 48 * 3).reshape(96, 96, 3), tf.float32)
    noise = degradations.add_poisson_noise(levels, 2.0, [5, 6]).numpy() - levels.numpy()
    for rows, value in ((slice(0, 48), 0.1), (slice(48, 96), 0.8)):
        expected = 2.0 * math.sqrt(value / 256)  # scale * sqrt(x / levels)
        assert noise[rows].std() == pytest.approx(expected, rel=0.05)
        assert abs(noise[rows].mean()) < 0.1 * expected
    gray = degradations.add_poisson_noise(levels, 1.0, [5, 6], gray=True).numpy()
    np.testing.assert_array_equal(gray[..., 0] - levels[..., 0], gray[..., 2] - levels[..., 2])


@pytest.mark.parametrize("quality", [30, 60, 90])
def test_jpeg_matches_a_real_jpeg_of_that_quality(photo, quality):
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    reference = np.asarray(Image.open(buffer).convert("RGB"))
    ours = degradations.jpeg(tf.constant(photo, tf.float32) / 255.0, quality)
    ours = np.round(ours.numpy() * 255).astype(np.uint8)
    ours_psnr = metrics.psnr(photo, ours)
    assert ours_psnr == pytest.approx(metrics.psnr(photo, reference), abs=0.5)
    assert ours_psnr < 45  # it is lossy


def test_lower_jpeg_quality_loses_more_and_in_8x8_blocks(photo):
    image = tf.constant(photo, tf.float32) / 255.0
    errors = [
        float(tf.reduce_mean(tf.abs(degradations.jpeg(image, q) - image))) for q in (20, 50, 95)
    ]
    assert errors[0] > errors[1] > errors[2] > 0
    # Blocking: at low quality, jumps across 8x8 block borders exceed those inside blocks.
    low = degradations.jpeg(image, 10).numpy().mean(axis=-1)
    jumps = np.abs(np.diff(low, axis=1)).mean(axis=0)
    assert jumps[7::8].mean() > 1.3 * np.delete(jumps, np.s_[7::8]).mean()


def test_real_world_degradation_is_deterministic_per_seed(photo):
    degrade = degradations.RealWorldDegradation(scale=4)
    first = degrade(tf.constant(photo), [7, 1]).numpy()
    assert first.shape == (16, 16, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, degrade(tf.constant(photo), [7, 1]).numpy())
    others = [degrade(tf.constant(photo), [7, s]).numpy() for s in range(2, 6)]
    assert all(np.abs(first.astype(int) - other).mean() > 1 for other in others)


def test_real_world_lr_is_a_degraded_version_of_the_hr(photo):
    degrade = degradations.RealWorldDegradation(scale=4)
    bicubic = imaging.degrade_bicubic(photo, 4).astype(float)
    for index in range(6):
        lr = degrade(tf.constant(photo), [index, 9]).numpy().astype(float)
        # Same picture (correlated with the clean LR), never an exact copy.
        assert np.corrcoef(lr.ravel(), bicubic.ravel())[0, 1] > 0.5
        assert np.abs(lr - bicubic).mean() > 0.5


def test_without_blur_noise_and_jpeg_the_model_is_a_plain_resize(photo):
    degrade = plain_resize_degradation(4)

    def plain_resizes(hr):
        hr = tf.constant(hr / 255.0, tf.float32)
        return [
            metrics.rgb_to_y(degradations.resize(hr, 16, 16, method).numpy() * 255)
            for method in degradations.RESIZE_METHODS
        ]

    aligned, shifted = plain_resizes(photo), plain_resizes(np.roll(photo, 4, axis=1))
    for index in range(3):
        lr = metrics.rgb_to_y(degrade(tf.constant(photo), [index, 2]).numpy())
        # One of the three final resizes plus two quality-100 JPEG round trips (each
        # ~1 level of luma error), aligned: one LR pixel of shift is far worse.
        error = min(np.abs(lr - r).mean() for r in aligned)
        assert error < 3.0
        assert error < 0.5 * min(np.abs(lr - r).mean() for r in shifted)


def test_degradation_settings_are_validated():
    with pytest.raises(ValueError, match="kernel_probs"):
        degradations.DegradationStage(kernel_probs=(1.0, 0.5, 0, 0, 0, 0))
    with pytest.raises(ValueError, match="kernel_size_range"):
        degradations.DegradationStage(kernel_size_range=(7, 25))
    with pytest.raises(ValueError, match="jpeg_quality_range"):
        degradations.DegradationStage(jpeg_quality_range=(30, 120))
    with pytest.raises(ValueError, match="resize_range must contain 1"):
        degradations.DegradationStage(resize_range=(1.2, 1.5))
    with pytest.raises(ValueError, match="second_order_prob"):
        degradations.RealWorldDegradation(second_order_prob=1.5)


def test_evaluation_degradations_are_reproducible(photo):
    bicubic = degradations.evaluation_degradation("bicubic")
    np.testing.assert_array_equal(bicubic(photo, 4, key="a"), imaging.degrade_bicubic(photo, 4))
    realistic = degradations.evaluation_degradation("realistic")
    first = realistic(photo, 4, key="dir/a.png")
    np.testing.assert_array_equal(first, realistic(photo, 4, key="dir/a.png"))
    other_key = realistic(photo, 4, key="dir/b.png")
    assert first.shape == (16, 16, 3) and not np.array_equal(first, other_key)
    # Blur, noise and JPEG make it clearly worse than the clean bicubic LR, not another image.
    clean = imaging.degrade_bicubic(photo, 4)
    assert 20 < metrics.psnr(clean, first) < 40
    spec = realistic.spec()
    assert spec["jpeg_quality"] == 75 and "sigma=1.5" in spec["blur"]
    with pytest.raises(ValueError, match="choose one of \\['bicubic', 'realistic'\\]"):
        degradations.evaluation_degradation("gaussian")
