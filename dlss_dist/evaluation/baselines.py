"""The two baselines every super-resolution model is scored against: bicubic and nearest.

The bicubic baseline runs the very function the generators' global skip uses
(`models.layers.bicubic_upsample`, MATLAB `imresize` conventions) on the same uint8 <-> [-1, 1]
mapping as the exported model, so an untrained generator with the skip scores exactly the
bicubic baseline. It equals `imaging.imresize` (float64) up to float32 rounding: at most one
grey level, on a few pixels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dlss_dist import imaging
from dlss_dist.data import pipeline
from dlss_dist.models import layers


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """Enlarges a uint8 HxWx3 image `scale`x with the generators' bicubic; returns uint8."""
    imaging.check_scale(scale)
    images = pipeline.to_float(tf.constant(np.asarray(lr, np.uint8)[None]))
    return pipeline.to_uint8(layers.bicubic_upsample(images, scale))[0].numpy()


def nearest(lr: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement: every pixel becomes a `scale` x `scale` block."""
    return imaging.upscale_nearest(lr, scale)
