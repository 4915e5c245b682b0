"""Generators: LR image in [-1, 1] -> HR image `scale`× larger.

All three are fully convolutional Keras functional models (`keras.Input(shape=(None, None, 3))`),
so one trained model upscales any image size. Each is a gin configurable; select one with
`build_generator.network = @srresnet_generator` (or `@dcgan_generator`, `@sr_dcgan_generator`).

The last layer of each generator computes in float32 so a `mixed_float16` policy leaves the
output (and therefore the pixel loss) in full precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import keras

from dlss_dist.models.layers import (
    ACTIVATIONS,
    ICNR,
    NORMALIZATIONS,
    BicubicUpsample,
    PixelShuffle,
    activation_layer,
    check_choice,
    check_kernel,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
    check_scale,
    normalization_layer,
    num_doublings,
)

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest_conv")


def _conv(filters, kernel_size, name, **kwargs):
    return keras.layers.Conv2D(filters, kernel_size, padding="same", name=name, **kwargs)


def _dimensions(name: str, value) -> tuple[int, int]:
    """Parses a seed-style image size: int (square), (height, width) or (height, width, 3)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) not in (2, 3)
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise ValueError(
            f"`{name}` must be an int or (height, width[, 3]) of positive ints, got {value!r}."
        )
    if len(value) == 3 and value[2] != 3:
        raise ValueError(f"`{name}` must have 3 (RGB) channels, got {value!r}.")
    return int(value[0]), int(value[1])


def dcgan_ratio(
    input_dimensions=None, output_dimensions=None, super_sampling_ratio: int | None = None
) -> int:
    """Derives and checks the first seed's upscaling ratio.

    Args:
      input_dimensions: LR size (int, (h, w) or (h, w, 3)) or None.
      output_dimensions: HR size, same forms, or None. Given together with input_dimensions.
      super_sampling_ratio: the ratio, or None to derive it from the two sizes.

    Returns:
      The ratio: output / input in both dimensions, an integer power of 2 ≥ 2.

    Raises:
      ValueError: naming the argument, when the sizes do not divide, differ in ratio between
        height and width, are not a power of 2 apart, or disagree with super_sampling_ratio.
    """
    if (input_dimensions is None) != (output_dimensions is None):
        raise ValueError(
            "`input_dimensions` and `output_dimensions` go together: give both or neither "
            f"(got input_dimensions={input_dimensions!r}, "
            f"output_dimensions={output_dimensions!r})."
        )
    if input_dimensions is None:
        if super_sampling_ratio is None:
            raise ValueError(
                "dcgan_generator needs `super_sampling_ratio` or both `input_dimensions` and "
                "`output_dimensions`."
            )
        return check_scale("super_sampling_ratio", super_sampling_ratio)

    in_h, in_w = _dimensions("input_dimensions", input_dimensions)
    out_h, out_w = _dimensions("output_dimensions", output_dimensions)
    if out_h % in_h or out_w % in_w or out_h // in_h != out_w // in_w:
        raise ValueError(
            f"`output_dimensions` {out_w}x{out_h} (W x H) must be the same integer multiple of "
            f"`input_dimensions` {in_w}x{in_h} in width and height."
        )
    ratio = out_h // in_h
    if ratio < 2 or ratio & (ratio - 1):
        raise ValueError(
            f"`output_dimensions` / `input_dimensions` = {ratio} must be a power of 2 "
            f"(2, 4, 8, ...): the generator upsamples in ×2 stages ({in_w}x{in_h} -> "
            f"{out_w}x{out_h}, W x H)."
        )
    if super_sampling_ratio is not None and super_sampling_ratio != ratio:
        raise ValueError(
            f"`super_sampling_ratio`={super_sampling_ratio!r} disagrees with "
            f"`output_dimensions` / `input_dimensions` = {ratio} ({in_w}x{in_h} -> "
            f"{out_w}x{out_h}, W x H)."
        )
    return ratio


@gin.configurable
def dcgan_generator(
    *,
    input_dimensions=None,
    output_dimensions=None,
    super_sampling_ratio: int | None = None,
    conv_filters: int = 64,
    kernel=(5, 5),
    normalization: str = "batch",
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """The first seed's image-folder DCGAN generator: Conv + UpSampling2D stages, tanh.

    One stage (Conv, LeakyReLU, BatchNorm, UpSampling2D ×2) per factor of 2 of the ratio, a
    Conv + LeakyReLU (+ BatchNorm) at the new size, then a Conv to RGB with tanh.

    The seed's user parameters map to gin bindings as follows:

    - `input_dimensions`, `output_dimensions`, `super_sampling_ratio`, `conv_filters`,
      `kernel`: arguments of this function. The model is fully convolutional, so the two
      dimensions only check the ratio (and document the config); give either both sizes,
      the ratio, or all three (they must agree).
    - `batch` -> the `GLOBAL_BATCH_SIZE` macro (summed over replicas).
    - `epochs` -> `train_loop.total_steps` (epochs × images / batch).
    - `interval` -> `train_loop.sample_every_steps` (samples) and
      `train_loop.checkpoint_every_steps` / `train_loop.export_every_steps` (saving),
      counted in steps rather than epochs.
    - `input_path`, `output_path`, `model_path`, `png` -> flags and the preprocessing job.

    Args:
      input_dimensions: LR size, int or (h, w) or (h, w, 3), used only for validation.
      output_dimensions: HR size, same forms, used only for validation.
      super_sampling_ratio: upscaling factor, a power of 2 ≥ 2.
      conv_filters: filters of every hidden conv layer.
      kernel: conv kernel size, int or (kh, kw) (the seed used (5, 5)).
      normalization: "batch" (the seed), "sync_batch" (statistics over the global batch) or
        "none".
      leaky_relu_slope: negative slope of the LeakyReLU activations.

    Returns:
      A keras.Model [N, H, W, 3] -> [N, H·r, W·r, 3], tanh output in [-1, 1].
    """
    ratio = dcgan_ratio(input_dimensions, output_dimensions, super_sampling_ratio)
    check_positive_int("conv_filters", conv_filters)
    kernel = check_kernel("kernel", kernel)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_positive_float("leaky_relu_slope", leaky_relu_slope)

    def conv_block(x, name):
        x = _conv(conv_filters, kernel, f"{name}_conv")(x)
        x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"{name}_act")(x)
        norm = normalization_layer(normalization, f"{name}_norm")
        return norm(x) if norm is not None else x

    lr = keras.Input(shape=(None, None, 3), name="lr")
    x = lr
    for stage in range(num_doublings(ratio)):
        x = conv_block(x, f"stage{stage}")
        x = keras.layers.UpSampling2D(size=2, name=f"stage{stage}_upsample")(x)
    x = conv_block(x, "refine")
    x = _conv(3, kernel, "to_rgb")(x)
    sr = keras.layers.Activation("tanh", dtype="float32", name="sr")(x)
    return keras.Model(lr, sr, name="dcgan_generator")


@gin.configurable
def sr_dcgan_generator(
    scale: int = gin.REQUIRED,
    *,
    num_filters: int = 64,
    num_residual_units: int = 8,
    kernel_size: int = 3,
    normalization: str = "batch",
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """The second seed's CelebA SR-DCGAN generator.

    Conv head, `num_residual_units` residual units (Conv-BN-LeakyReLU-Conv-BN + identity), then
    one upsampling layer (UpSampling2D ×2, Conv, BN, LeakyReLU) per factor of 2 of `scale`
    (the seed's two for ×4), and a Conv to RGB with tanh. BatchNorm and LeakyReLU everywhere
    but the output, as in the seed.

    Args:
      scale: upscaling factor, a power of 2 ≥ 2 (the seed: 4, 32 -> 128).
      num_filters: filters of the hidden conv layers.
      num_residual_units: number of residual units (≥ 0).
      kernel_size: conv kernel size, int or (kh, kw).
      normalization: "batch" (the seed), "sync_batch" or "none".
      leaky_relu_slope: negative slope of the LeakyReLU activations.

    Returns:
      A keras.Model [N, H, W, 3] -> [N, H·scale, W·scale, 3], tanh output in [-1, 1].
    """
    check_scale("scale", scale)
    check_positive_int("num_filters", num_filters)
    check_non_negative_int("num_residual_units", num_residual_units)
    kernel_size = check_kernel("kernel_size", kernel_size)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_positive_float("leaky_relu_slope", leaky_relu_slope)

    def norm_act(x, name, *, activate=True):
        norm = normalization_layer(normalization, f"{name}_norm")
        if norm is not None:
            x = norm(x)
        if activate:
            x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"{name}_act")(x)
        return x

    lr = keras.Input(shape=(None, None, 3), name="lr")
    x = norm_act(_conv(num_filters, kernel_size, "head_conv")(lr), "head")
    for unit in range(num_residual_units):
        name = f"res{unit}"
        y = norm_act(_conv(num_filters, kernel_size, f"{name}_conv1")(x), f"{name}_1")
        y = norm_act(
            _conv(num_filters, kernel_size, f"{name}_conv2")(y), f"{name}_2", activate=False
        )
        x = keras.layers.Add(name=f"{name}_add")([x, y])
    for stage in range(num_doublings(scale)):
        name = f"upsample{stage}"
        x = keras.layers.UpSampling2D(size=2, name=f"{name}_x2")(x)
        x = norm_act(_conv(num_filters, kernel_size, f"{name}_conv")(x), name)
    x = _conv(3, kernel_size, "to_rgb")(x)
    sr = keras.layers.Activation("tanh", dtype="float32", name="sr")(x)
    return keras.Model(lr, sr, name="sr_dcgan_generator")


@gin.configurable
def srresnet_generator(
    scale: int = gin.REQUIRED,
    *,
    num_filters: int = 64,
    num_blocks: int = 16,
    kernel_size: int = 3,
    activation: str = "prelu",
    residual_scaling: float = 1.0,
    upsampler: str = "pixelshuffle",
) -> keras.Model:
    """The recommended default: SRResNet/EDSR-style generator with a global bicubic skip.

    sr = bicubic(lr) + residual(lr). The residual branch is a conv head, `num_blocks` residual
    blocks (Conv-act-Conv, no BatchNorm, so the output never depends on how the batch is
    split across replicas), a long skip, then the upsampler, whose last conv starts at zero
    (kernel and bias): the untrained generator returns exactly bicubic, and training only
    has to learn the correction.

    The output is not squashed (a tanh would fight the bicubic skip) and can leave [-1, 1]
    slightly where bicubic overshoots; the export clips to uint8.

    Args:
      scale: upscaling factor, a power of 2 ≥ 2.
      num_filters: filters of the hidden conv layers.
      num_blocks: number of residual blocks (≥ 0); SRResNet uses 16.
      kernel_size: conv kernel size, int or (kh, kw).
      activation: "prelu" (SRResNet, one slope per channel), "relu" (EDSR) or "leaky_relu".
      residual_scaling: multiplies each block's residual before the add (EDSR uses 0.1 for
        wide models; 1.0 = no scaling).
      upsampler: "pixelshuffle" (SRResNet: a conv + pixel-shuffle ×2 stage per factor of 2,
        then a conv to RGB at full size) or "pixelshuffledirect" (ESPCN and SwinIR's
        lightweight models: one conv to 3·scale² channels and a single pixel shuffle). The
        first spends most of a small model's multiply-adds at 2× and 4× resolution (about
        60% at 48 filters, 6 blocks, ×4); the second keeps nearly all of them in the
        residual blocks at LR resolution, so more blocks fit the same budget.
        "nearest_conv" (ESRGAN/Real-ESRGAN's RRDBNet: per factor of 2, a nearest-neighbour
        ×2 resize, then a conv): a resize-convolution, free of the checkerboard a
        sub-pixel conv starts with and of the block grid ICNR gives it instead (Odena et al.
        2016); it costs 4× the multiply-adds of "pixelshuffle" per stage.

    Returns:
      A keras.Model [N, H, W, 3] -> [N, H·scale, W·scale, 3] (float32).
    """
    check_scale("scale", scale)
    check_positive_int("num_filters", num_filters)
    check_non_negative_int("num_blocks", num_blocks)
    kernel_size = check_kernel("kernel_size", kernel_size)
    check_choice("activation", activation, ACTIVATIONS)
    residual_scaling = check_positive_float("residual_scaling", residual_scaling)
    check_choice("upsampler", upsampler, UPSAMPLERS)

    lr = keras.Input(shape=(None, None, 3), name="lr")
    # The skip is resized in float32 even under mixed precision: it carries the whole image.
    bicubic = BicubicUpsample(scale, dtype="float32", name="bicubic")(lr)

    head = _conv(num_filters, kernel_size, "head_conv")(lr)
    x = head
    for block in range(num_blocks):
        name = f"block{block}"
        y = _conv(num_filters, kernel_size, f"{name}_conv1")(x)
        y = activation_layer(activation, f"{name}_act")(y)
        y = _conv(num_filters, kernel_size, f"{name}_conv2")(y)
        if residual_scaling != 1.0:
            y = keras.layers.Rescaling(residual_scaling, name=f"{name}_scale")(y)
        x = keras.layers.Add(name=f"{name}_add")([x, y])
    x = _conv(num_filters, kernel_size, "body_conv")(x)
    x = keras.layers.Add(name="long_skip")([head, x])
    zeros = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}
    if upsampler == "pixelshuffledirect":
        x = _conv(3 * scale * scale, kernel_size, "to_rgb_subpixels", **zeros)(x)
        residual = PixelShuffle(scale, name="to_rgb_shuffle")(x)
    elif upsampler == "nearest_conv":
        for stage in range(num_doublings(scale)):
            name = f"upsample{stage}"
            x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_resize")(x)
            x = _conv(num_filters, kernel_size, f"{name}_conv")(x)
            x = activation_layer(activation, f"{name}_act")(x)
        residual = _conv(3, kernel_size, "to_rgb", **zeros)(x)
    else:
        for stage in range(num_doublings(scale)):
            name = f"upsample{stage}"
            x = _conv(num_filters * 4, kernel_size, f"{name}_conv", kernel_initializer=ICNR(2))(x)
            x = PixelShuffle(2, name=f"{name}_shuffle")(x)
            x = activation_layer(activation, f"{name}_act")(x)
        residual = _conv(3, kernel_size, "to_rgb", **zeros)(x)
    sr = keras.layers.Add(dtype="float32", name="sr")([bicubic, residual])
    return keras.Model(lr, sr, name="srresnet_generator")
