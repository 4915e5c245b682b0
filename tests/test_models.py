"""Generators and discriminators: shapes at any size, argument checks, bicubic start, gin."""

import subprocess
import sys

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from dlss_dist import imaging, models
from dlss_dist.models import generators
from dlss_dist.models.layers import ICNR, PixelShuffle, SpectralNormConv2D


def matlab_bicubic(images, scale: int) -> np.ndarray:
    """MATLAB imresize's bicubic enlargement of float NHWC images, in float64 (the reference
    the generators' skip follows: `imaging.resize_weights`, mirrored borders)."""
    images = np.asarray(images, np.float64)
    _, height, width, _ = images.shape
    rows = imaging.resize_weights(height, height * scale)
    columns = imaging.resize_weights(width, width * scale)
    return np.einsum("oh,pw,nhwc->nopc", rows, columns, images)


# Small widths keep every build and forward pass well under a second.
GENERATORS = {
    "dcgan": lambda scale: models.dcgan_generator(
        super_sampling_ratio=scale, conv_filters=8, kernel=3
    ),
    "sr_dcgan": lambda scale: models.sr_dcgan_generator(scale, num_filters=8, num_residual_units=2),
    "srresnet": lambda scale: models.srresnet_generator(scale=scale, num_filters=8, num_blocks=2),
    "srresnet_direct": lambda scale: models.srresnet_generator(
        scale=scale, num_filters=8, num_blocks=2, upsampler="pixelshuffledirect"
    ),
}
DISCRIMINATORS = {
    "dcgan": lambda: models.dcgan_discriminator(conv_filters=8, kernel=3),
    "sr_dcgan": lambda: models.sr_dcgan_discriminator(num_filters=8),
    "srgan": lambda: models.srgan_discriminator(num_filters=8, dense_units=16),
    "srgan_batch_norm": lambda: models.srgan_discriminator(
        num_filters=8, dense_units=16, normalization="batch"
    ),
}


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _images(n, h, w, seed=0):
    return tf.random.stateless_uniform([n, h, w, 3], seed=[seed, 1], minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("scale", [2, 4])
def test_generator_is_fully_convolutional(name, scale):
    generator = GENERATORS[name](scale)
    for n, h, w in [(2, 8, 12), (1, 5, 7)]:
        sr = generator(_images(n, h, w), training=False)
        assert sr.shape == (n, h * scale, w * scale, 3)
        assert sr.dtype == tf.float32
        assert np.all(np.isfinite(sr.numpy()))


@pytest.mark.parametrize("name", ["dcgan", "sr_dcgan"])
def test_seed_generators_end_in_tanh(name):
    sr = GENERATORS[name](2)(_images(2, 6, 6) * 50.0, training=False).numpy()
    assert sr.min() >= -1.0
    assert sr.max() <= 1.0


@pytest.mark.parametrize("name", sorted(DISCRIMINATORS))
def test_discriminator_returns_one_logit_per_image_at_any_size(name):
    discriminator = DISCRIMINATORS[name]()
    for n, h, w in [(2, 32, 32), (3, 20, 44)]:
        logits = discriminator(_images(n, h, w), training=False)
        assert logits.shape == (n,)
        assert logits.dtype == tf.float32


@pytest.mark.parametrize("upsampler", generators.UPSAMPLERS)
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_untrained_srresnet_returns_exactly_bicubic(scale, upsampler):
    generator = models.srresnet_generator(
        scale=scale, num_filters=8, num_blocks=1, upsampler=upsampler
    )
    lr = _images(2, 6, 9, seed=scale)
    # MATLAB's bicubic (mirrored borders), equal up to float32 rounding.
    bicubic = matlab_bicubic(lr, scale)
    np.testing.assert_allclose(generator(lr, training=False).numpy(), bicubic, atol=1e-5)


@pytest.mark.parametrize(
    "upsampler, last_conv",
    [
        ("pixelshuffle", "to_rgb"),
        ("pixelshuffledirect", "to_rgb_subpixels"),
        ("nearest_conv", "to_rgb"),
    ],
)
def test_srresnet_zero_initialised_output_still_learns(upsampler, last_conv):
    """The zero-initialised last conv must still receive a gradient (or training is stuck)."""
    generator = models.srresnet_generator(scale=2, num_filters=8, num_blocks=1, upsampler=upsampler)
    lr, hr = _images(2, 6, 6), _images(2, 12, 12, seed=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(generator(lr, training=True) - hr))
    to_rgb = generator.get_layer(last_conv)
    kernel_gradient, bias_gradient = tape.gradient(loss, [to_rgb.kernel, to_rgb.bias])
    assert np.abs(kernel_gradient.numpy()).max() > 0
    assert np.abs(bias_gradient.numpy()).max() > 0


def test_recommended_default_has_no_batch_norm():
    """No batch statistics: one replica and two replicas compute the same function."""
    for model in (
        models.srresnet_generator(scale=4, num_filters=8, num_blocks=2),
        models.srgan_discriminator(num_filters=8, dense_units=16),
    ):
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_sync_batch_norm_option():
    model = models.sr_dcgan_discriminator(num_filters=8, normalization="sync_batch")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms
    assert all(layer.synchronized for layer in norms)


@pytest.mark.parametrize(
    ("kwargs", "expected_ratio"),
    [
        ({"input_dimensions": (128, 128, 3), "output_dimensions": (256, 256, 3)}, 2),
        ({"input_dimensions": (32, 48), "output_dimensions": (128, 192)}, 4),
        ({"input_dimensions": 16, "output_dimensions": 128, "super_sampling_ratio": 8}, 8),
        ({"super_sampling_ratio": 2}, 2),
    ],
)
def test_dcgan_ratio_is_derived_from_the_seed_dimensions(kwargs, expected_ratio):
    assert generators.dcgan_ratio(**kwargs) == expected_ratio
    generator = models.dcgan_generator(conv_filters=4, kernel=3, **kwargs)
    assert generator(_images(1, 3, 5)).shape == (1, 3 * expected_ratio, 5 * expected_ratio, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_dimensions": (128, 128, 3), "output_dimensions": (384, 384, 3)}, "power of 2"),
        ({"input_dimensions": (100, 100), "output_dimensions": (250, 250)}, "integer multiple"),
        ({"input_dimensions": (64, 64), "output_dimensions": (128, 256)}, "integer multiple"),
        ({"input_dimensions": (64, 64), "output_dimensions": (64, 64)}, "power of 2"),
        ({"input_dimensions": (64, 64), "output_dimensions": (32, 32)}, "integer multiple"),
        (
            {
                "input_dimensions": (64, 64),
                "output_dimensions": (256, 256),
                "super_sampling_ratio": 2,
            },
            "super_sampling_ratio",
        ),
        ({"input_dimensions": (64, 64)}, "output_dimensions"),
        ({}, "super_sampling_ratio"),
        ({"super_sampling_ratio": 6}, "super_sampling_ratio"),
        ({"input_dimensions": (64, 64, 4), "output_dimensions": (128, 128, 4)}, "3 (RGB)"),
        ({"input_dimensions": "64x64", "output_dimensions": (128, 128)}, "input_dimensions"),
    ],
)
def test_dcgan_generator_refuses_bad_ratios(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models.dcgan_generator(**kwargs)


@pytest.mark.parametrize(
    ("builder", "kwargs", "argument"),
    [
        (models.srresnet_generator, {"scale": 3}, "scale"),
        (models.srresnet_generator, {"scale": 1}, "scale"),
        (models.srresnet_generator, {"scale": True}, "scale"),
        (models.srresnet_generator, {"scale": 2, "num_filters": 0}, "num_filters"),
        (models.srresnet_generator, {"scale": 2, "activation": "gelu"}, "activation"),
        (models.srresnet_generator, {"scale": 2, "residual_scaling": 0}, "residual_scaling"),
        (models.srresnet_generator, {"scale": 2, "upsampler": "nearest"}, "upsampler"),
        (models.sr_dcgan_generator, {"scale": 6}, "scale"),
        (models.sr_dcgan_generator, {"scale": 4, "normalization": "group"}, "normalization"),
        (models.sr_dcgan_generator, {"scale": 4, "num_residual_units": -1}, "num_residual_units"),
        (models.dcgan_generator, {"super_sampling_ratio": 2, "kernel": (3, 3, 3)}, "kernel"),
        (models.dcgan_generator, {"super_sampling_ratio": 2, "conv_filters": 2.5}, "conv_filters"),
        (models.dcgan_discriminator, {"num_pooling_stages": 0}, "num_pooling_stages"),
        (models.sr_dcgan_discriminator, {"kernel_size": 0}, "kernel_size"),
        (models.srgan_discriminator, {"normalization": "layer"}, "normalization"),
        (models.srgan_discriminator, {"leaky_relu_slope": -0.2}, "leaky_relu_slope"),
    ],
)
def test_builders_name_the_bad_argument(builder, kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        builder(**kwargs)


def test_pixel_shuffle_matches_depth_to_space_layout():
    features = np.arange(2 * 2 * 3 * 8, dtype=np.float32).reshape(2, 2, 3, 8)
    shuffled = PixelShuffle(2)(features).numpy()
    assert shuffled.shape == (2, 4, 6, 2)
    # Output pixel (2i + a, 2j + b) takes channels [(2a + b)·C', (2a + b + 1)·C') of pixel (i, j):
    # (3, 4) is i=1, a=1, j=2, b=0, so channels [4, 6) of pixel (1, 2).
    np.testing.assert_array_equal(shuffled[0, 3, 4], features[0, 1, 2, 4:6])
    with pytest.raises(ValueError, match="divisible by 4"):
        keras.Sequential([keras.Input((None, None, 6)), PixelShuffle(2)])


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_survive_save_load_and_clone(tmp_path, name):
    """Custom layers are registered: `.keras` round trips and clone_model (an EMA copy) work."""
    generator = GENERATORS[name](2)
    lr = _images(1, 5, 6)
    expected = generator(lr, training=False).numpy()
    path = str(tmp_path / f"{name}.keras")
    generator.save(path)
    np.testing.assert_array_equal(
        keras.models.load_model(path)(lr, training=False).numpy(), expected
    )
    clone = keras.models.clone_model(generator)
    clone.set_weights(generator.get_weights())
    np.testing.assert_array_equal(clone(lr, training=False).numpy(), expected)


def test_mixed_precision_keeps_outputs_float32():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        generator = models.srresnet_generator(scale=2, num_filters=8, num_blocks=1)
        discriminator = models.srgan_discriminator(num_filters=8, dense_units=16)
        lr = _images(1, 6, 6)
        sr = generator(lr, training=False)
        assert sr.dtype == tf.float32
        assert discriminator(sr, training=False).dtype == tf.float32
        # The skip is resized in float32, so the untrained model is still exactly bicubic.
        np.testing.assert_allclose(sr.numpy(), matlab_bicubic(lr, 2), atol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def test_gin_builds_the_recommended_default():
    gin.parse_config(
        [
            "build_generator.network = @srresnet_generator",
            "srresnet_generator.scale = 4",
            "srresnet_generator.num_filters = 8",
            "srresnet_generator.num_blocks = 1",
            "build_discriminator.network = @srgan_discriminator",
            "srgan_discriminator.num_filters = 8",
        ]
    )
    generator = models.build_generator()
    discriminator = models.build_discriminator()
    sr = generator(_images(2, 8, 8))
    assert sr.shape == (2, 32, 32, 3)
    assert discriminator(sr).shape == (2,)


def test_gin_exposes_the_first_seeds_parameters():
    gin.parse_config(
        [
            "build_generator.network = @dcgan_generator",
            "dcgan_generator.input_dimensions = (128, 128, 3)",
            "dcgan_generator.output_dimensions = (256, 256, 3)",
            "dcgan_generator.super_sampling_ratio = 2",
            "dcgan_generator.conv_filters = 4",
            "dcgan_generator.kernel = (5, 5)",
            "build_discriminator.network = @dcgan_discriminator",
            "dcgan_discriminator.conv_filters = 4",
            "dcgan_discriminator.kernel = (5, 5)",
        ]
    )
    assert models.build_generator()(_images(1, 4, 4)).shape == (1, 8, 8, 3)
    assert models.build_discriminator()(_images(1, 8, 8)).shape == (1,)


def test_gin_refuses_a_bad_ratio_at_build_time():
    gin.parse_config(
        [
            "build_generator.network = @dcgan_generator",
            "dcgan_generator.input_dimensions = (128, 128)",
            "dcgan_generator.output_dimensions = (384, 384)",
        ]
    )
    with pytest.raises(ValueError, match="power of 2"):
        models.build_generator()


def test_build_generator_needs_a_network():
    with pytest.raises(RuntimeError, match="network"):
        models.build_generator()
    with pytest.raises(ValueError, match="build_generator.network"):
        models.build_generator(network="srresnet_generator")
    with pytest.raises(ValueError, match="build_discriminator.network"):
        models.build_discriminator(network=lambda: "not a model")


def test_srresnet_compiles_with_xla_and_matches_eager():
    # train_loop.jit_compile needs every generator op to have an XLA kernel on CPU too.
    generator = generators.srresnet_generator(scale=4, num_filters=8, num_blocks=1)
    lr = tf.random.stateless_uniform([2, 7, 5, 3], seed=[1, 2], minval=-1.0, maxval=1.0)
    compiled = tf.function(lambda x: generator(x, training=False), jit_compile=True)
    np.testing.assert_allclose(compiled(lr).numpy(), generator(lr).numpy(), atol=1e-5)
    np.testing.assert_allclose(compiled(lr).numpy(), matlab_bicubic(lr, 4), atol=1e-5)


def test_unet_discriminator_returns_a_logit_map_at_the_input_size():
    discriminator = models.unet_discriminator(num_filters=8)
    for n, h, w in [(2, 32, 32), (1, 16, 40)]:
        logits = discriminator(_images(n, h, w), training=False)
        assert logits.shape == (n, h, w, 1)
        assert logits.dtype == tf.float32


def test_unet_discriminator_without_skips_builds_and_is_smaller_in_effect():
    with_skips = models.unet_discriminator(num_filters=8)
    without = models.unet_discriminator(num_filters=8, skip_connections=False)
    assert with_skips.count_params() == without.count_params()  # the adds have no weights
    assert not any("skip" in layer.name for layer in without.layers)


def test_spectral_norm_conv_divides_the_kernel_by_its_largest_singular_value():
    layer = SpectralNormConv2D(6, 3, strides=2)
    x = _images(1, 8, 8)
    layer(x, training=True)
    # A scaled-up kernel keeps the same normalised kernel: the scale cancels.
    layer.kernel.assign(layer.kernel * 10.0)
    for _ in range(50):  # power iterations converge on the leading singular vector
        layer(x, training=True)
    matrix = layer._normalized_kernel(False).numpy().reshape(-1, 6)
    assert np.linalg.svd(matrix, compute_uv=False)[0] == pytest.approx(1.0, abs=1e-3)
    assert layer(x).shape == (1, 4, 4, 6)


def test_spectral_norm_conv_is_serialisable():
    layer = SpectralNormConv2D(4, (3, 3), strides=1, use_bias=False, name="sn")
    clone = SpectralNormConv2D.from_config(layer.get_config())
    assert (clone.filters, clone.kernel_size, clone.use_bias) == (4, (3, 3), False)


_TWO_REPLICA_UNET_STEP = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from dlss_dist import models
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    discriminator = models.unet_discriminator(num_filters=4)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(discriminator.trainable_variables)
images = tf.random.stateless_uniform([4, 16, 16, 3], (1, 2), -1.0, 1.0)

@tf.function
def step(batch):
    def replica(x):
        with tf.GradientTape() as tape:
            per_example = models.discriminator_loss(
                discriminator(x, training=True), discriminator(-x, training=True)
            )
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=4)
        variables = discriminator.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss
    return strategy.reduce("SUM", strategy.run(replica, args=(batch,)), axis=None)

batch = next(iter(strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensors(images).unbatch().batch(4))))
losses = [float(step(batch)) for _ in range(3)]
assert all(np.isfinite(losses)), losses
print("replicas", strategy.num_replicas_in_sync, "ok")
"""


@pytest.mark.slow
def test_unet_discriminator_trains_under_two_replicas():
    """The power-iteration state is assigned inside strategy.run, which MirroredStrategy
    allows only for variables aggregated "only_first_replica" (two logical CPUs must be set
    before TensorFlow starts: a subprocess)."""
    result = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICA_UNET_STEP], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2 ok" in result.stdout


def test_icnr_makes_a_pixel_shuffle_start_as_nearest_neighbour_upsampling():
    """No checkerboard at initialisation: the 2x2 sub-pixels of each block are equal."""
    conv = keras.layers.Conv2D(4 * 3, 3, padding="same", kernel_initializer=ICNR(2))
    features = PixelShuffle(2)(conv(_images(1, 5, 7)))
    np.testing.assert_allclose(features[:, 0::2, 0::2], features[:, 1::2, 1::2], atol=1e-6)
    np.testing.assert_allclose(features[:, 0::2, 0::2], features[:, 0::2, 1::2], atol=1e-6)
    plain = PixelShuffle(2)(keras.layers.Conv2D(4 * 3, 3, padding="same")(_images(1, 5, 7)))
    assert np.abs(plain[:, 0::2, 0::2] - plain[:, 1::2, 1::2]).max() > 1e-3


def test_srresnet_pixelshuffle_stages_use_icnr():
    generator = models.srresnet_generator(scale=4, num_filters=8, num_blocks=1)
    for stage in (0, 1):
        kernel = generator.get_layer(f"upsample{stage}_conv").kernel.numpy()
        np.testing.assert_array_equal(kernel[..., :8], kernel[..., 8:16])
