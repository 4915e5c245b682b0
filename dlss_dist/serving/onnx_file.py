"""An exported ``.onnx`` file in ONNX Runtime. Imports no TensorFlow (see `dlss_dist.serving`).

The model (`dlss_dist.exporters.onnx_model`) takes uint8 NHWC (or NCHW, by its
``dlss_dist.layout`` metadata) and returns uint8; its factor is in ``dlss_dist.scale``.
"""

from __future__ import annotations

import numpy as np

from dlss_dist import files
from dlss_dist.export_formats import (
    INPUT_NAME,
    ONNX_LAYOUT_KEY,
    ONNX_SCALE_KEY,
    OUTPUT_NAME,
)
from dlss_dist.serving.upscaler import ModelError


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            f"running .onnx models needs ONNX Runtime: pip install 'dlss_dist[onnx]' ({error})"
        ) from error
    return onnxruntime


def session_options(threads: int = 0, *, spinning: bool = False):
    """ONNX Runtime session options for these convolutional generators on a CPU.

    Args:
      threads: intra-op threads, 0 for ONNX Runtime's default (one per core).
      spinning: let idle worker threads busy-wait for the next op. ONNX Runtime does by
        default; off, a call took 0.75-0.86x the time on a shared 2-core machine (the
        spinning threads compete with the ones doing the work; BENCHMARKS.md).
    """
    onnxruntime = _import_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # All graph optimisations, including the NCHWc conv layout (the default; BASIC was
    # 1.3x slower here).
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The memory pattern (planned from the first run at a shape) is allocated as one more
    # block beside the arena's chunks from that first run: the second call at a shape grew
    # the process by another 0.7 GB (starter model, 215-pixel tile: 1.5 GB resident instead
    # of 0.8 GB), and a call back at a shape after another one by 0.9 GB again, breaking the
    # memory budget the tiles are sized for; without it the arena's chunks are reused
    # across shapes, at no measurable cost in speed here.
    options.enable_mem_pattern = False
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntime:
    """``upscale_batch(uint8 NHWC) -> uint8 NHWC`` with an ONNX Runtime session.

    Attributes:
      path: the model file.
      scale: upscaling factor (from the model's metadata).
      layout: "nhwc" or "nchw", the model's own layout; `upscale_batch` always takes and
        returns NHWC, transposing for an NCHW model.
    """

    format = "onnx"
    max_input_pixels = None  # ONNX has no in-graph limit: the Upscaler's tiles bound memory

    def __init__(
        self,
        path: str,
        *,
        providers: list[str] | None = None,
        threads: int = 0,
        spinning: bool = False,
    ):
        onnxruntime = _import_onnxruntime()
        self.path = path
        try:
            self._session = onnxruntime.InferenceSession(
                files.read_bytes(path),
                session_options(threads, spinning=spinning),
                providers=providers or ["CPUExecutionProvider"],
            )
        except Exception as error:  # onnxruntime's own exception types are not public API
            if isinstance(error, OSError):
                raise
            raise ValueError(
                f"{path} is not a loadable ONNX model: {str(error).splitlines()[0][:300]}"
            ) from None
        metadata = self._session.get_modelmeta().custom_metadata_map
        if ONNX_SCALE_KEY not in metadata:
            raise ValueError(
                f"{path} has no {ONNX_SCALE_KEY} metadata: not a dlss_dist ONNX export "
                f"(made by dlss-export --format=onnx)"
            )
        self.scale = int(metadata[ONNX_SCALE_KEY])
        self.layout = metadata.get(ONNX_LAYOUT_KEY, "nhwc")

    def upscale_batch(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> uint8 [N, sH, sW, 3] in one call (no tiling)."""
        images = np.asarray(images, np.uint8)
        if self.layout == "nchw":
            images = images.transpose(0, 3, 1, 2)
        try:
            (output,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images)})
        except Exception as error:  # onnxruntime's InvalidArgument/Fail are not public API
            raise ModelError(f"ONNX Runtime refused the input: {error}") from None
        return output.transpose(0, 2, 3, 1) if self.layout == "nchw" else output
