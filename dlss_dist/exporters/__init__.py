"""Exports of the generator beyond the TF Serving SavedModel (`dlss_dist.export`).

* `onnx_model`: ONNX for ONNX Runtime / TensorRT (converted with tf2onnx).
* `tflite_model`: TFLite (LiteRT) float32 and float16 flatbuffers.

They are run by `dlss_dist.serving` (`load_upscaler`), which needs no TensorFlow for them.

Both convert the same graph (`graph.UpscaleGraph`), whose convention matches the
SavedModel's ``upscale`` signature: uint8 RGB NHWC ``[N, H, W, 3]`` in, uint8
``[N, sH, sW, 3]`` out, any N, H and W. See docs/export-and-serving-formats.md.
"""

from __future__ import annotations

import os

from dlss_dist import export, files
from dlss_dist.export_formats import FORMATS, ONNX_FILE, TFLITE_FILES
from dlss_dist.exporters import onnx_model, tflite_model


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
    validate_formats(formats, tflite_variants)
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
            written[f"tflite_{variant}"] = tflite_model.export_tflite(
                generator,
                os.path.join(version_dir, TFLITE_FILES[variant]),
                scale=scale,
                variant=variant,
            )
    return written


def validate_formats(formats, tflite_variants=("float32", "float16")) -> None:
    """Raises ValueError for an unknown format or TFLite variant (before anything is written)."""
    if not formats:
        raise ValueError(f"no export format given; choose from {list(FORMATS)}")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    if "tflite" in formats:
        if not tflite_variants:
            raise ValueError(f"no TFLite variant given; choose from {list(TFLITE_FILES)}")
        unknown = sorted(set(tflite_variants) - set(TFLITE_FILES))
        if unknown:
            raise ValueError(
                f"unknown TFLite variant(s) {unknown}; choose from {list(TFLITE_FILES)}"
            )


def check_dependencies(formats) -> None:
    """Raises ImportError, naming the extra to install, when a format's converter is missing."""
    import importlib.util

    needs = {"onnx": ("tf2onnx", "onnx")}
    for fmt in formats:
        missing = [m for m in needs.get(fmt, ()) if importlib.util.find_spec(m) is None]
        if missing:
            raise ImportError(
                f"--format={fmt} needs {', '.join(missing)}: pip install 'dlss_dist[export]'"
            )


def check_version_folder(version_dir: str, *, overwrite: bool) -> None:
    """Refuses a version folder that already holds files, unless `overwrite`.

    A version folder is one model: `export_version` replaces it whole, never adds to it, so
    two models' files are never mixed in one folder.

    Raises:
      files.OutputExistsError: `version_dir` is not empty and `overwrite` is False.
    """
    if not files.isdir(version_dir):
        if files.exists(version_dir):
            raise ValueError(f"{version_dir} is a file, not a version folder")
        return
    names = sorted(files.list_dir(version_dir))
    if names and not overwrite:
        shown = ", ".join(files.printable(n) for n in names[:4]) + (
            " ..." if len(names) > 4 else ""
        )
        raise files.OutputExistsError(
            f"{version_dir} already holds an export ({shown}); pass --overwrite to replace "
            "that whole version, or --export_version=N to write a new one"
        )


def export_version(
    generator,
    export_dir: str,
    version: int,
    *,
    scale: int,
    formats: list[str],
    max_input_pixels: int = export.DEFAULT_MAX_INPUT_PIXELS,
    overwrite: bool = False,
    onnx_opset: int | None = None,
    onnx_layout: str = "nhwc",
    tflite_variants: tuple[str, ...] = ("float32", "float16"),
) -> dict[str, str]:
    """Writes `generator` in every format of `formats` to ``<export_dir>/<version>/``.

    Everything is checked first (formats, variants, an occupied version folder), then
    written into a hidden staging folder beside the version folder and renamed into place
    when complete; with `overwrite` an existing version folder is replaced whole.

    Returns:
      {"SavedModel": <version_dir>, "onnx": <path>, "tflite_float32": <path>, ...}: the final
      paths of what was written.

    Raises:
      ValueError: an unknown format or variant; files.OutputExistsError: the version folder
        holds files and `overwrite` is False. In both cases nothing was written.
    """
    validate_formats(formats, tflite_variants)
    check_dependencies(formats)
    version_dir = os.path.join(export_dir, str(version))
    check_version_folder(version_dir, overwrite=overwrite)
    written = {}
    with files.staged_folder(version_dir, replace=overwrite) as staging:
        if "savedmodel" in formats:
            export.export_generator(
                generator, staging, scale=scale, max_input_pixels=max_input_pixels
            )
            written["SavedModel"] = staging
        written.update(
            export_files(
                generator,
                staging,
                scale=scale,
                formats=formats,
                onnx_opset=onnx_opset,
                onnx_layout=onnx_layout,
                tflite_variants=tflite_variants,
            )
        )
    return {kind: version_dir + path[len(staging) :] for kind, path in written.items()}
