"""Discriminators: HR-sized image in [-1, 1] -> real/fake LOGITS, in float32.

The global ones (the seeds' and SRGAN's) end in global pooling and return one logit per
image, [N], for any crop size; Real-ESRGAN's U-Net returns one per pixel, [N, H, W, 1], and the
losses average those per example. The sigmoid the seeds put at the end lives in the loss
(`losses.discriminator_loss`), where it is computed from logits without overflow. Select one
with `build_discriminator.network = @srgan_discriminator` (or `@dcgan_discriminator`,
`@sr_dcgan_discriminator`, `@unet_discriminator`).
"""

from __future__ import annotations

import gin
import keras

from dlss_dist.models.layers import (
    NORMALIZATIONS,
    SpectralNormConv2D,
    check_choice,
    check_kernel,
    check_positive_float,
    check_positive_int,
    normalization_layer,
)


def _conv(filters, kernel_size, name, strides=1):
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", name=name)


def _logits(x) -> keras.KerasTensor:
    """[N, 1] -> [N], in float32."""
    return keras.layers.Reshape((), dtype="float32", name="logits")(x)


@gin.configurable
def dcgan_discriminator(
    *,
    conv_filters: int = 64,
    kernel=(5, 5),
    num_pooling_stages: int = 4,
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """The first seed's discriminator: Conv + MaxPooling2D stages down to one scalar.

    `num_pooling_stages` × (Conv, LeakyReLU, MaxPooling2D ×½), then global average pooling
    and a Dense(1) logit. The seed flattened a fixed-size map into its Dense layer; pooling
    globally instead lets the same model score any crop size.

    Args:
      conv_filters: filters of every conv layer (the seed shares it with the generator).
      kernel: conv kernel size, int or (kh, kw) (the seed used (5, 5)).
      num_pooling_stages: number of Conv + MaxPooling2D stages (each halves the size).
      leaky_relu_slope: negative slope of the LeakyReLU activations.

    Returns:
      A keras.Model [N, H, W, 3] -> logits [N].
    """
    check_positive_int("conv_filters", conv_filters)
    kernel = check_kernel("kernel", kernel)
    check_positive_int("num_pooling_stages", num_pooling_stages)
    check_positive_float("leaky_relu_slope", leaky_relu_slope)

    image = keras.Input(shape=(None, None, 3), name="image")
    x = image
    for stage in range(num_pooling_stages):
        x = _conv(conv_filters, kernel, f"stage{stage}_conv")(x)
        x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"stage{stage}_act")(x)
        # "same" padding so small crops shrink to 1x1 instead of to an empty map.
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"stage{stage}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(1, dtype="float32", name="dense")(x)
    return keras.Model(image, _logits(x), name="dcgan_discriminator")


@gin.configurable
def sr_dcgan_discriminator(
    *,
    num_filters: int = 64,
    num_strided_blocks: int = 4,
    kernel_size: int = 3,
    normalization: str = "batch",
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """The second seed's discriminator: strided convs, BatchNorm + LeakyReLU, global average pool.

    A Conv + LeakyReLU (no BatchNorm on the first layer, as in DCGAN), then
    `num_strided_blocks` × (Conv stride 2, BatchNorm, LeakyReLU) with filters doubling up to 8×,
    then a Conv to one channel whose global average is the logit (the seed's sigmoid is in
    the loss).

    Args:
      num_filters: filters of the first conv layer.
      num_strided_blocks: number of stride-2 blocks.
      kernel_size: conv kernel size, int or (kh, kw).
      normalization: "batch" (the seed), "sync_batch" or "none".
      leaky_relu_slope: negative slope of the LeakyReLU activations.

    Returns:
      A keras.Model [N, H, W, 3] -> logits [N].
    """
    check_positive_int("num_filters", num_filters)
    check_positive_int("num_strided_blocks", num_strided_blocks)
    kernel_size = check_kernel("kernel_size", kernel_size)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_positive_float("leaky_relu_slope", leaky_relu_slope)

    image = keras.Input(shape=(None, None, 3), name="image")
    x = _conv(num_filters, kernel_size, "head_conv")(image)
    x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name="head_act")(x)
    for block in range(num_strided_blocks):
        name = f"block{block}"
        filters = num_filters * 2 ** min(block + 1, 3)
        x = _conv(filters, kernel_size, f"{name}_conv", strides=2)(x)
        norm = normalization_layer(normalization, f"{name}_norm")
        if norm is not None:
            x = norm(x)
        x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"{name}_act")(x)
    x = _conv(1, kernel_size, "to_logit_map")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype="float32", name="pool")(x)
    return keras.Model(image, _logits(x), name="sr_dcgan_discriminator")


@gin.configurable
def srgan_discriminator(
    *,
    num_filters: int = 64,
    num_stages: int = 4,
    dense_units: int = 1024,
    normalization: str = "none",
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """SRGAN-style VGG-like discriminator (Ledig et al. 2017), globally pooled.

    `num_stages` stages of two 3x3 convs (stride 1 then stride 2) with filters
    num_filters·2^stage, each followed by normalization and LeakyReLU (none on the very first
    conv), then global average pooling, Dense(dense_units), LeakyReLU and a Dense(1) logit.
    Global pooling replaces SRGAN's flatten, so any HR crop size works.

    The default `normalization="none"` keeps the recommended configuration free of BatchNorm,
    so one replica and two replicas compute the same thing; SRGAN's original is "batch", and
    "sync_batch" gives BatchNorm over the global batch.

    Args:
      num_filters: filters of the first stage (SRGAN: 64).
      num_stages: number of (stride 1, stride 2) conv pairs (SRGAN: 4).
      dense_units: width of the hidden dense layer (SRGAN: 1024).
      normalization: "none", "batch" or "sync_batch".
      leaky_relu_slope: negative slope of the LeakyReLU activations.

    Returns:
      A keras.Model [N, H, W, 3] -> logits [N].
    """
    check_positive_int("num_filters", num_filters)
    check_positive_int("num_stages", num_stages)
    check_positive_int("dense_units", dense_units)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_positive_float("leaky_relu_slope", leaky_relu_slope)

    image = keras.Input(shape=(None, None, 3), name="image")
    x = image
    for stage in range(num_stages):
        filters = num_filters * 2**stage
        for strides in (1, 2):
            name = f"stage{stage}_s{strides}"
            x = _conv(filters, 3, f"{name}_conv", strides=strides)(x)
            first_conv = stage == 0 and strides == 1
            norm = None if first_conv else normalization_layer(normalization, f"{name}_norm")
            if norm is not None:
                x = norm(x)
            x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"{name}_act")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(dense_units, name="dense")(x)
    x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name="dense_act")(x)
    x = keras.layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model(image, _logits(x), name="srgan_discriminator")


@gin.configurable
def unet_discriminator(
    *,
    num_filters: int = 64,
    skip_connections: bool = True,
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """Real-ESRGAN's U-Net discriminator with spectral normalisation (Wang et al. 2021).

    It returns a realness LOGIT PER PIXEL, [N, H, W], instead of one per image: the generator
    is told where its output looks fake, which a globally pooled discriminator cannot say,
    and spectral normalisation keeps the stronger discriminator stable. Layout
    (`UNetDiscriminatorSN` in Real-ESRGAN): a plain 3x3 conv, three stride-2 4x4 SN convs
    (filters ×2, ×4, ×8), three bilinear ×2 upsamplings each followed by a 3x3 SN conv and,
    with `skip_connections`, the encoder feature of the same size added; two 3x3 SN convs and
    a plain 3x3 conv to one channel. LeakyReLU after every conv but the last. Crops must have
    sides divisible by 8. The losses average the per-pixel terms per example.

    Args:
      num_filters: filters of the first conv (Real-ESRGAN: 64).
      skip_connections: add encoder features to the decoder (Real-ESRGAN: True).
      leaky_relu_slope: negative slope of the LeakyReLU activations.

    Returns:
      A keras.Model [N, H, W, 3] -> logit map [N, H, W, 1].
    """
    check_positive_int("num_filters", num_filters)
    check_positive_float("leaky_relu_slope", leaky_relu_slope)

    def act(name):
        return keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"{name}_act")

    image = keras.Input(shape=(None, None, 3), name="image")
    x0 = act("conv0")(_conv(num_filters, 3, "conv0")(image))
    x1 = act("down1")(SpectralNormConv2D(num_filters * 2, 4, strides=2, name="down1")(x0))
    x2 = act("down2")(SpectralNormConv2D(num_filters * 4, 4, strides=2, name="down2")(x1))
    x3 = act("down3")(SpectralNormConv2D(num_filters * 8, 4, strides=2, name="down3")(x2))
    x = x3
    for level, skip in ((4, x2), (2, x1), (1, x0)):
        name = f"up{level}"
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_resize")(x)
        x = act(name)(SpectralNormConv2D(num_filters * level, 3, use_bias=False, name=name)(x))
        if skip_connections:
            x = keras.layers.Add(name=f"{name}_skip")([x, skip])
    for name in ("refine1", "refine2"):
        x = act(name)(SpectralNormConv2D(num_filters, 3, use_bias=False, name=name)(x))
    x = _conv(1, 3, "to_logit_map")(x)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(image, logits, name="unet_discriminator")
