"""Evaluates a model (any format: `dlss_dist.serving`) against bicubic and nearest upscaling.

The library behind ``dlss-eval``. Data is either a dataset written by ``dlss-preprocess``
(its LR images are used as they are, after checking the dataset's degradation and scale) or
a plain folder of HR images (cropped to a multiple of the scale, LR made with
`dlss_dist.imaging.degrade_bicubic`, the same function the Beam job uses). ``degradation``
selects a named evaluation degradation (`dlss_dist.degradations.EVALUATION_DEGRADATIONS`:
``bicubic``, or ``realistic`` = blur + bicubic + noise + JPEG, deterministic per image key);
any other than ``bicubic`` makes LR from the HR images, for datasets too.

Outputs in ``output_dir``:

* ``metrics.json``: mean PSNR/SSIM per method on RGB and Y (format in `evaluate`);
* ``per_image.csv``: one row per image, ``<method>_<metric>`` columns;
* ``grids/NNNN_<key>.png``: nearest (the LR input) | bicubic | SR | HR, labelled with PSNR.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from dlss_dist import degradations, imaging, serving, upscale
from dlss_dist.data import pipeline, schema, verify
from dlss_dist.evaluation import baselines, metrics, pictures

METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.csv"
GRIDS_DIR = "grids"
METHODS = ("model", "bicubic", "nearest")
METRIC_NAMES = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")


def _degraded(
    examples: Iterator[tuple[str, np.ndarray, np.ndarray]],
    degradation: degradations.EvaluationDegradation,
    scale: int,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Replaces each example's LR with the named degradation of its HR."""
    for key, _, hr in examples:
        yield key, degradation(hr, scale, key=key), hr


def _dataset_examples(
    data_dir: str, split: str, scale: int, *, skip_damaged: bool, skipped: list[dict]
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    manifest = schema.read_manifest(data_dir)
    pipeline.check_compatible(
        manifest, scale=scale, degradation=imaging.DEGRADATION, consumer="the model"
    )
    # The manifest decides whether a split has examples; a missing shard file is damage,
    # named by the checks below.
    files = schema.tfrecord_files(data_dir, split)
    if not schema.split_has_examples(manifest, split):
        available = [s for s, info in manifest.get("splits", {}).items() if info.get("written")]
        raise ValueError(
            f"split {split!r} of {data_dir} has no examples (splits with examples: {available})"
        )
    if skip_damaged:
        files, _ = pipeline.readable_shards(data_dir, manifest, split, skip_damaged=True)
    else:
        verify.check_split_sizes(data_dir, manifest, split)  # names damaged files, cheaply
    if skip_damaged:
        for report in verify.scan_split(data_dir, split, manifest):
            if not report.ok:
                skipped.append(
                    {"input": report.path, "reason": "damaged", "message": report.describe()}
                )
    read_file = pipeline.record_reader(skip_damaged)
    dataset = tf.data.Dataset.from_tensor_slices(files).flat_map(read_file)
    try:
        for example in dataset.map(schema.decode_example).as_numpy_iterator():
            yield example["key"].decode(), example["lr"], example["hr"]
    except tf.errors.OpError as error:
        explained = verify.read_error(data_dir, error)
        if explained is None:
            raise
        raise explained from error


def _folder_examples(
    folder: str, scale: int, skipped: list[dict]
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    files, failures = upscale.list_inputs([folder])
    skipped.extend(failures)
    for path in files:
        try:
            hr = imaging.read_image(path)
        except imaging.ImageRejected as e:
            skipped.append({"input": path, "reason": e.reason, "message": str(e)})
            logging.warning("Skipping %s: %s", path, e)
            continue
        # "modcrop": drop the bottom/right rows and columns that do not fill a whole LR pixel.
        height, width = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
        hr = hr[:height, :width]
        if not height or not width:
            skipped.append({"input": path, "reason": "too_small", "message": f"{hr.shape}"})
            continue
        yield os.path.relpath(path, folder), imaging.degrade_bicubic(hr, scale), hr


def _safe_name(key: str) -> str:
    stem, extension = os.path.splitext(key)
    if extension.lower() in imaging.IMAGE_EXTENSIONS:
        key = stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:80] or "image"


def _finite_or_none(value: float) -> float | None:
    # JSON has no Infinity: identical images (PSNR = inf) are written as null.
    return value if math.isfinite(value) else None


def evaluate(
    *,
    model: str,
    data: str,
    output_dir: str,
    split: str = "test",
    max_images: int | None = None,
    max_grids: int = 8,
    tile: int = 0,
    skip_damaged_records: bool = False,
    degradation: str = "bicubic",
    max_memory: int | str = serving.DEFAULT_MAX_MEMORY,
) -> dict:
    """Measures the model, bicubic and nearest on `data` and writes the reports.

    Args:
      model: anything `dlss_dist.serving.load_upscaler` takes (a SavedModel, export root,
        training model directory, .onnx/.tflite file or starter model name), or an `Upscaler`.
      data: a dlss-preprocess dataset folder (has manifest.json) or a folder of HR images.
      output_dir: where metrics.json, per_image.csv and grids/ are written.
      split: dataset split to evaluate (ignored for a plain folder).
      max_images: evaluate only the first N images.
      max_grids: write comparison grids for the first N images.
      tile: tile size for the model (0: tiles chosen by `max_memory`).
      skip_damaged_records: evaluate the readable records of a damaged dataset (each damaged
        file is listed in ``skipped``) instead of stopping with an error naming it.
      degradation: named evaluation degradation making LR from HR (``bicubic``: the
        dataset's stored LR, or bicubic for folders; ``realistic``: see degradations.py).
      max_memory: peak memory to stay under when tiling (bytes or e.g. "2G").

    Returns:
      The metrics.json content::

        {"model": ".../export/2000", "model_format": "savedmodel", "data": "...",
         "source": "dataset"|"folder",
         "split": "test"|null, "scale": 4, "border_crop": 4,
         "degradation": "bicubic_matlab_antialias" | "realistic",
         "degradation_spec": {"name", "blur", "downscale", "noise", "jpeg_quality"},
         "num_images": 10,
         "skipped": [{"input", "reason", "message"}, ...],
         "metrics": {"model":   {"psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y"},
                     "bicubic": {...}, "nearest": {...}},
         "conventions": {...}}

      PSNR in dB, SSIM in [0, 1], means over images; a mean that is infinite (identical
      images) is null.
    """
    if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
        raise ValueError(f"--output_dir={output_dir} is a file, not a folder")
    if not tf.io.gfile.exists(data):
        raise FileNotFoundError(f"--data={data} does not exist")
    serving.validate_tiling(tile, None)
    named = degradations.evaluation_degradation(degradation)
    if isinstance(model, serving.Upscaler):
        upscaler = model
    else:
        upscaler = serving.load_upscaler(model, max_memory=max_memory)
    scale = upscaler.scale
    skipped: list[dict] = []
    is_dataset = tf.io.gfile.exists(os.path.join(data, schema.MANIFEST_FILE))
    if is_dataset:
        examples = _dataset_examples(
            data, split, scale, skip_damaged=skip_damaged_records, skipped=skipped
        )
    elif tf.io.gfile.isdir(data):
        examples = _folder_examples(data, scale, skipped)
    else:
        raise FileNotFoundError(f"--data={data} is neither a dataset nor a folder of images")
    if named.name != "bicubic":
        examples = _degraded(examples, named, scale)

    tf.io.gfile.makedirs(os.path.join(output_dir, GRIDS_DIR))
    minimum = metrics.SSIM_WINDOW + 2 * scale  # SSIM needs 11x11 after the border crop
    rows = []
    for key, lr, hr in examples:
        if max_images is not None and len(rows) >= max_images:
            break
        if hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
            skipped.append(
                {"input": key, "reason": "scale_mismatch", "message": f"{lr.shape} -> {hr.shape}"}
            )
            continue
        if min(hr.shape[:2]) < minimum:
            message = f"HR {hr.shape[0]}x{hr.shape[1]} is under {minimum} pixels per side"
            skipped.append({"input": key, "reason": "too_small", "message": message})
            continue
        outputs = {
            "model": upscaler(lr, tile=tile),
            "bicubic": baselines.bicubic(lr, scale),
            "nearest": baselines.nearest(lr, scale),
        }
        row = {"key": key, "hr_height": hr.shape[0], "hr_width": hr.shape[1]}
        for method, image in outputs.items():
            for name, value in metrics.image_metrics(hr, image, border=scale).items():
                row[f"{method}_{name}"] = value
        if len(rows) < max_grids:
            grid = pictures.super_resolution_grid(
                nearest=outputs["nearest"],
                bicubic=outputs["bicubic"],
                sr=outputs["model"],
                hr=hr,
                psnr={
                    "nearest": row["nearest_psnr_rgb"],
                    "bicubic": row["bicubic_psnr_rgb"],
                    "sr": row["model_psnr_rgb"],
                },
            )
            name = f"{len(rows):04d}_{_safe_name(key)}.png"
            grid_path = os.path.join(output_dir, GRIDS_DIR, name)
            with tf.io.gfile.GFile(grid_path, "wb") as f:
                f.write(imaging.encode_png(grid))
        rows.append(row)
        if len(rows) % 10 == 0:
            logging.info("Evaluated %d images", len(rows))

    if not rows:
        reasons = sorted({s["reason"] for s in skipped})
        raise ValueError(f"no images to evaluate in {data} (skipped: {len(skipped)}, {reasons})")

    columns = ["key", "hr_height", "hr_width"] + [f"{m}_{n}" for m in METHODS for n in METRIC_NAMES]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    with tf.io.gfile.GFile(os.path.join(output_dir, PER_IMAGE_FILE), "w") as f:
        f.write(buffer.getvalue())

    summary = {
        "model": upscaler.path,
        "model_format": upscaler.format,
        "data": data,
        "source": "dataset" if is_dataset else "folder",
        "split": split if is_dataset else None,
        "scale": scale,
        "border_crop": scale,
        "degradation": imaging.DEGRADATION if named.name == "bicubic" else named.name,
        "degradation_spec": named.spec(),
        "num_images": len(rows),
        "skipped": skipped,
        "metrics": {
            method: {
                name: _finite_or_none(float(np.mean([r[f"{method}_{name}"] for r in rows])))
                for name in METRIC_NAMES
            }
            for method in METHODS
        },
        "conventions": {
            "data_range": 255,
            "y": "BT.601: Y = 16 + (65.481 R + 128.553 G + 24.966 B), R,G,B in [0, 1]",
            "ssim": "Gaussian window 11x11 sigma 1.5, K1 0.01, K2 0.03, mean over channels",
            "border_crop": "pixels removed from each side before measuring (= scale)",
        },
    }
    with tf.io.gfile.GFile(os.path.join(output_dir, METRICS_FILE), "w") as f:
        f.write(json.dumps(summary, indent=2) + "\n")
    logging.info("Wrote %s", os.path.join(output_dir, METRICS_FILE))
    return summary


def format_table(summary: dict) -> str:
    """The means of a metrics.json as a Markdown table (one row per method)."""
    lines = [
        "| method | PSNR RGB (dB) | SSIM RGB | PSNR Y (dB) | SSIM Y |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        values = summary["metrics"][method]
        cells = [
            "inf"
            if values[n] is None
            else (f"{values[n]:.2f}" if "psnr" in n else f"{values[n]:.4f}")
            for n in METRIC_NAMES
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
