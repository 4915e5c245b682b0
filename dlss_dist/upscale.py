"""Upscaling images with an exported SavedModel: tiling, folders, frames, GIFs, videos.

The library behind ``dlss-upscale`` (and used by ``dlss-eval``). Images are HxWx3 uint8 RGB
arrays decoded by `dlss_dist.imaging`, so alpha, EXIF orientation and odd modes are handled
the same way as in training data.

Tiling (`upscale_tiled`) splits the input into tiles of ``tile`` x ``tile`` pixels that
overlap their neighbours by ``tile_overlap`` pixels on each side; only each tile's centre
(its "core") is kept, so every output pixel comes from a tile that saw at least
``tile_overlap`` input pixels of real context around it. When ``tile_overlap`` covers the
generator's receptive field, the result equals the untiled one up to float rounding; the
cost is the recomputed overlap. Tiles are processed one at a time into a preallocated uint8
output, so working memory depends on the tile size, not on the image.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from dlss_dist import imaging, video
from dlss_dist.evaluation import pictures
from dlss_dist.training import model_dir

DEFAULT_TILE_OVERLAP = 16
# Smallest --tile: below this the generator sees too little context per tile and the seams
# show as blocks (a 1-pixel tile upscales each pixel on its own: nearest-neighbour blocks).
MIN_TILE = 16
# Tile used when an image is over the export's pixel limit and no --tile was given.
AUTO_TILE = 512
FAILURES_FILE = "failures.json"

# uint8 [1, h, w, 3] -> uint8 [1, h*s, w*s, 3]
BatchUpscaleFn = Callable[[np.ndarray], np.ndarray]


def resolve_savedmodel(path: str) -> str:
    """Returns a SavedModel directory for `path`.

    `path` may be a SavedModel itself, or an export root (``<model_dir>/export``): then the
    best export listed in its ``exports.json`` is used, or else the highest integer version.
    """
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    best = model_dir.best_export(path)
    if best is not None:
        return best
    raise FileNotFoundError(
        f"{path} is neither a SavedModel (no saved_model.pb) nor an export root with "
        "integer version folders"
    )


class SavedModelUpscaler:
    """A loaded dlss_dist SavedModel: ``upscaler(image)`` -> the image ``scale``x larger.

    Attributes:
      path: the SavedModel directory that was loaded.
      scale: upscaling factor.
      max_input_pixels: the export's limit on input H*W; larger images are tiled.
      signatures: the SavedModel's signatures (``serving_default``, ``upscale``).
    """

    def __init__(self, path: str):
        self.path = resolve_savedmodel(path)
        self._loaded = tf.saved_model.load(self.path)
        if "upscale" not in self._loaded.signatures:
            raise ValueError(f"{self.path} has no `upscale` signature: not a dlss_dist export")
        self.signatures = self._loaded.signatures
        self._upscale = self.signatures["upscale"]
        self.scale = int(self._loaded.scale.numpy())
        self.max_input_pixels = int(self._loaded.max_input_pixels.numpy())
        logging.info("Loaded %s (x%d)", self.path, self.scale)

    def upscale_batch(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> uint8 [N, sH, sW, 3] in one call (no tiling)."""
        return self._upscale(images=tf.convert_to_tensor(images, tf.uint8))["images"].numpy()

    def __call__(self, image: np.ndarray, *, tile: int = 0, tile_overlap: int | None = None):
        """Upscales one HxWx3 uint8 image, tiled if `tile` > 0 or the image is over the limit."""
        if tile * tile > self.max_input_pixels:
            raise ValueError(
                f"tile={tile} gives {tile * tile} pixels per tile, over this export's limit of "
                f"{self.max_input_pixels} (max_input_pixels); use a smaller tile"
            )
        return upscale_image(
            self.upscale_batch,
            image,
            scale=self.scale,
            max_input_pixels=self.max_input_pixels,
            tile=tile,
            tile_overlap=tile_overlap,
        )


def validate_tiling(tile: int, tile_overlap: int | None) -> None:
    """Raises ValueError (naming --tile / --tile_overlap) for tilings that cannot work well.

    A tile (0 means "only when needed") must be at least `MIN_TILE` pixels, and its kept
    centre, ``tile - 2 * tile_overlap``, at least a quarter of the tile and 8 pixels:
    a smaller centre recomputes the overlap over 16 times per output pixel for nothing.
    """
    overlap = DEFAULT_TILE_OVERLAP if tile_overlap is None else tile_overlap
    if tile_overlap is not None and tile_overlap < 0:
        raise ValueError(f"--tile_overlap={tile_overlap} must be >= 0")
    if tile == 0:
        return
    if tile < MIN_TILE:
        raise ValueError(
            f"--tile={tile} is under {MIN_TILE} pixels: each tile would be upscaled with too "
            "little context and the result looks blocky; use --tile=0 (automatic) or a "
            f"larger tile such as 256"
        )
    core = tile - 2 * overlap
    if core < max(8, tile // 4):
        raise ValueError(
            f"--tile={tile} with --tile_overlap={overlap} keeps a centre of {core} pixels per "
            f"tile (tile - 2 * tile_overlap), under max(8, tile/4) = {max(8, tile // 4)}: "
            "raise --tile or lower --tile_overlap"
        )


def _windows(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core_start, core_end, window_start, window_end) along one axis."""
    core = tile - 2 * overlap
    result = []
    for start in range(0, length, core):
        end = min(start + core, length)
        # Full-size windows wherever the image allows: more context, and one input shape.
        window_start = min(max(start - overlap, 0), max(length - tile, 0))
        window_end = min(window_start + tile, length)
        result.append((start, end, window_start, window_end))
    return result


def upscale_tiled(
    upscale_fn: BatchUpscaleFn,
    image: np.ndarray,
    *,
    scale: int,
    tile: int,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
) -> np.ndarray:
    """Upscales `image` tile by tile into a preallocated uint8 output (see module docstring).

    Args:
      upscale_fn: uint8 [1, h, w, 3] -> uint8 [1, h*scale, w*scale, 3].
      image: HxWx3 uint8.
      scale: the upscaling factor of `upscale_fn`.
      tile: tile side in input pixels, overlap included.
      tile_overlap: input pixels of context on each side of a tile's kept core.

    Returns:
      The (H*scale)x(W*scale)x3 uint8 image.
    """
    if tile_overlap < 0:
        raise ValueError(f"tile_overlap must be >= 0, got {tile_overlap}")
    if tile <= 2 * tile_overlap:
        raise ValueError(
            f"tile={tile} must be larger than 2 * tile_overlap = {2 * tile_overlap} "
            "(each tile keeps a core of tile - 2*tile_overlap pixels)"
        )
    height, width, channels = image.shape
    output = np.empty((height * scale, width * scale, channels), np.uint8)
    rows, cols = _windows(height, tile, tile_overlap), _windows(width, tile, tile_overlap)
    logging.info(
        "Upscaling %dx%d in %d tiles of %d px (overlap %d)",
        height,
        width,
        len(rows) * len(cols),
        tile,
        tile_overlap,
    )
    for y0, y1, wy0, wy1 in rows:
        for x0, x1, wx0, wx1 in cols:
            result = upscale_fn(image[np.newaxis, wy0:wy1, wx0:wx1])[0]
            output[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = result[
                (y0 - wy0) * scale : (y1 - wy0) * scale, (x0 - wx0) * scale : (x1 - wx0) * scale
            ]
    return output


def upscale_image(
    upscale_fn: BatchUpscaleFn,
    image: np.ndarray,
    *,
    scale: int,
    max_input_pixels: int | None = None,
    tile: int = 0,
    tile_overlap: int | None = None,
) -> np.ndarray:
    """Upscales one image, tiling when asked (`tile` > 0) or when it is over the pixel limit.

    An image that fits in one tile is upscaled in one call.
    """
    overlap = DEFAULT_TILE_OVERLAP if tile_overlap is None else tile_overlap
    height, width = image.shape[:2]
    if not tile and max_input_pixels is not None and height * width > max_input_pixels:
        tile = min(AUTO_TILE, int(max_input_pixels**0.5))
        overlap = min(overlap, (tile - 1) // 4)
        logging.info("%dx%d is over the export's pixel limit: tiling by %d", height, width, tile)
    if tile and (height > tile or width > tile):
        return upscale_tiled(upscale_fn, image, scale=scale, tile=tile, tile_overlap=overlap)
    return upscale_fn(image[np.newaxis])[0]


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


def _listdir(path: str) -> list[str]:
    # os.listdir keeps undecodable bytes as surrogates; tf.io.gfile.listdir raises on them
    # and would abort the whole run. Remote file systems (gs://) have UTF-8 names.
    if "://" in path:
        return [name.rstrip("/") for name in tf.io.gfile.listdir(path)]
    return os.listdir(path)


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
        if tf.io.gfile.isdir(path):
            names, unnamed = [], 0
            for n in _listdir(path):
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
        elif tf.io.gfile.exists(path):
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
    if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
        raise ValueError(f"--output={output_dir} is a file, not a folder")
    if gif and tf.io.gfile.isdir(gif):
        raise ValueError(f"--gif={gif} is a folder, not a file name")
    files, _ = list_inputs(inputs)
    for path in inputs:
        if _is_utf8(path) and tf.io.gfile.isdir(path) and _same_path(path, output_dir):
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
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(imaging.encode_png(image))


def upscale_files(
    upscaler: SavedModelUpscaler,
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
      upscaler: the loaded SavedModel.
      inputs: image files and/or folders (their images are taken in natural order, so video
        frames frame1, frame2, ..., frame10 stay in sequence).
      output_dir: where the PNGs go (created).
      gif: if set, all results in order become this GIF.
      gif_fps: GIF frame rate.
      tile, tile_overlap: see `upscale_image`.
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
    validate_tiling(tile, tile_overlap)
    check_outputs(inputs, output_dir, gif=gif, interpolate=interpolate)
    files, failures = list_inputs(inputs)
    tf.io.gfile.makedirs(output_dir)
    outputs = []
    result = UpscaleResult(outputs=outputs, failures=failures)

    def load(path: str) -> np.ndarray | None:
        try:
            return imaging.read_image(path)
        except imaging.ImageRejected as e:
            failures.append({"input": path, "reason": e.reason, "message": str(e)})
        except (OSError, tf.errors.OpError) as e:
            failures.append({"input": path, "reason": "unreadable", "message": str(e)})
        logging.error("Skipping %s: %s", path, failures[-1]["message"])
        return None

    def run(image: np.ndarray, path: str, source: str) -> None:
        try:
            result = upscaler(image, tile=tile, tile_overlap=tile_overlap)
        except tf.errors.InvalidArgumentError as e:
            failures.append({"input": source, "reason": "model_error", "message": e.message})
            logging.error("Skipping %s: %s", source, e.message)
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
        with tf.io.gfile.GFile(os.path.join(output_dir, FAILURES_FILE), "w") as f:
            f.write(json.dumps(failures, indent=2) + "\n")
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
    except tf.errors.InvalidArgumentError as e:
        result.failures.append({"input": path, "reason": "model_error", "message": e.message})
    else:
        result.videos.append(written.output)
        logging.info(
            "Wrote %s (%d frames, %dx%d)", output, written.frames, written.width, written.height
        )
        return
    logging.error("Skipping %s: %s", path, result.failures[-1]["message"])
