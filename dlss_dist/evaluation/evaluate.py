"""Evaluates a model (any format: `dlss_dist.serving`) against bicubic and nearest upscaling.

The library behind ``dlss-eval``. Data is either a dataset written by ``dlss-preprocess``
(its LR images are used as they are, after checking the dataset's degradation and scale) or
a plain folder of HR images (cropped to a multiple of the scale, LR made with
`dlss_dist.imaging.degrade_bicubic`, the same function the Beam job uses). ``degradation``
selects a named evaluation degradation (`dlss_dist.degradations.EVALUATION_DEGRADATIONS`:
``bicubic``, or ``realistic`` = blur + bicubic + noise + JPEG, deterministic per image key);
any other than ``bicubic`` makes LR from the HR images, for datasets too.

Perceptual metrics (`perceptual.py`: LPIPS-vgg, DISTS, NIQE) are added with ``perceptual``.
Other tools' outputs for the same LR are scored with ``compare``: every LR evaluated is
written as ``lr/<name>.png``, and a compared folder must hold ``<name>.png`` at HR size for
each (docs/evaluate-and-upscale.md).

Outputs in ``output_dir``:

* ``metrics.json``: mean metrics per method (format in `evaluate`);
* ``per_image.csv``: one row per image, ``<method>_<metric>`` columns;
* ``lr/<name>.png``: the LR inputs evaluated, for other tools to run on;
* ``grids/NNNN_<name>.png``: nearest (the LR input) | bicubic | compared tools | SR | HR,
  labelled with PSNR (and the perceptual metrics measured).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from dlss_dist import degradations, files, imaging, pictures, pretrained, serving, upscale
from dlss_dist.data import pipeline, schema, verify
from dlss_dist.evaluation import baselines, metrics, perceptual

METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.csv"
GRIDS_DIR = "grids"
LR_DIR = "lr"
METHODS = ("model", "bicubic", "nearest")
METRIC_NAMES = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")
# Perceptual metric -> the pretrained files it needs (dlss_dist.pretrained).
PERCEPTUAL_METRICS = {
    "lpips": ("lpips_vgg16",),
    "dists": ("dists", "lpips_vgg16"),
    "niqe": ("niqe",),
}
_COMPARE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_LABELS = {"lpips": "LPIPS", "dists": "DISTS", "niqe": "NIQE"}


def select_perceptual(choice) -> tuple[list[str], list[str]]:
    """The perceptual metrics to measure, and the ones left out for lack of weights.

    Args:
      choice: "auto" (those whose weights are cached), "none", "all", or a list of names
        from `PERCEPTUAL_METRICS` (their weights are fetched if missing).

    Returns:
      (metrics to measure, metrics skipped because their weights are not cached).
    """
    if isinstance(choice, str):
        choice = [choice]
    choice = [c.strip().lower() for c in choice if c.strip()]
    if choice in ([], ["none"]):
        return [], []
    if choice == ["all"]:
        return list(PERCEPTUAL_METRICS), []
    if choice == ["auto"]:
        cached = [
            name
            for name, files in PERCEPTUAL_METRICS.items()
            if all(pretrained.path_if_cached(f) for f in files)
        ]
        return cached, [name for name in PERCEPTUAL_METRICS if name not in cached]
    unknown = [c for c in choice if c not in PERCEPTUAL_METRICS]
    if unknown:
        raise ValueError(
            f"unknown perceptual metric(s) {', '.join(unknown)}; choose from "
            f"{', '.join(PERCEPTUAL_METRICS)}, or auto, all, none"
        )
    return [name for name in PERCEPTUAL_METRICS if name in choice], []


def check_compare(compare: dict[str, str] | None) -> dict[str, str]:
    """Validates {name: folder of SR images} before anything is computed."""
    compare = dict(compare or {})
    for name, folder in compare.items():
        if not _COMPARE_NAME.match(name) or name in METHODS + ("hr",):
            raise ValueError(
                f"--compare name {name!r} must start with a letter, use only letters, digits, "
                f"'_', '.', '-', and not be one of {', '.join(METHODS + ('hr',))}"
            )
        if not tf.io.gfile.isdir(folder):
            raise FileNotFoundError(f"--compare {name}={folder}: no such folder")
    return compare


def _compared_image(name: str, folder: str, image_name: str, hr: np.ndarray) -> np.ndarray:
    path = os.path.join(folder, f"{image_name}.png")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"--compare {name}={folder} has no {image_name}.png: it needs the upscaled "
            f"{LR_DIR}/{image_name}.png for every image evaluated"
        )
    image = imaging.read_image(path)
    if image.shape != hr.shape:
        raise ValueError(
            f"--compare {name}: {path} is {image.shape[1]}x{image.shape[0]}, the HR image is "
            f"{hr.shape[1]}x{hr.shape[0]} (it must be LR x scale)"
        )
    return image


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


def _mean(rows: list[dict], column: str) -> float | None:
    """The mean of a column; NaN (a metric undefined for an image, e.g. NIQE of an image
    under 96x96) is left out; null when nothing is left or the mean is infinite."""
    values = [r[column] for r in rows if not math.isnan(r[column])]
    return _finite_or_none(float(np.mean(values))) if values else None


def _unique_name(name: str, used: set[str]) -> str:
    """`name`, or `name_2`, `name_3`, ... if an earlier image already took it."""
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return candidate


def _niqe_or_nan(niqe: perceptual.NIQE, image: np.ndarray, border: int) -> float:
    if not perceptual.niqe_defined(image.shape, border):
        return float("nan")
    return niqe(image, border=border)


PERCEPTUAL_CONVENTIONS = {
    "lpips": "LPIPS v0.1, VGG16 (lpips.LPIPS(net='vgg')), images in [-1, 1], after the crop",
    "dists": "DISTS (DISTS_pytorch 0.1), full size (no resize), after the crop",
    "niqe": "NIQE as BasicSR calculate_niqe(convert_to='y'): rounded Y, 96x96 blocks, "
    "after the crop; undefined (left out of the mean) without two whole blocks",
}


def _label(title: str, row: dict, method: str, measured: list[str]) -> str:
    lines = [title]
    if method != "hr":
        lines.append(f"{row[f'{method}_psnr_rgb']:.2f} dB")
    scores = [
        f"{_LABELS[name]} {row[f'{method}_{name}']:.3f}"
        for name in measured
        if f"{method}_{name}" in row and not math.isnan(row[f"{method}_{name}"])
    ]
    # Two per line so the label stays within a small panel.
    lines += ["  ".join(scores[i : i + 2]) for i in range(0, len(scores), 2)]
    return "\n".join(lines)


def _grid(outputs: dict, hr: np.ndarray, row: dict, compare: dict, measured: list[str]):
    """LR (nearest) | bicubic | compared tools | SR | HR, each labelled with its scores."""
    panels = [
        (_label("LR (nearest)", row, "nearest", measured), outputs["nearest"]),
        (_label("bicubic", row, "bicubic", measured), outputs["bicubic"]),
    ]
    panels += [(_label(name, row, name, measured), outputs[name]) for name in compare]
    panels.append((_label("SR", row, "model", measured), outputs["model"]))
    panels.append((_label("HR (reference)", row, "hr", measured), hr))
    return pictures.comparison_grid(panels)


def _check_no_overwrite(output_dir: str, *, overwrite: bool) -> None:
    """The no-overwrite rule for an evaluation's reports (`files.check_no_overwrite`)."""
    outputs = [os.path.join(output_dir, name) for name in (METRICS_FILE, PER_IMAGE_FILE)]
    for folder in (LR_DIR, GRIDS_DIR):
        path = os.path.join(output_dir, folder)
        if files.isdir(path) and files.list_dir(path):
            outputs.append(path)
    files.check_no_overwrite(outputs, overwrite=overwrite, where=f"--output_dir={output_dir}")


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
    perceptual_metrics="none",
    compare: dict[str, str] | None = None,
    overwrite: bool = False,
) -> dict:
    """Measures the model, bicubic and nearest on `data` and writes the reports.

    Args:
      model: anything `dlss_dist.serving.load_upscaler` takes (a SavedModel, export root,
        training model directory, .onnx/.tflite file or starter model name), or an `Upscaler`.
      data: a dlss-preprocess dataset folder (has manifest.json) or a folder of HR images.
      output_dir: where metrics.json, per_image.csv, lr/ and grids/ are written; they are
        written to a hidden folder inside it first and moved into place only when the
        evaluation succeeds, so a failed run leaves nothing.
      split: dataset split to evaluate (ignored for a plain folder).
      max_images: evaluate only the first N images.
      max_grids: write comparison grids for the first N images.
      tile: tile size for the model (0: tiles chosen by `max_memory`).
      skip_damaged_records: evaluate the readable records of a damaged dataset (each damaged
        file is listed in ``skipped``) instead of stopping with an error naming it.
      degradation: named evaluation degradation making LR from HR (``bicubic``: the
        dataset's stored LR, or bicubic for folders; ``realistic``: see degradations.py).
      max_memory: peak memory to stay under when tiling (bytes or e.g. "2G").
      perceptual_metrics: "none", "auto" (LPIPS, DISTS, NIQE when their weights are cached),
        "all", or a list of "lpips", "dists", "niqe" (see `select_perceptual`).
      compare: {name: folder} of other tools' SR outputs for the same LR: ``<name>.png`` at
        HR size for every ``lr/<name>.png`` written; each becomes a method like "bicubic".

      overwrite: replace an earlier evaluation's reports in `output_dir` (its lr/ and grids/
        as a whole); without it they are refused before any work (the no-overwrite rule).
    Returns:
      The metrics.json content::

        {"model": ".../export/2000", "model_format": "savedmodel", "data": "...",
         "source": "dataset"|"folder",
         "split": "test"|null, "scale": 4, "border_crop": 4,
         "degradation": "bicubic_matlab_antialias" | "realistic",
         "degradation_spec": {"name", "blur", "downscale", "noise", "jpeg_quality"},
         "num_images": 10,
         "skipped": [{"input", "reason", "message"}, ...],
         "methods": ["model", "bicubic", "nearest", <compared names>...],
         "perceptual_metrics": ["lpips", "dists", "niqe"],  # the ones measured
         "compare": {name: folder},
         "metrics": {"model":   {"psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y",
                                 "lpips", "dists", "niqe"},  # perceptual: when measured
                     "bicubic": {...}, "nearest": {...}, <compared name>: {...}},
         "hr_niqe": 3.1 | null,  # NIQE of the HR images (when measured)
         "conventions": {...}}

      PSNR in dB, SSIM in [0, 1], LPIPS, DISTS and NIQE lower-is-better, means over images;
      a mean that is infinite (identical images) or undefined is null.
    """
    if files.exists(output_dir) and not files.isdir(output_dir):
        raise ValueError(f"--output_dir={output_dir} is a file, not a folder")
    if not tf.io.gfile.exists(data):
        raise FileNotFoundError(f"--data={data} does not exist")
    _check_no_overwrite(output_dir, overwrite=overwrite)
    files.makedirs(output_dir)
    staging = files.temp_path_beside(os.path.join(output_dir, METRICS_FILE))
    try:
        summary = _evaluate_into(
            model=model,
            data=data,
            output_dir=staging,
            split=split,
            max_images=max_images,
            max_grids=max_grids,
            tile=tile,
            skip_damaged_records=skip_damaged_records,
            degradation=degradation,
            max_memory=max_memory,
            perceptual_metrics=perceptual_metrics,
            compare=compare,
        )
        # metrics.json last: a reader that finds it finds the rest.
        names = [LR_DIR, GRIDS_DIR, PER_IMAGE_FILE, METRICS_FILE]
        files.publish_entries(staging, output_dir, names, replace=overwrite)
    finally:
        files.remove_tree(staging)
    # Internals (shown with --verbosity=1): dlss-eval says where the reports are, once.
    logging.debug("Wrote %s", os.path.join(output_dir, METRICS_FILE))
    return summary


def _evaluate_into(
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
    perceptual_metrics="none",
    compare: dict[str, str] | None = None,
) -> dict:
    """`evaluate`, writing its files into `output_dir` (a staging folder)."""
    if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
        raise ValueError(f"--output_dir={output_dir} is a file, not a folder")
    if not tf.io.gfile.exists(data):
        raise FileNotFoundError(f"--data={data} does not exist")
    serving.validate_tiling(tile, None)
    named = degradations.evaluation_degradation(degradation)
    compare = check_compare(compare)
    measured, not_cached = select_perceptual(perceptual_metrics)
    if not_cached:
        logging.warning(
            "Not measuring %s: the pretrained weights are not cached; run `%s` to fetch them "
            "(or --perceptual=none to measure PSNR/SSIM only).",
            ", ".join(_LABELS[m] for m in not_cached),
            pretrained.FETCH_COMMAND,
        )
    scorers = {}
    if "lpips" in measured:
        scorers["lpips"] = perceptual.LPIPS()
    if "dists" in measured:
        scorers["dists"] = perceptual.DISTS()
    niqe = perceptual.NIQE() if "niqe" in measured else None
    methods = list(METHODS) + list(compare)
    metric_names = list(METRIC_NAMES) + measured
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

    files.makedirs(os.path.join(output_dir, GRIDS_DIR))
    files.makedirs(os.path.join(output_dir, LR_DIR))
    minimum = metrics.SSIM_WINDOW + 2 * scale  # SSIM needs 11x11 after the border crop
    rows = []
    used_names: set[str] = set()
    for key, lr, hr in examples:
        if max_images is not None and len(rows) >= max_images:
            break
        if hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
            skipped.append(
                {"input": key, "reason": "scale_mismatch", "message": f"{lr.shape} -> {hr.shape}"}
            )
            continue
        if min(hr.shape[:2]) < minimum:
            message = f"HR {hr.shape[1]}x{hr.shape[0]} is under {minimum} pixels per side"
            skipped.append({"input": key, "reason": "too_small", "message": message})
            continue
        image_name = _unique_name(_safe_name(key), used_names)
        files.atomic_write(
            os.path.join(output_dir, LR_DIR, f"{image_name}.png"), imaging.encode_png(lr)
        )
        outputs = {
            "model": upscaler(lr, tile=tile),
            "bicubic": baselines.bicubic(lr, scale),
            "nearest": baselines.nearest(lr, scale),
        }
        for name, folder in compare.items():
            outputs[name] = _compared_image(name, folder, image_name, hr)
        row = {
            "key": key,
            "lr_file": f"{LR_DIR}/{image_name}.png",
            "hr_height": hr.shape[0],
            "hr_width": hr.shape[1],
        }
        for method, image in outputs.items():
            for name, value in metrics.image_metrics(hr, image, border=scale).items():
                row[f"{method}_{name}"] = value
        for name, scorer in scorers.items():
            for method, value in scorer.scores(hr, outputs, border=scale).items():
                row[f"{method}_{name}"] = value
        if niqe is not None:
            for method, image in [("hr", hr), *outputs.items()]:
                row[f"{method}_niqe"] = _niqe_or_nan(niqe, image, scale)
        if len(rows) < max_grids:
            grid = _grid(outputs, hr, row, compare, measured)
            grid_path = os.path.join(output_dir, GRIDS_DIR, f"{len(rows):04d}_{image_name}.png")
            files.atomic_write(grid_path, imaging.encode_png(grid))
        rows.append(row)
        if len(rows) % 10 == 0:
            logging.info("Evaluated %d images", len(rows))

    if not rows:
        reasons = sorted({s["reason"] for s in skipped})
        raise ValueError(f"no images to evaluate in {data} (skipped: {len(skipped)}, {reasons})")

    columns = ["key", "lr_file", "hr_height", "hr_width"]
    columns += [f"{m}_{n}" for m in methods for n in metric_names]
    columns += ["hr_niqe"] if niqe is not None else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    files.atomic_write(os.path.join(output_dir, PER_IMAGE_FILE), buffer.getvalue())

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
        "methods": methods,
        "perceptual_metrics": measured,
        "compare": compare,
        "metrics": {
            method: {name: _mean(rows, f"{method}_{name}") for name in metric_names}
            for method in methods
        },
        "hr_niqe": _mean(rows, "hr_niqe") if niqe is not None else None,
        "conventions": {
            "data_range": 255,
            "y": "BT.601: Y = 16 + (65.481 R + 128.553 G + 24.966 B), R,G,B in [0, 1]",
            "ssim": "Gaussian window 11x11 sigma 1.5, K1 0.01, K2 0.03, mean over channels",
            "border_crop": "pixels removed from each side before measuring (= scale)",
            **{name: PERCEPTUAL_CONVENTIONS[name] for name in measured},
        },
    }
    files.atomic_write_json(os.path.join(output_dir, METRICS_FILE), summary)
    return summary


_HEADERS = {
    "psnr_rgb": "PSNR RGB (dB)",
    "ssim_rgb": "SSIM RGB",
    "psnr_y": "PSNR Y (dB)",
    "ssim_y": "SSIM Y",
    "lpips": "LPIPS ↓",
    "dists": "DISTS ↓",
    "niqe": "NIQE ↓",
}


def _cell(name: str, value: float | None) -> str:
    if value is None:
        return "inf" if "psnr" in name else "n/a"
    if "psnr" in name or name == "niqe":
        return f"{value:.2f}"
    return f"{value:.4f}"


def format_table(summary: dict) -> str:
    """The means of a metrics.json as a Markdown table (one row per method; HR's NIQE last
    when NIQE was measured)."""
    methods = summary.get("methods", list(METHODS))
    names = list(summary["metrics"][methods[0]])
    lines = [
        "| method | " + " | ".join(_HEADERS.get(n, n) for n in names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for method in methods:
        values = summary["metrics"][method]
        lines.append(f"| {method} | " + " | ".join(_cell(n, values[n]) for n in names) + " |")
    if "niqe" in names:
        cells = [_cell("niqe", summary.get("hr_niqe")) if n == "niqe" else "" for n in names]
        lines.append("| HR (reference) | " + " | ".join(cells) + " |")
    return "\n".join(lines)
