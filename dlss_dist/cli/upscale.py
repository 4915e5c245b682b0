r"""Upscales images, folders of images or video frames with an exported SavedModel.

  dlss-upscale --model=/models/celeba/export --input=photo.jpg --output=out/
  dlss-upscale --model=EXPORT --input=frames/ --output=out/ --gif=out/clip.gif --gif_fps=12
  dlss-upscale --model=EXPORT --input=big.png --output=out/ --tile=256 --tile_overlap=16
  dlss-upscale --model=EXPORT --input=a.png --input=b.png --output=out/ --interpolate=8 \
      --gif=out/morph.gif

--model is a SavedModel folder or an export root (the best export in its exports.json, else
the newest version). Every input becomes <output>/<stem>.png. Inputs that cannot be read are
listed with their reason (also in <output>/failures.json) and the exit code is 1, but every
other input is still written.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from dlss_dist.cli import quiet_tensorflow_logs, run_tool

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "SavedModel folder or export root.")
flags.DEFINE_multi_string("input", None, "Image file or folder; repeat for several.")
flags.DEFINE_string("output", None, "Output folder for the upscaled PNGs.")
flags.DEFINE_string("gif", None, "Also write all results, in order, as this GIF.")
flags.DEFINE_float("gif_fps", 10.0, "GIF frames per second.", lower_bound=0.01)
flags.DEFINE_integer(
    "tile",
    0,
    "Tile side in input pixels (0: tile only images over the export's limit).",
    lower_bound=0,
)
flags.DEFINE_integer("tile_overlap", 16, "Input pixels of context around each tile.", lower_bound=0)
flags.DEFINE_integer(
    "interpolate", 0, "With exactly two inputs: cross-fade K frames between them.", lower_bound=0
)
flags.mark_flags_as_required(["model", "input", "output"])


@flags.multi_flags_validator(["tile", "tile_overlap"])
def _check_tiling(values: dict) -> bool:
    from dlss_dist import upscale

    try:
        upscale.validate_tiling(values["tile"], values["tile_overlap"])
    except ValueError as error:
        raise flags.ValidationError(str(error)) from error
    return True


def main(argv):
    del argv  # run_tool refuses stray arguments
    quiet_tensorflow_logs()
    from dlss_dist import upscale

    # Checked before the model loads: a wrong --output must not cost a model load.
    upscale.check_outputs(FLAGS.input, FLAGS.output, gif=FLAGS.gif, interpolate=FLAGS.interpolate)
    upscaler = upscale.SavedModelUpscaler(FLAGS.model)
    result = upscale.upscale_files(
        upscaler,
        FLAGS.input,
        FLAGS.output,
        gif=FLAGS.gif,
        gif_fps=FLAGS.gif_fps,
        tile=FLAGS.tile,
        tile_overlap=FLAGS.tile_overlap,
        interpolate=FLAGS.interpolate,
    )

    print(f"Wrote {len(result.outputs)} image(s) to {FLAGS.output}")
    if result.gif:
        print(f"Wrote {result.gif} ({result.gif_frames} frames)")
    if result.failures:
        for failure in result.failures:
            print(f"FAILED {failure['input']}: [{failure['reason']}] {failure['message']}")
        failures_path = os.path.join(FLAGS.output, upscale.FAILURES_FILE)
        logging.error("%d input(s) failed; see %s", len(result.failures), failures_path)
        sys.exit(1)


def run():
    run_tool("dlss-upscale", main, __name__)


if __name__ == "__main__":
    run()
