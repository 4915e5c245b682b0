"""ONNX export of a generator (tf2onnx) and an ONNX Runtime runner for it.

The model: input ``images`` uint8 ``[batch, height, width, 3]`` (RGB, NHWC, 0-255), output
``upscaled`` uint8 ``[batch, out_height, out_width, 3]`` with out = scale x in; all four
named dimensions are dynamic. The upscaling factor is in the model's metadata
(``dlss_dist.scale``). ``--onnx_layout=nchw`` (``layout="nchw"``) gives ``[batch, 3, height,
width]`` in and out instead, the layout TensorRT prefers.

Why tf2onnx, called directly: it is the converter Keras 3's own ``model.export(format="onnx")``
uses for the TensorFlow backend, it installs beside TF 2.21 (no protobuf pin since 1.17), and
called on our `UpscaleGraph` it keeps the uint8 convention of the SavedModel's ``upscale``
signature, where Keras's export would give float32 in the model's [-1, 1] range.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dlss_dist import files
from dlss_dist.exporters.graph import INPUT_NAME, OUTPUT_NAME, UpscaleGraph

# A recent opset that current ONNX Runtime and TensorRT releases both read (--onnx_opset).
DEFAULT_OPSET = 17
LAYOUTS = ("nhwc", "nchw")
SCALE_KEY = "dlss_dist.scale"
LAYOUT_KEY = "dlss_dist.layout"


def _name_dimensions(model, layout: str) -> None:
    """Replaces tf2onnx's generated symbolic dimension names (unk__123) by readable ones."""
    names = {
        "nhwc": (["batch", "height", "width", None], ["batch", "out_height", "out_width", None]),
        "nchw": (["batch", None, "height", "width"], ["batch", None, "out_height", "out_width"]),
    }[layout]
    for value, dims in zip((model.graph.input[0], model.graph.output[0]), names, strict=True):
        for dim, name in zip(value.type.tensor_type.shape.dim, dims, strict=True):
            if name is not None:
                dim.dim_param = name


def export_onnx(
    generator: keras.Model,
    path: str,
    *,
    scale: int,
    opset: int = DEFAULT_OPSET,
    layout: str = "nhwc",
) -> str:
    """Writes `generator` as an ONNX model file at `path` (written atomically); returns `path`.

    Args:
      generator: fully convolutional Keras model, float32 NHWC in [-1, 1] in and out.
      path: the .onnx file to write (local or gs://).
      scale: the generator's upscaling factor, stored in the model's metadata.
      opset: ONNX opset to target.
      layout: "nhwc" (as the SavedModel) or "nchw" (inputs and outputs transposed).
    """
    try:
        import onnx
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs tf2onnx and onnx: pip install 'dlss_dist[onnx]' ({error})"
        ) from error
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    graph = UpscaleGraph(generator)
    nchw = layout == "nchw"
    # tf2onnx logs every rewrite pass at INFO; keep the CLI's output to what it did.
    tf2onnx.logging.set_level(logging.ERROR)
    model, _ = tf2onnx.convert.from_function(
        graph.upscale,
        input_signature=graph.upscale.input_signature,
        opset=opset,
        inputs_as_nchw=[INPUT_NAME] if nchw else None,
        outputs_as_nchw=[OUTPUT_NAME] if nchw else None,
    )
    _name_dimensions(model, layout)
    onnx.helper.set_model_props(
        model, {SCALE_KEY: str(scale), LAYOUT_KEY: layout, "dlss_dist.dtype": "uint8"}
    )
    model.doc_string = (
        f"dlss_dist x{scale} super-resolution generator: {INPUT_NAME} uint8 RGB {layout} "
        f"[0, 255] -> {OUTPUT_NAME} uint8 RGB {layout}, {scale}x the height and width"
    )
    onnx.checker.check_model(model)
    files.atomic_write(path, model.SerializeToString())
    logging.info("Exported the generator (x%d) as ONNX opset %d to %s", scale, opset, path)
    return path


class OnnxUpscaler:
    """An exported ONNX model in ONNX Runtime: ``upscale_batch(uint8 NHWC) -> uint8 NHWC``.

    Attributes:
      path: the model file.
      scale: upscaling factor (from the model's metadata).
      layout: "nhwc" or "nchw", the model's own layout; `upscale_batch` always takes and
        returns NHWC, transposing for an NCHW model.
    """

    def __init__(self, path: str, *, providers: list[str] | None = None, threads: int = 0):
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError(
                f"running ONNX models needs onnxruntime: pip install 'dlss_dist[onnx]' ({error})"
            ) from error
        self.path = path
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (all cores)
        with tf.io.gfile.GFile(path, "rb") as f:
            content = f.read()
        self._session = onnxruntime.InferenceSession(
            content, options, providers=providers or ["CPUExecutionProvider"]
        )
        metadata = self._session.get_modelmeta().custom_metadata_map
        if SCALE_KEY not in metadata:
            raise ValueError(f"{path} has no {SCALE_KEY} metadata: not a dlss_dist ONNX export")
        self.scale = int(metadata[SCALE_KEY])
        self.layout = metadata.get(LAYOUT_KEY, "nhwc")

    def upscale_batch(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> uint8 [N, sH, sW, 3] in one call (no tiling)."""
        images = np.asarray(images, np.uint8)
        if self.layout == "nchw":
            images = images.transpose(0, 3, 1, 2)
        (output,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images)})
        return output.transpose(0, 2, 3, 1) if self.layout == "nchw" else output
