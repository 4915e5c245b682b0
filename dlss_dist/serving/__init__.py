"""A model on disk, in any format, as one `Upscaler`.

    upscaler = serving.load_upscaler("realworld_x4")        # or a path: see below
    sr = upscaler(image)                                        # uint8 HxWx3 -> uint8

`load_upscaler` takes a SavedModel, an export root, a training model directory, a ``.onnx``
or ``.tflite`` file, or a starter model's name (`dlss_dist.serving.loading`); every one
comes back as the same `Upscaler`, with the same input checks, pixel limit and tiling by a
memory budget (`dlss_dist.serving.upscaler`). Importing this package imports no TensorFlow:
ONNX and TFLite models run with ONNX Runtime or LiteRT alone (``pip install
'dlss_dist[onnx]'``); the TensorFlow formats import it when they are loaded.
"""

from dlss_dist.serving.loading import (
    ModelSource,
    check_convertible,
    load_upscaler,
    locate,
    needs_tensorflow,
)
from dlss_dist.serving.memory import DEFAULT_MAX_MEMORY, parse_memory
from dlss_dist.serving.starters import available as starter_models
from dlss_dist.serving.tiling import DEFAULT_TILE_OVERLAP, MIN_TILE, validate_tiling
from dlss_dist.serving.upscaler import ModelError, Upscaler

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_TILE_OVERLAP",
    "MIN_TILE",
    "ModelError",
    "ModelSource",
    "Upscaler",
    "check_convertible",
    "load_upscaler",
    "locate",
    "needs_tensorflow",
    "parse_memory",
    "starter_models",
    "validate_tiling",
]
