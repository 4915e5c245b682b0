"""Losses: per-example values against hand-computed numpy, stability, perceptual loss."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from dlss_dist.models import losses

HR = np.array(
    [
        [[[0.5, -0.5, 0.0], [1.0, 1.0, 1.0]], [[-1.0, 0.0, 0.25], [0.0, 0.0, 0.0]]],
        [[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], [[0.7, 0.8, 0.9], [-0.1, -0.2, -0.3]]],
        [[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]],
    ],
    dtype=np.float32,
)  # [3, 2, 2, 3]
SR = (HR * 0.5 + np.linspace(-0.3, 0.3, HR.size, dtype=np.float32).reshape(HR.shape)).astype(
    np.float32
)
REAL = np.array([2.0, -1.0, 0.5], dtype=np.float32)
FAKE = np.array([-3.0, 0.25, 1.5], dtype=np.float32)


def _bce_numpy(label, logits):
    """-[y log σ(x) + (1 - y) log(1 - σ(x))], written out with log(1 + e^±x)."""
    logits = logits.astype(np.float64)
    return label * np.log1p(np.exp(-logits)) + (1 - label) * np.log1p(np.exp(logits))


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.mark.parametrize(
    ("kind", "per_pixel"),
    [
        ("mse", lambda d: d**2),
        ("l1", np.abs),
        ("charbonnier", lambda d: np.sqrt(d**2 + 1e-3**2)),
    ],
)
def test_pixel_loss_per_example(kind, per_pixel):
    loss = losses.pixel_loss(HR, SR, kind=kind)
    expected = per_pixel((SR - HR).astype(np.float64)).reshape(3, -1).mean(axis=1)
    assert loss.shape == (3,)
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


def test_pixel_loss_is_zero_for_identical_images_and_float32_for_float16_inputs():
    np.testing.assert_array_equal(losses.pixel_loss(HR, HR).numpy(), np.zeros(3))
    loss = losses.pixel_loss(tf.constant(HR, tf.float16), tf.constant(SR, tf.float16))
    assert loss.dtype == tf.float32


def test_discriminator_losses_per_example():
    expected = {
        "bce": _bce_numpy(1, REAL) + _bce_numpy(0, FAKE),
        "ragan": _bce_numpy(1, REAL - FAKE.mean()) + _bce_numpy(0, FAKE - REAL.mean()),
        "hinge": np.maximum(0, 1 - REAL) + np.maximum(0, 1 + FAKE),
    }
    for kind, values in expected.items():
        loss = losses.discriminator_loss(REAL, FAKE, kind=kind)
        assert loss.shape == (3,), kind
        np.testing.assert_allclose(loss.numpy(), values, rtol=1e-5, err_msg=kind)


def test_generator_adversarial_losses_per_example():
    expected = {
        "bce": _bce_numpy(1, FAKE),
        "ragan": _bce_numpy(0, REAL - FAKE.mean()) + _bce_numpy(1, FAKE - REAL.mean()),
        "hinge": -FAKE,
    }
    for kind, values in expected.items():
        loss = losses.generator_adversarial_loss(REAL, FAKE, kind=kind)
        assert loss.shape == (3,), kind
        np.testing.assert_allclose(loss.numpy(), values, rtol=1e-5, err_msg=kind)
    # The non-relativistic losses do not need D(real).
    np.testing.assert_allclose(
        losses.generator_adversarial_loss(None, FAKE, kind="bce").numpy(), expected["bce"], 1e-5
    )
    with pytest.raises(ValueError, match="real_logits"):
        losses.generator_adversarial_loss(None, FAKE, kind="ragan")


def test_logits_shaped_n_by_1_give_per_example_losses():
    loss = losses.discriminator_loss(REAL[:, None], FAKE[:, None])
    np.testing.assert_allclose(loss.numpy(), losses.discriminator_loss(REAL, FAKE).numpy())
    with pytest.raises(ValueError, match="real_logits"):
        losses.discriminator_loss(np.zeros([3, 2], np.float32), FAKE)


@pytest.mark.parametrize("kind", losses.ADVERSARIAL_LOSSES)
def test_adversarial_losses_stay_finite_for_huge_logits(kind):
    # Far beyond where exp() overflows float32 (~88), with room for a sum of two terms.
    real = tf.constant([1e4, -1e4, 1e30, -1e30], tf.float32)
    fake = tf.constant([-1e4, 1e4, -1e30, 1e30], tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([real, fake])
        d_loss = losses.discriminator_loss(real, fake, kind=kind)
        g_loss = losses.generator_adversarial_loss(real, fake, kind=kind)
    for value in (d_loss, g_loss, *tape.gradient(d_loss, [real, fake])):
        assert np.all(np.isfinite(value.numpy())), (kind, value)


def test_bce_saturates_to_the_right_values():
    """σ never gets rounded to 0 or 1 before the log: a confident miss costs |logit|."""
    real = tf.constant([1e4, -1e4], tf.float32)
    fake = tf.constant([-1e4, 1e4], tf.float32)
    np.testing.assert_allclose(losses.discriminator_loss(real, fake).numpy(), [0.0, 2e4])
    np.testing.assert_allclose(losses.generator_adversarial_loss(None, fake).numpy(), [1e4, 0.0])


def test_unknown_kinds_name_the_argument():
    with pytest.raises(ValueError, match="`kind`"):
        losses.pixel_loss(HR, SR, kind="ssim")
    with pytest.raises(ValueError, match="`kind`"):
        losses.discriminator_loss(REAL, FAKE, kind="wgan")
    with pytest.raises(ValueError, match="`kind`"):
        losses.generator_adversarial_loss(REAL, FAKE, kind="lsgan")


# --- PerceptualLoss ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg19_weights(tmp_path_factory):
    """A randomly initialised VGG19 (no top) saved the way a user would save real weights."""
    keras.utils.set_random_seed(0)
    vgg = keras.applications.VGG19(weights=None, include_top=False, input_shape=(None, None, 3))
    path = tmp_path_factory.mktemp("vgg") / "vgg19.weights.h5"
    vgg.save_weights(str(path))
    return str(path), vgg


def _images(seed, n=2, size=32):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(n, size, size, 3)).astype(np.float32)


def test_perceptual_loss_matches_keras_vgg_preprocessing_and_features(vgg19_weights):
    path, reference_vgg = vgg19_weights
    loss_fn = losses.PerceptualLoss(weights_path=path, layer="block3_conv2")
    hr, sr = _images(1), _images(2)

    # Keras's own VGG19 preprocessing of the same images in [0, 255].
    expected_input = keras.applications.vgg19.preprocess_input((hr + 1.0) * 127.5)
    np.testing.assert_allclose(loss_fn.preprocess(hr).numpy(), expected_input, atol=1e-4)

    extractor = keras.Model(reference_vgg.input, reference_vgg.get_layer("block3_conv2").output)

    def features(x):
        return extractor(keras.applications.vgg19.preprocess_input((x + 1.0) * 127.5)).numpy()

    expected = ((features(sr) - features(hr)) ** 2).reshape(2, -1).mean(axis=1)
    loss = loss_fn(hr, sr)
    assert loss.shape == (2,)
    assert expected.min() > 0
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(loss_fn(hr, hr).numpy(), [0.0, 0.0])


def test_perceptual_loss_default_layer_and_gradient(vgg19_weights):
    path, _ = vgg19_weights
    gin.parse_config([f"PerceptualLoss.weights_path = '{path}'"])
    loss_fn = losses.PerceptualLoss()
    assert loss_fn.layer == "block5_conv4"
    assert not loss_fn.feature_extractor.trainable_weights
    hr, sr = tf.constant(_images(3)), tf.constant(_images(4))
    with tf.GradientTape() as tape:
        tape.watch(sr)
        loss = loss_fn(hr, sr)
    gradient = tape.gradient(loss, sr)
    assert loss.shape == (2,)
    assert np.all(np.isfinite(gradient.numpy()))
    assert np.abs(gradient.numpy()).max() > 0


def test_perceptual_loss_before_activation_sees_negative_features(vgg19_weights):
    path, _ = vgg19_weights
    hr = _images(5)
    after = losses.PerceptualLoss(weights_path=path, layer="block2_conv2").features(hr)
    before = losses.PerceptualLoss(
        weights_path=path, layer="block2_conv2", before_activation=True
    ).features(hr)
    np.testing.assert_allclose(np.maximum(before.numpy(), 0), after.numpy(), rtol=1e-4, atol=1e-3)
    assert before.numpy().min() < 0


# Keras warns once per layer it cannot fill before it raises; the raise is what matters here.
@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_perceptual_loss_errors(tmp_path, vgg19_weights):
    path, _ = vgg19_weights
    with pytest.raises(FileNotFoundError, match="weights_path.*never downloads"):
        losses.PerceptualLoss(weights_path=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="`layer`"):
        losses.PerceptualLoss(weights_path=path, layer="block6_conv1")
    with pytest.raises(ValueError, match="before_activation"):
        losses.PerceptualLoss(weights_path=path, layer="block1_pool", before_activation=True)
    other = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3)])
    other_path = str(tmp_path / "other.weights.h5")
    other.save_weights(other_path)
    with pytest.raises(ValueError, match="weights_path"):
        losses.PerceptualLoss(weights_path=other_path)
