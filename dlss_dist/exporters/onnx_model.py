"""ONNX export of a generator (tf2onnx); `dlss_dist.serving.onnx_file` runs it.

The model: input ``images`` uint8 ``[batch, height, width, 3]`` (RGB, NHWC, 0-255), output
``upscaled`` uint8 ``[batch, out_height, out_width, 3]`` with out = scale x in; all four
named dimensions are dynamic. The upscaling factor is in the model's metadata
(``dlss_dist.scale``). ``--onnx_layout=nchw`` (``layout="nchw"``) gives ``[batch, 3, height,
width]`` in and out instead, the layout TensorRT prefers. The names are
`dlss_dist.export_formats`'.

Why tf2onnx, called directly: it is the converter Keras 3's own ``model.export(format="onnx")``
uses for the TensorFlow backend, it installs beside TF 2.21 (no protobuf pin since 1.17), and
called on our `UpscaleGraph` it keeps the uint8 convention of the SavedModel's ``upscale``
signature, where Keras's export would give float32 in the model's [-1, 1] range.

The converted graph is then rewritten for ONNX Runtime's CPU layout (`onnx_rewrites`: PReLU and
the last pixel shuffle; the same function, about 0.85x the CPU time).
"""

from __future__ import annotations

import keras
from absl import logging

from dlss_dist import files
from dlss_dist.export_formats import (
    INPUT_NAME,
    ONNX_LAYOUT_KEY,
    ONNX_LAYOUTS,
    ONNX_SCALE_KEY,
    OUTPUT_NAME,
)
from dlss_dist.exporters import onnx_rewrites
from dlss_dist.exporters.graph import UpscaleGraph

# A recent opset that current ONNX Runtime and TensorRT releases both read (--onnx_opset).
DEFAULT_OPSET = 17


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
    cpu_rewrites: bool = True,
) -> str:
    """Writes `generator` as an ONNX model file at `path` (written atomically); returns `path`.

    Args:
      generator: fully convolutional Keras model, float32 NHWC in [-1, 1] in and out.
      path: the .onnx file to write (local or gs://).
      scale: the generator's upscaling factor, stored in the model's metadata.
      opset: ONNX opset to target.
      layout: "nhwc" (as the SavedModel) or "nchw" (inputs and outputs transposed).
      cpu_rewrites: rewrite PReLU and the last pixel shuffle into the ops ONNX Runtime's CPU
        provider runs in its blocked layout (`onnx_rewrites`: the same function in about
        0.85x the CPU time, BENCHMARKS.md). False keeps tf2onnx's graph as converted.
    """
    try:
        import onnx
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs tf2onnx and onnx: pip install 'dlss_dist[export]' ({error})"
        ) from error
    if layout not in ONNX_LAYOUTS:
        raise ValueError(f"layout must be one of {ONNX_LAYOUTS}, got {layout!r}")
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
    if cpu_rewrites:
        applied = onnx_rewrites.optimize_for_cpu(model)
        logging.debug("ONNX rewrites for ONNX Runtime's CPU layout: %s", applied)
    _name_dimensions(model, layout)
    onnx.helper.set_model_props(
        model, {ONNX_SCALE_KEY: str(scale), ONNX_LAYOUT_KEY: layout, "dlss_dist.dtype": "uint8"}
    )
    model.doc_string = (
        f"dlss_dist x{scale} super-resolution generator: {INPUT_NAME} uint8 RGB {layout} "
        f"[0, 255] -> {OUTPUT_NAME} uint8 RGB {layout}, {scale}x the height and width"
    )
    onnx.checker.check_model(model)
    files.atomic_write(path, model.SerializeToString())
    logging.debug("Exported the generator (x%d) as ONNX opset %d to %s", scale, opset, path)
    return path
