"""Upscaling files, folders, frames, GIFs and videos with any model (`dlss_dist.serving`).

The library behind ``dlss-upscale`` (and used by ``dlss-eval``). Images are HxWx3 uint8 RGB
arrays decoded by `dlss_dist.imaging`, so alpha, EXIF orientation and odd modes are handled
the same way as in training data. The model is an `dlss_dist.serving.Upscaler` (any format,
tiled within a memory budget). Nothing here imports TensorFlow: with an ONNX or TFLite model
and local files, upscaling runs without it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np
from absl import logging

from dlss_dist import files as fs
from dlss_dist import imaging, serving, video
from dlss_dist.evaluation import pictures

FAILURES_FILE = "failures.json"


def natural_sort_key(path: str) -> list:
    """Sort key that orders frame2 before frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path)]


def printable(path: str) -> str:
    """`path` with bytes that are not UTF-8 (kept by Python as surrogates) shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _non_utf8(path: str) -> dict:
    return {
        "input": printable(path),
        "reason": "non_utf8_name",
        "message": "the file name is not valid UTF-8 and cannot be read or written by "
        "TensorFlow's file system layer: rename it",
    }


def list_inputs(paths: Sequence[str]) -> tuple[list[str], list[dict]]:
    """Expands files and folders (their images, non-recursively) in natural order.

    Returns:
      (files, failures): failures are {"input", "reason", "message"} for missing paths,
      folders without images and names that are not UTF-8 (reason ``non_utf8_name``).
    """
    files, failures = [], []
    for path in paths:
        if not _is_utf8(path):
            failures.append(_non_utf8(path))
            continue
        if fs.isdir(path):
            names, unnamed = [], 0
            for n in fs.list_dir(path):
                if not (imaging.is_image_name(n) or video.is_video(n)) or n.startswith("."):
                    continue
                if _is_utf8(n):
                    names.append(n)
                else:
                    unnamed += 1
                    failures.append(_non_utf8(os.path.join(path, n)))
            if not names and not unnamed:
                failures.append(
                    {
                        "input": path,
                        "reason": "no_images",
                        "message": "folder has no image or video files",
                    }
                )
            files.extend(os.path.join(path, n) for n in sorted(names, key=natural_sort_key))
        elif fs.exists(path):
            files.append(path)
        else:
            failures.append({"input": path, "reason": "not_found", "message": "no such file"})
    return files, failures


@dataclasses.dataclass
class UpscaleResult:
    """What `upscale_files` did: written PNGs, the GIF, and the inputs that failed."""

    outputs: list[str]
    failures: list[dict]
    gif: str | None = None
    gif_frames: int = 0
    videos: list[str] = dataclasses.field(default_factory=list)  # upscaled video files


def _output_names(files: Sequence[str]) -> list[str]:
    """<stem>.png per input; names that would collide get their extension, then a counter.

    (`a/x.png` and `b/x.png` become `x_png.png` and `x_png_1.png`: no output overwrites another.)
    """
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    names, taken = [], set()
    for file, stem in zip(files, stems, strict=True):
        if stems.count(stem) > 1:
            stem = os.path.basename(file).replace(".", "_")
        name, counter = stem + ".png", 0
        while name in taken:
            counter += 1
            name = f"{stem}_{counter}.png"
        taken.add(name)
        names.append(name)
    return names


def _same_path(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(
    inputs: Sequence[str], output_dir: str, *, gif: str | None = None, interpolate: int = 0
) -> None:
    """Refuses, before any work, outputs that cannot be written or would overwrite an input.

    Raises:
      ValueError: `output_dir` is a file, is one of the input folders, or one of the PNGs
        it would get (or `gif`) is an input file.
    """
    if fs.exists(output_dir) and not fs.isdir(output_dir):
        raise ValueError(f"--output={output_dir} is a file, not a folder")
    if gif and fs.isdir(gif):
        raise ValueError(f"--gif={gif} is a folder, not a file name")
    files, _ = list_inputs(inputs)
    for path in inputs:
        if _is_utf8(path) and fs.isdir(path) and _same_path(path, output_dir):
            raise ValueError(
                f"--output={output_dir} is the input folder {path}: the upscaled PNGs would "
                "replace or mix with the originals; choose another --output"
            )
    if interpolate:
        names = [f"frame_{i:04d}.png" for i in range(interpolate + 2)]
    else:
        names = _output_names(files)
    outputs = [os.path.join(output_dir, name) for name in names] + ([gif] if gif else [])
    for output in outputs:
        for file in files:
            if _same_path(output, file):
                flag = "--gif" if output == gif else "--output"
                raise ValueError(f"{flag} would overwrite the input {file}; choose another {flag}")


def _write_png(image: np.ndarray, path: str) -> None:
    fs.atomic_write(path, imaging.encode_png(image))


def upscale_files(
    upscaler: serving.Upscaler,
    inputs: Sequence[str],
    output_dir: str,
    *,
    gif: str | None = None,
    gif_fps: float = 10.0,
    tile: int = 0,
    tile_overlap: int | None = None,
    interpolate: int = 0,
    video_crf: int = video.DEFAULT_CRF,
    progress: bool = False,
) -> UpscaleResult:
    """Upscales files/folders to ``<output_dir>/<stem>.png`` and optionally a GIF.

    Args:
      upscaler: the loaded model (`dlss_dist.serving.load_upscaler`).
      inputs: image files and/or folders (their images are taken in natural order, so video
        frames frame1, frame2, ..., frame10 stay in sequence).
      output_dir: where the PNGs go (created).
      gif: if set, all results in order become this GIF.
      gif_fps: GIF frame rate.
      tile, tile_overlap: see `dlss_dist.serving.Upscaler` (0: tiles by its memory budget).
      interpolate: K > 0 needs exactly two input images: writes ``frame_0000.png`` ...
        ``frame_{K+1}.png``, the first input, K cross-fades between the inputs (blended
        before upscaling, in input space), and the second input, all upscaled; the second
        input is resized to the first's size if they differ.
      video_crf, progress: videos (`video.VIDEO_EXTENSIONS`) become ``<output_dir>/<name>``
        (see `dlss_dist.video.upscale_video`), with a progress bar if `progress`.

    Returns:
      An UpscaleResult. A file that cannot be read or upscaled is recorded in `failures`
      ({"input", "reason", "message"}, also written to ``<output_dir>/failures.json``) and
      the others are still processed.

    Raises:
      ValueError: before any work, for a tiling `validate_tiling` refuses or outputs
        `check_outputs` refuses (a file as `output_dir`, an output that is an input).
    """
    serving.validate_tiling(tile, tile_overlap)
    check_outputs(inputs, output_dir, gif=gif, interpolate=interpolate)
    files, failures = list_inputs(inputs)
    fs.makedirs(output_dir)
    outputs = []
    result = UpscaleResult(outputs=outputs, failures=failures)

    def load(path: str) -> np.ndarray | None:
        try:
            return imaging.read_image(path)
        except imaging.ImageRejected as e:
            failures.append({"input": path, "reason": e.reason, "message": str(e)})
        except OSError as e:
            failures.append({"input": path, "reason": "unreadable", "message": str(e)})
        logging.error("Skipping %s: %s", path, failures[-1]["message"])
        return None

    def run(image: np.ndarray, path: str, source: str) -> None:
        try:
            result = upscaler(image, tile=tile, tile_overlap=tile_overlap)
        except serving.ModelError as e:
            failures.append({"input": source, "reason": "model_error", "message": str(e)})
            logging.error("Skipping %s: %s", source, e)
            return
        _write_png(result, path)
        outputs.append(path)
        logging.info("Wrote %s (%dx%d)", path, result.shape[1], result.shape[0])

    if interpolate:
        if len(files) != 2:
            raise ValueError(
                f"--interpolate needs exactly two input images, got {len(files)}: {files}"
            )
        first, last = load(files[0]), load(files[1])
        if first is not None and last is not None:
            if last.shape != first.shape:
                logging.warning(
                    "Resizing %s from %s to %s to cross-fade", files[1], last.shape, first.shape
                )
                last = imaging.imresize(last, first.shape[0], first.shape[1])
            for i, frame in enumerate(pictures.crossfade(first, last, interpolate)):
                run(frame, os.path.join(output_dir, f"frame_{i:04d}.png"), f"frame {i}")
    else:
        for file, name in zip(files, _output_names(files), strict=True):
            if video.is_video(file):
                _upscale_video_file(
                    upscaler, file, output_dir, result, tile, tile_overlap, video_crf, progress
                )
                continue
            image = load(file)
            if image is not None:
                run(image, os.path.join(output_dir, name), file)

    if failures:
        fs.atomic_write_json(os.path.join(output_dir, FAILURES_FILE), failures)
    if gif and outputs:
        result.gif = gif
        result.gif_frames = pictures.write_gif(outputs, gif, fps=gif_fps)
        logging.info("Wrote %s (%d frames)", gif, result.gif_frames)
    return result


def _upscale_video_file(upscaler, path, output_dir, result, tile, tile_overlap, crf, progress):
    """One video of `upscale_files`: written to ``<output_dir>/<name>`` or recorded as failed."""
    output = os.path.join(output_dir, video.output_name(path))
    try:
        written = video.upscale_video(
            lambda frame: upscaler(frame, tile=tile, tile_overlap=tile_overlap),
            path,
            output,
            scale=upscaler.scale,
            crf=crf,
            progress=progress,
        )
    except video.VideoError as e:
        result.failures.append({"input": path, "reason": e.reason, "message": str(e)})
    except ImportError as e:
        result.failures.append({"input": path, "reason": "no_video_support", "message": str(e)})
    except serving.ModelError as e:
        result.failures.append({"input": path, "reason": "model_error", "message": str(e)})
    else:
        result.videos.append(written.output)
        logging.info(
            "Wrote %s (%d frames, %dx%d)", output, written.frames, written.width, written.height
        )
        return
    logging.error("Skipping %s: %s", path, result.failures[-1]["message"])
