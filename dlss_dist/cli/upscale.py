r"""Upscales images, folders of images, video frames or videos with any model.

  dlss-upscale --model=realworld_x4 --input=photo.jpg --output=out/
  dlss-upscale --model=/models/celeba/export --input=photo.jpg --output=out/
  dlss-upscale --model=export/2000/model.onnx --input=photo.jpg --output=out/ --max_memory=1G
  dlss-upscale --model=EXPORT --input=frames/ --output=out/ --gif=out/clip.gif --gif_fps=12
  dlss-upscale --model=EXPORT --input=big.png --output=out/ --tile=256 --tile_overlap=16
  dlss-upscale --model=EXPORT --input=a.png --input=b.png --output=out/ --interpolate=8 \
      --gif=out/morph.gif
  dlss-upscale --model=EXPORT --input=clip.mp4 --output=clip_x4.mp4 [--tile=256]
  dlss-upscale --model=EXPORT --input=videos/ --output=out/

  dlss-upscale --model=EXPORT --input=photos/ --output=out/ --outscale=2 --suffix=_x2 \
      --output_format=webp --quality=90

--model is a starter model's name (realworld_x4), a SavedModel folder, an export root (the
best export in its exports.json, else the newest version), a training model directory (its best
export, else its newest checkpoint), or a .onnx / .tflite file (run by ONNX Runtime / LiteRT,
no TensorFlow needed). Images are tiled so the run's peak memory stays under --max_memory
(default 2G). Every input becomes <output>/<stem><suffix>.png (or .jpg/.webp with
--output_format); --outscale resizes the model's result (Lanczos) to that factor of the input.
Transparent images keep their alpha (resized with Lanczos) in PNG and WebP. Inputs that
cannot be read or written (a full disk) are listed with their reason (also in
<output>/failures.json) and the exit code is 1, but every other input is still written; a
file is written whole or not at all. Files already at the output paths are never replaced
without --overwrite, and an input is never replaced. Videos (.mp4, .m4v, .mov, .mkv, .webm,
.avi) are upscaled frame by frame, keeping frame rate and audio (docs/video.md): to the
--output file when it is a video name (.mp4, .m4v, .mov, .mkv, .webm), else to
<output>/<name>.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from dlss_dist import console
from dlss_dist.cli import quiet_tensorflow_logs, run_tool, shared_flags

FLAGS = flags.FLAGS
shared_flags.define_model()
flags.DEFINE_multi_string("input", None, "Image file or folder; repeat for several.")
flags.DEFINE_string("output", None, "Output folder for the upscaled PNGs.")
flags.DEFINE_string("gif", None, "Also write all results, in order, as this GIF.")
flags.DEFINE_float("gif_fps", 10.0, "GIF frames per second.", lower_bound=0.01)
shared_flags.define_tiling()
flags.DEFINE_integer("tile_overlap", 16, "Input pixels of context around each tile.", lower_bound=0)
flags.DEFINE_integer(
    "interpolate", 0, "With exactly two inputs: cross-fade K frames between them.", lower_bound=0
)
flags.DEFINE_integer(
    "video_crf",
    18,
    "Video encoder CRF (0 = lossless H.264; larger = smaller files).",
    lower_bound=0,
    upper_bound=63,
)
shared_flags.define(
    flags.DEFINE_bool,
    "overwrite",
    False,
    "Replace files already at the output paths (never the inputs).",
)
flags.DEFINE_string("suffix", "", "Appended to each output's name: photo.jpg -> photo<suffix>.png.")
flags.DEFINE_float(
    "outscale",
    None,
    "Final size as a factor of the input, e.g. 2 with a x4 model (Lanczos after the model).",
    lower_bound=0.05,
    upper_bound=16,
)
flags.DEFINE_enum("output_format", "png", ["png", "jpeg", "webp"], "Image format to write.")
flags.DEFINE_integer(
    "quality", 95, "JPEG/WebP quality (PNG is lossless).", lower_bound=1, upper_bound=100
)
flags.mark_flags_as_required(["model", "input", "output"])


@flags.validator("suffix", "--suffix must not contain a path separator or NUL")
def _check_suffix(suffix: str) -> bool:
    return not any(c in suffix for c in ("/", os.sep, "\0"))


def _output_options():
    from dlss_dist import upscale

    return upscale.OutputOptions(
        suffix=FLAGS.suffix,
        image_format=FLAGS.output_format,
        quality=FLAGS.quality,
        outscale=FLAGS.outscale,
        overwrite=FLAGS.overwrite,
    )


@flags.multi_flags_validator(["tile", "tile_overlap"])
def _check_tiling(values: dict) -> bool:
    from dlss_dist.serving import tiling  # light: no TensorFlow before the console is set up

    try:
        tiling.validate_tiling(values["tile"], values["tile_overlap"])
    except ValueError as error:
        raise flags.ValidationError(str(error)) from error
    return True


@flags.validator("max_memory")
def _check_max_memory(value: str) -> bool:
    from dlss_dist.serving import memory

    try:
        memory.parse_memory(value)
    except ValueError as error:
        raise flags.ValidationError(str(error)) from error
    return True


def main(argv):
    del argv  # run_tool refuses stray arguments
    quiet_tensorflow_logs(tensorflow=False)
    from dlss_dist import serving, upscale, video

    # Found (not loaded) first: a wrong --model fails before anything heavy is imported.
    source = serving.locate(FLAGS.model)

    options = _output_options()
    # Checked before the model loads: a wrong --output must not cost a model load.
    one_video = video.is_writable_video(FLAGS.output) and not os.path.isdir(FLAGS.output)
    if one_video:
        options.validate()
        if len(FLAGS.input) != 1 or not video.is_video(FLAGS.input[0]):
            raise ValueError(
                f"--output={FLAGS.output} is a video file: give exactly one input video, got "
                f"{FLAGS.input}; to upscale several, pass a folder as --output"
            )
        upscale.check_video_output(FLAGS.input[0], FLAGS.output, overwrite=FLAGS.overwrite)
    else:
        upscale.check_outputs(
            FLAGS.input,
            FLAGS.output,
            gif=FLAGS.gif,
            interpolate=FLAGS.interpolate,
            options=options,
        )
    if serving.needs_tensorflow(source):
        console.import_tensorflow_quietly()
    upscaler = serving.load_upscaler(source, max_memory=FLAGS.max_memory)
    if one_video:
        _upscale_one_video(upscaler, upscale, video)
        return
    result = upscale.upscale_files(
        upscaler,
        FLAGS.input,
        FLAGS.output,
        gif=FLAGS.gif,
        gif_fps=FLAGS.gif_fps,
        tile=FLAGS.tile,
        tile_overlap=FLAGS.tile_overlap,
        interpolate=FLAGS.interpolate,
        video_crf=FLAGS.video_crf,
        progress=True,
        options=options,
    )

    if result.outputs or not result.videos:
        print(f"Wrote {len(result.outputs)} image(s) to {FLAGS.output}")
    if result.videos:
        print(f"Wrote {len(result.videos)} video(s) to {FLAGS.output}")
    if result.gif:
        print(f"Wrote {result.gif} ({result.gif_frames} frames)")
    if result.failures:
        for failure in result.failures:
            print(f"FAILED {failure['input']}: [{failure['reason']}] {failure['message']}")
        where = f"; see {result.failures_file}" if result.failures_file else ""
        logging.error("%d input(s) failed%s", len(result.failures), where)
        sys.exit(1)


def _upscale_one_video(upscaler, upscale, video) -> None:
    """--output=clip_x4.mp4: exactly one input video to that file."""
    try:
        result = video.upscale_video(
            upscale.video_frame_function(upscaler, FLAGS.tile, FLAGS.tile_overlap, FLAGS.outscale),
            FLAGS.input[0],
            FLAGS.output,
            scale=FLAGS.outscale or upscaler.scale,
            crf=FLAGS.video_crf,
            progress=True,
        )
    except video.VideoError as error:
        raise ValueError(f"{FLAGS.input[0]}: [{error.reason}] {error}") from error
    audio = f", audio {result.audio}" if result.audio else ", no audio"
    print(
        f"Wrote {result.output} ({result.frames} frames, {result.width}x{result.height} at "
        f"{float(result.fps):.3f} fps{audio})"
    )


def run(argv: list[str] | None = None) -> None:
    """``dlss-upscale``; `argv`: the arguments (default: the command line's)."""
    run_tool("dlss-upscale", main, __name__, args=argv)


if __name__ == "__main__":
    run()
