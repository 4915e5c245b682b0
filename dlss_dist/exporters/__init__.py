"""Exports of the generator beyond the TF Serving SavedModel (`dlss_dist.export`).

* `onnx_model`: ONNX for ONNX Runtime / TensorRT (converted with tf2onnx), and a runner.
* `tflite_model`: TFLite (LiteRT) float32 and float16 flatbuffers, and a runner.

Both convert the same graph (`graph.UpscaleGraph`), whose convention matches the
SavedModel's ``upscale`` signature: uint8 RGB NHWC ``[N, H, W, 3]`` in, uint8
``[N, sH, sW, 3]`` out, any N, H and W. See docs/export-and-serving-formats.md.
"""

from __future__ import annotations

import os

from dlss_dist.exporters import onnx_model, tflite_model

FORMATS = ("savedmodel", "onnx", "tflite")
ONNX_FILE = "model.onnx"
TFLITE_FILES = {"float32": "model.tflite", "float16": "model_fp16.tflite"}


def export_files(
    generator,
    version_dir: str,
    *,
    scale: int,
    formats: list[str],
    onnx_opset: int | None = None,
    onnx_layout: str = "nhwc",
    tflite_variants: tuple[str, ...] = ("float32", "float16"),
) -> dict[str, str]:
    """Writes the ONNX/TFLite files asked for in `formats` into `version_dir`.

    Files: ``model.onnx``; ``model.tflite`` (float32) and ``model_fp16.tflite`` (float16). A
    version folder holding only ``model.onnx`` is also the layout of a Triton Inference Server
    model repository (``<repository>/<model>/<version>/model.onnx``).

    Returns:
      {"onnx": path, "tflite_float32": path, ...} for what was written ("savedmodel" in
      `formats` is ignored here: `dlss_dist.export.export_generator` writes it).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    written = {}
    if "onnx" in formats:
        written["onnx"] = onnx_model.export_onnx(
            generator,
            os.path.join(version_dir, ONNX_FILE),
            scale=scale,
            opset=onnx_opset or onnx_model.DEFAULT_OPSET,
            layout=onnx_layout,
        )
    if "tflite" in formats:
        for variant in tflite_variants:
            if variant not in TFLITE_FILES:
                raise ValueError(
                    f"unknown TFLite variant {variant!r}; choose from {list(TFLITE_FILES)}"
                )
            written[f"tflite_{variant}"] = tflite_model.export_tflite(
                generator,
                os.path.join(version_dir, TFLITE_FILES[variant]),
                scale=scale,
                variant=variant,
            )
    return written
