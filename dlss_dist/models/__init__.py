"""Gin-configurable generators, discriminators and losses.

Importing this package registers every configurable with gin, so a config can say

    build_generator.network = @srresnet_generator
    srresnet_generator.scale = %SCALE
    build_discriminator.network = @srgan_discriminator

and the trainer calls `build_generator()` / `build_discriminator()`.
"""

from __future__ import annotations

import gin
import keras

from dlss_dist.models import discriminators, generators, losses
from dlss_dist.models.discriminators import (
    dcgan_discriminator,
    sr_dcgan_discriminator,
    srgan_discriminator,
    unet_discriminator,
)
from dlss_dist.models.generators import dcgan_generator, sr_dcgan_generator, srresnet_generator
from dlss_dist.models.layers import BicubicUpsample, PixelShuffle, SpectralNormConv2D
from dlss_dist.models.losses import (
    PerceptualLoss,
    discriminator_loss,
    generator_adversarial_loss,
    pixel_loss,
)

__all__ = [
    "BicubicUpsample",
    "PerceptualLoss",
    "PixelShuffle",
    "SpectralNormConv2D",
    "build_discriminator",
    "build_generator",
    "dcgan_discriminator",
    "dcgan_generator",
    "discriminator_loss",
    "discriminators",
    "generator_adversarial_loss",
    "generators",
    "losses",
    "pixel_loss",
    "sr_dcgan_discriminator",
    "sr_dcgan_generator",
    "srgan_discriminator",
    "srresnet_generator",
    "unet_discriminator",
]


def _build(argument: str, network) -> keras.Model:
    if not callable(network):
        raise ValueError(
            f"`{argument}` must be a model builder such as @srresnet_generator, got {network!r}."
        )
    model = network()
    if not isinstance(model, keras.Model):
        raise ValueError(f"`{argument}`={network!r} returned {type(model).__name__}, not a Model.")
    return model


@gin.configurable
def build_generator(network=gin.REQUIRED) -> keras.Model:
    """Builds the generator chosen in gin.

    Args:
      network: a generator builder, bound in gin as a reference: `@srresnet_generator`,
        `@sr_dcgan_generator` or `@dcgan_generator` (called with no arguments; its own
        parameters are gin bindings too).

    Returns:
      A fully convolutional keras.Model, float32 images [N, H, W, 3] in [-1, 1] ->
      [N, H·scale, W·scale, 3].
    """
    return _build("build_generator.network", network)


@gin.configurable
def build_discriminator(network=gin.REQUIRED) -> keras.Model:
    """Builds the discriminator chosen in gin.

    Args:
      network: a discriminator builder, bound in gin as a reference: `@srgan_discriminator`,
        `@sr_dcgan_discriminator` or `@dcgan_discriminator`.

    Returns:
      A keras.Model, images [N, H, W, 3] in [-1, 1] (any H, W) -> logits [N].
    """
    return _build("build_discriminator.network", network)
