"""An exported ``.tflite`` file in LiteRT. Imports no TensorFlow (see `dlss_dist.serving`).

The model (`dlss_dist.exporters.tflite_model`) has one signature, ``serving_default``:
uint8 ``images`` NHWC in, uint8 ``upscaled`` out; its factor is found by one 8x8 call.
"""

from __future__ import annotations

import numpy as np

from dlss_dist import files
from dlss_dist.export_formats import INPUT_NAME, OUTPUT_NAME, TFLITE_SIGNATURE_KEY
from dlss_dist.serving.upscaler import ModelError


class TFLiteRuntime:
    """``upscale_batch(uint8 NHWC) -> uint8 NHWC`` with the LiteRT interpreter.

    Attributes:
      path: the model file.
      scale: upscaling factor, found by upscaling an 8x8 input once.
    """

    format = "tflite"
    max_input_pixels = None  # no in-graph limit: the Upscaler's tiles bound memory

    def __init__(self, path: str, *, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ImportError(
                f"running .tflite models needs LiteRT: pip install 'dlss_dist[tflite]' ({error})"
            ) from error
        self.path = path
        try:
            self._interpreter = Interpreter(
                model_content=files.read_bytes(path), num_threads=threads
            )
        except ValueError as error:
            raise ValueError(f"{path} is not a loadable TFLite model: {error}") from None
        signatures = self._interpreter.get_signature_list()
        key = TFLITE_SIGNATURE_KEY
        if key not in signatures or signatures[key]["inputs"] != [INPUT_NAME]:
            raise ValueError(
                f"{path} has no {key}({INPUT_NAME}): not a dlss_dist TFLite export "
                "(made by dlss-export --format=tflite)"
            )
        self._runner = self._interpreter.get_signature_runner(key)
        self.scale = self.upscale_batch(np.zeros((1, 8, 8, 3), np.uint8)).shape[1] // 8

    def upscale_batch(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> uint8 [N, sH, sW, 3] in one call (no tiling)."""
        images = np.ascontiguousarray(images, np.uint8)
        # The runner resizes the input tensor and re-plans memory when the shape changes.
        try:
            return self._runner(**{INPUT_NAME: images})[OUTPUT_NAME].copy()
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"LiteRT refused the input: {error}") from None
