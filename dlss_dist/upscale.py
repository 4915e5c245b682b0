"""Upscaling files, folders, frames, GIFs and videos with any model (`dlss_dist.serving`).

The library behind ``dlss-upscale`` (and used by ``dlss-eval``). Images are HxWx3 uint8 RGB
arrays decoded by `dlss_dist.imaging`, so alpha, EXIF orientation and odd modes are handled
the same way as in training data. The model is an `dlss_dist.serving.Upscaler` (any format,
tiled within a memory budget). Nothing here imports TensorFlow: with an ONNX or TFLite model
and local files, upscaling runs without it.

Outputs follow `dlss_dist.files`: each is written whole under a hidden name and renamed into
place, a file already at an output path is refused unless ``overwrite`` (an input never), and
a write that fails (a full disk) fails that input only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
from collections.abc import Sequence

import numpy as np
from absl import logging
from PIL import Image

from dlss_dist import files, imaging, pictures, serving, video
from dlss_dist import progress as progress_lib

FAILURES_FILE = "failures.json"


def natural_sort_key(path: str) -> list:
    """Sort key that orders frame2 before frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path)]


printable = files.printable  # kept for callers of the old name


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _non_utf8(path: str) -> dict:
    return {
        "input": files.printable(path),
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
    found, failures = [], []
    for path in paths:
        if not _is_utf8(path):
            failures.append(_non_utf8(path))
            continue
        if files.isdir(path):
            names, unnamed = [], 0
            for n in files.list_dir(path):
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
            found.extend(os.path.join(path, n) for n in sorted(names, key=natural_sort_key))
        elif files.exists(path):
            found.append(path)
        else:
            failures.append({"input": path, "reason": "not_found", "message": "no such file"})
    return found, failures


# What dlss-upscale writes images as: --output_format -> (file extension, Pillow format).
IMAGE_FORMATS = {"png": (".png", "PNG"), "jpeg": (".jpg", "JPEG"), "webp": (".webp", "WEBP")}
MAX_OUTSCALE = 16.0
# Extensions that make an --output look like a file, not a folder (it would otherwise be
# created as a folder named, say, "clip.flv"). Writable video names are handled before.
_FILE_LIKE_EXTENSIONS = frozenset(
    {*imaging.IMAGE_EXTENSIONS, *video.VIDEO_EXTENSIONS}
    | {".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".m2ts", ".3gp", ".ogv", ".vob", ".jxl"}
    | {".heic", ".avif", ".json", ".txt"}
)


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """How `upscale_files` writes each result (the Real-ESRGAN/chaiNNer options).

    Attributes:
      suffix: appended to each output's stem (``photo.jpg`` -> ``photo<suffix>.png``).
      image_format: "png", "jpeg" or "webp" (`IMAGE_FORMATS`).
      quality: JPEG/WebP quality, 1..100 (PNG is lossless and ignores it).
      outscale: final size as a factor of the input (e.g. 2 from a x4 model); the model's
        output is resized to it with Lanczos. None: the model's own scale.
      overwrite: replace existing files at the output paths (never the inputs themselves).
    """

    suffix: str = ""
    image_format: str = "png"
    quality: int = 95
    outscale: float | None = None
    overwrite: bool = False

    @property
    def extension(self) -> str:
        return IMAGE_FORMATS[self.image_format][0]

    def validate(self) -> None:
        """Raises ValueError naming the flag for options that cannot work."""
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"--output_format={self.image_format}: choose from {', '.join(IMAGE_FORMATS)}"
            )
        if not 1 <= self.quality <= 100:
            raise ValueError(f"--quality={self.quality} must be between 1 and 100")
        if "/" in self.suffix or os.sep in self.suffix or "\0" in self.suffix:
            raise ValueError(f"--suffix={self.suffix!r} must not contain a path separator")
        if self.outscale is not None and not 0 < self.outscale <= MAX_OUTSCALE:
            raise ValueError(
                f"--outscale={self.outscale} must be above 0 and at most {MAX_OUTSCALE:g}"
            )


def _shorten(name: str, key: str) -> str:
    """`name` cut to fit `files.NAME_MAX` bytes, kept unique by a hash of `key`."""
    stem, extension = os.path.splitext(name)
    tag = "~" + hashlib.sha1(os.fsencode(key)).hexdigest()[:10]
    room = files.NAME_MAX - len(os.fsencode(tag + extension))
    cut = os.fsencode(stem)[:room].decode("utf-8", "ignore")  # never half a character
    return cut + tag + extension


def _output_names(inputs: Sequence[str], *, suffix: str = "", extension: str = ".png") -> list[str]:
    """``<stem><suffix><extension>`` per input (videos keep a video extension).

    Stems that collide get their extension (`a/x.png` and `b/x.jpg` become `x_png.png` and
    `x_jpg.png`), then a counter; names over the file-name limit (255 bytes) are cut and
    given a hash of the input path. No two outputs share a name.
    """
    stems = [os.path.splitext(os.path.basename(f))[0] for f in inputs]
    names, taken = [], set()
    for file, stem in zip(inputs, stems, strict=True):
        if stems.count(stem) > 1:
            stem = os.path.basename(file).replace(".", "_")
        ext = os.path.splitext(video.output_name(file))[1] if video.is_video(file) else extension
        name, counter = stem + suffix + ext, 0
        while name in taken or files.name_too_long(name):
            if files.name_too_long(name):
                name = _shorten(name, f"{file}#{counter}")
            if name in taken:
                counter += 1
                name = f"{stem}{suffix}_{counter}{ext}"
        taken.add(name)
        names.append(name)
    return names


def plan_outputs(
    inputs: Sequence[str],
    output_dir: str,
    *,
    interpolate: int = 0,
    options: OutputOptions = OutputOptions(),
) -> list[str]:
    """The path each input (or, with `interpolate`, each frame) is written to."""
    if interpolate:
        names = [
            f"frame_{i:04d}{options.suffix}{options.extension}" for i in range(interpolate + 2)
        ]
    else:
        names = _output_names(inputs, suffix=options.suffix, extension=options.extension)
    return [os.path.join(output_dir, name) for name in names]


def check_output_name(output: str) -> None:
    """Refuses an --output that names a file dlss-upscale cannot write (before any work).

    A writable video name (.mp4, .mkv, ...) is a file; anything else is a folder, except a
    name with a media extension that is not yet a folder (``clip.flv``, ``x.avi``,
    ``photo.png``): making a folder of that name is never what was meant.
    """
    extension = os.path.splitext(output.rstrip("/"))[1].lower()
    if video.is_writable_video(output) or files.isdir(output):
        return
    if extension in _FILE_LIKE_EXTENSIONS:
        raise ValueError(
            f"--output={output} looks like a file name, but dlss-upscale writes a video only "
            f"as {', '.join(video.WRITABLE_VIDEO_EXTENSIONS)} and images into a folder: give "
            "one of those video names, or a folder (images keep their own names)"
        )


def check_outputs(
    inputs: Sequence[str],
    output_dir: str,
    *,
    gif: str | None = None,
    interpolate: int = 0,
    options: OutputOptions = OutputOptions(),
) -> None:
    """Refuses, before any work, outputs that cannot be written or would replace a file.

    Raises:
      ValueError: `output_dir` is a file or names one (`check_output_name`), is one of the
        input folders, or an output (or `gif`) is an input file (refused even with
        overwrite: the input would be destroyed while it is read).
      files.OutputExistsError: an output, `gif` or ``failures.json`` exists and
        ``options.overwrite`` is False (the no-overwrite rule, `files.check_no_overwrite`).
    """
    options.validate()
    if files.exists(output_dir) and not files.isdir(output_dir):
        raise ValueError(f"--output={output_dir} is a file, not a folder")
    check_output_name(output_dir)
    if gif and files.isdir(gif):
        raise ValueError(f"--gif={gif} is a folder, not a file name")
    found, _ = list_inputs(inputs)
    for path in inputs:
        if _is_utf8(path) and files.isdir(path) and files.same_path(path, output_dir):
            raise ValueError(
                f"--output={output_dir} is the input folder {path}: the upscaled files would "
                "replace or mix with the originals; choose another --output"
            )
    outputs = plan_outputs(found, output_dir, interpolate=interpolate, options=options)
    outputs += [gif] if gif else []
    for output in outputs:
        for file in found:
            if files.same_path(output, file):
                flag = "--gif" if output == gif else "--output"
                raise ValueError(f"{flag} would overwrite the input {file}; choose another {flag}")
    if files.isdir(output_dir):
        files.check_no_overwrite(
            [*outputs, os.path.join(output_dir, FAILURES_FILE)],
            overwrite=options.overwrite,
            where=f"--output={output_dir}",
        )
    elif gif:
        files.check_no_overwrite([gif], overwrite=options.overwrite)


def check_video_output(input_path: str, output: str, *, overwrite: bool) -> None:
    """The checks of `check_outputs` for ``--output=clip_x4.mp4`` (one video to one file)."""
    if not video.is_writable_video(output):
        raise ValueError(
            f"--output={output}: dlss-upscale writes videos only as "
            f"{', '.join(video.WRITABLE_VIDEO_EXTENSIONS)}"
        )
    if files.same_path(input_path, output):
        raise ValueError(f"--output={output} is the input: it would be overwritten")
    if files.isdir(output):
        raise ValueError(f"--output={output} is a folder, not a video file name")
    files.check_no_overwrite([output], overwrite=overwrite)


@dataclasses.dataclass
class UpscaleResult:
    """What `upscale_files` did: written files, the GIF, and the inputs that failed."""

    outputs: list[str]
    failures: list[dict]
    gif: str | None = None
    gif_frames: int = 0
    videos: list[str] = dataclasses.field(default_factory=list)  # upscaled video files
    failures_file: str | None = None  # <output_dir>/failures.json, when written


def _resize(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """High-quality (Lanczos) resize of an HxW or HxWx3 uint8 plane."""
    if plane.shape[:2] == (height, width):
        return plane
    return np.asarray(Image.fromarray(plane).resize((width, height), Image.Resampling.LANCZOS))


def finish_image(
    sr: np.ndarray, alpha: np.ndarray | None, input_size: tuple[int, int], outscale: float | None
) -> np.ndarray:
    """The model's RGB output, resized to `outscale` x `input_size` (H, W) if given, with
    the input's alpha plane resized to match (HxWx4), or RGB (HxWx3) without alpha."""
    height, width = sr.shape[:2]
    if outscale is not None:
        height = max(1, round(input_size[0] * outscale))
        width = max(1, round(input_size[1] * outscale))
        sr = _resize(sr, height, width)
    if alpha is None:
        return sr
    return np.dstack([sr, _resize(alpha, height, width)])


def encode_image(image: np.ndarray, options: OutputOptions) -> bytes:
    """HxWx3 RGB or HxWx4 RGBA uint8 -> the bytes of `options.image_format`.

    JPEG has no alpha: an RGBA image is composited on white for it (logged).
    """
    extension, pil_format = IMAGE_FORMATS[options.image_format]
    if image.shape[-1] == 4 and pil_format == "JPEG":
        weight = image[..., 3:].astype(np.float32) / 255.0
        rgb = image[..., :3].astype(np.float32) * weight + 255.0 * (1.0 - weight)
        image = np.floor(rgb + 0.5).astype(np.uint8)
    picture = Image.fromarray(image)
    buffer = io.BytesIO()
    if pil_format == "PNG":
        picture.save(buffer, format="PNG", compress_level=1)  # as imaging.encode_png
    elif pil_format == "JPEG":
        picture.save(buffer, format="JPEG", quality=options.quality, subsampling=0)
    else:
        picture.save(buffer, format="WEBP", quality=options.quality, method=4)
    return buffer.getvalue()


def _write_failure(source: str, path: str, error: OSError) -> dict:
    reason = "no_space" if files.no_space(error) else "write_failed"
    message = f"could not write {files.printable(path)}: {error.strerror or error}"
    if reason == "no_space":
        message += " (the disk is full: free space and run again for this input)"
    return {"input": source, "reason": reason, "message": message}


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
    options: OutputOptions = OutputOptions(),
) -> UpscaleResult:
    """Upscales files/folders to ``<output_dir>/<stem><suffix>.<ext>`` and optionally a GIF.

    Args:
      upscaler: the loaded model (`dlss_dist.serving.load_upscaler`).
      inputs: image files and/or folders (their images are taken in natural order, so video
        frames frame1, frame2, ..., frame10 stay in sequence).
      output_dir: where the outputs go (created).
      gif: if set, all results in order become this GIF.
      gif_fps: GIF frame rate.
      tile, tile_overlap: see `dlss_dist.serving.Upscaler` (0: tiles by its memory budget).
      interpolate: K > 0 needs exactly two input images: writes ``frame_0000.png`` ...
        ``frame_{K+1}.png``, the first input, K cross-fades between the inputs (blended
        before upscaling, in input space), and the second input, all upscaled; the second
        input is resized to the first's size if they differ.
      video_crf: videos (`video.VIDEO_EXTENSIONS`) become ``<output_dir>/<name>`` (see
        `dlss_dist.video.upscale_video`).
      progress: report progress (`dlss_dist.progress`: a bar on a terminal, lines when
        piped) over the images (two or more) and over each video's frames.
      options: suffix, image format and quality, outscale, overwrite (`OutputOptions`).
        Transparent images keep their alpha (resized with Lanczos) in PNG and WebP.

    Returns:
      An UpscaleResult. An input that cannot be read, upscaled or written (a full disk) is
      recorded in `failures` ({"input", "reason", "message"}, also written to
      ``<output_dir>/failures.json``) and the others are still processed. Every file is
      written whole or not at all (`files.atomic_write`).

    Raises:
      ValueError: before any work, for a tiling `validate_tiling` refuses or outputs
        `check_outputs` refuses (a file as `output_dir`, an output that is an input).
      files.OutputExistsError: before any work, an output exists and not
        ``options.overwrite``.
    """
    serving.validate_tiling(tile, tile_overlap)
    check_outputs(inputs, output_dir, gif=gif, interpolate=interpolate, options=options)
    found, failures = list_inputs(inputs)
    files.makedirs(output_dir)
    outputs = []
    result = UpscaleResult(outputs=outputs, failures=failures)

    def load(path: str) -> np.ndarray | None:
        try:
            return imaging.read_image(path, alpha=imaging.KEEP_ALPHA)
        except imaging.ImageRejected as e:
            failures.append({"input": path, "reason": e.reason, "message": str(e)})
        except OSError as e:
            failures.append({"input": path, "reason": "unreadable", "message": str(e)})
        logging.debug("Skipping %s: %s", path, failures[-1]["message"])
        return None

    def run(image: np.ndarray, path: str, source: str) -> None:
        rgb, alpha = image[..., :3], (image[..., 3] if image.shape[-1] == 4 else None)
        try:
            sr = upscaler(np.ascontiguousarray(rgb), tile=tile, tile_overlap=tile_overlap)
        except serving.ModelError as e:
            failures.append({"input": source, "reason": "model_error", "message": str(e)})
            logging.debug("Skipping %s: %s", source, e)
            return
        final = finish_image(sr, alpha, rgb.shape[:2], options.outscale)
        if alpha is not None and options.image_format == "jpeg":
            logging.warning("%s: JPEG has no alpha; transparent pixels are put on white", path)
        try:
            files.atomic_write(path, encode_image(final, options))
        except OSError as e:  # a full disk: nothing half-written, go on with the others
            failures.append(_write_failure(source, path, e))
            logging.debug("Skipping %s: %s", source, failures[-1]["message"])
            return
        outputs.append(path)
        logging.info("Wrote %s (%dx%d)", path, final.shape[1], final.shape[0])

    paths = plan_outputs(found, output_dir, interpolate=interpolate, options=options)
    if interpolate:
        if len(found) != 2:
            raise ValueError(
                f"--interpolate needs exactly two input images, got {len(found)}: {found}"
            )
        first, last = load(found[0]), load(found[1])
        if first is not None and last is not None:
            first, last = first[..., :3], last[..., :3]  # cross-fades are opaque
            if last.shape != first.shape:
                logging.warning(
                    "Resizing %s from %s to %s to cross-fade", found[1], last.shape, first.shape
                )
                last = imaging.imresize(last, first.shape[0], first.shape[1])
            frames = pictures.crossfade(first, last, interpolate)
            with _image_progress(interpolate + 2, progress) as report:
                for i, frame in enumerate(frames):
                    run(frame, paths[i], f"frame {i}")
                    report.update(1)
    else:
        images = sum(1 for file in found if not video.is_video(file))
        with _image_progress(images, progress) as report:
            for file, path in zip(found, paths, strict=True):
                if video.is_video(file):
                    _upscale_video_file(
                        video_frame_function(upscaler, tile, tile_overlap, options.outscale),
                        file,
                        path,
                        result,
                        scale=options.outscale or upscaler.scale,
                        crf=video_crf,
                        progress=progress,
                    )
                    continue
                image = load(file)
                if image is not None:
                    run(image, path, file)
                report.update(1)

    failures_path = os.path.join(output_dir, FAILURES_FILE)
    if failures:
        try:
            files.atomic_write_json(failures_path, failures)
            result.failures_file = failures_path
        except OSError as e:
            logging.error("Could not write %s: %s", failures_path, e)
    elif options.overwrite and files.exists(failures_path):
        files.remove_tree(failures_path)  # an earlier run's list: not true of this run
    if gif and outputs:
        result.gif = gif
        result.gif_frames = pictures.write_gif(outputs, gif, fps=gif_fps)
        logging.debug("Wrote %s (%d frames)", gif, result.gif_frames)  # dlss-upscale says it
    return result


def _image_progress(images: int, enabled: bool) -> progress_lib.Progress:
    """Progress over a run's images, when asked for and there are two or more."""
    return progress_lib.Progress(images, "upscaling", unit="image", enabled=enabled and images > 1)


def video_frame_function(upscaler, tile: int, tile_overlap: int | None, outscale: float | None):
    """HxWx3 frame -> its upscale, resized to `video.frame_size` for `outscale` if given."""

    def upscale_frame(frame: np.ndarray) -> np.ndarray:
        sr = upscaler(frame, tile=tile, tile_overlap=tile_overlap)
        if outscale is None:
            return sr
        width, height = video.frame_size(frame.shape[1], frame.shape[0], outscale)
        return _resize(sr, height, width)

    return upscale_frame


def _upscale_video_file(upscale_frame, path, output, result, *, scale, crf, progress):
    """One video of `upscale_files`: written to `output` or recorded as failed."""
    try:
        written = video.upscale_video(
            upscale_frame, path, output, scale=scale, crf=crf, progress=progress
        )
    except video.VideoError as e:
        result.failures.append({"input": path, "reason": e.reason, "message": str(e)})
    except ImportError as e:
        result.failures.append({"input": path, "reason": "no_video_support", "message": str(e)})
    except serving.ModelError as e:
        result.failures.append({"input": path, "reason": "model_error", "message": str(e)})
    except OSError as e:
        result.failures.append(_write_failure(path, output, e))
    else:
        result.videos.append(written.output)
        logging.info(
            "Wrote %s (%d frames, %dx%d)", output, written.frames, written.width, written.height
        )
        return
    logging.debug("Skipping %s: %s", path, result.failures[-1]["message"])
