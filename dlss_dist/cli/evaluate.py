r"""Measures a model against bicubic and nearest-neighbour upscaling.

  dlss-eval --model=/models/celeba/export --data=/data/celeba --split=test --output_dir=eval/
  dlss-eval --model=/models/celeba/export/2000 --data=photos/ --output_dir=eval/
  dlss-eval --model=realworld_x4 --data=photos/ --output_dir=eval/ --degradation=realistic

--model takes what dlss-upscale takes: a starter model name, a SavedModel, an export root, a
training model directory, or a .onnx / .tflite file.

--data is a dataset written by dlss-preprocess (its LR images are used; its degradation and
scale must match) or a folder of HR images (LR made with the same bicubic degradation).
--degradation=realistic makes each LR from its HR with fixed blur, noise and JPEG instead
(deterministic per image; docs/real-world.md), recorded in metrics.json.

LPIPS, DISTS and NIQE are measured beside PSNR/SSIM when their weights are cached (fetch them
once with `dlss-weights`); --perceptual=none turns them off. Every LR evaluated is written as
<output_dir>/lr/<name>.png; --compare=NAME=DIR scores another tool's upscaled
<DIR>/<name>.png of those same LR as one more method (docs/evaluate-and-upscale.md):

  dlss-eval --model=EXPORT --data=photos/test --output_dir=eval/
  (run the other tool on eval/lr/*.png, writing realesrgan/<name>.png)
  dlss-eval --model=EXPORT --data=photos/test --output_dir=eval_compared/ \
      --compare=realesrgan=realesrgan/

Writes metrics.json, per_image.csv, lr/*.png and grids/*.png into --output_dir (all at the
end: a failed run writes nothing) and prints the table. An earlier evaluation's reports
there are refused unless --overwrite.
"""

from __future__ import annotations

from absl import flags

from dlss_dist import console
from dlss_dist.cli import quiet_tensorflow_logs, run_tool, shared_flags

FLAGS = flags.FLAGS
shared_flags.define_model()
shared_flags.define(
    flags.DEFINE_string, "data", None, "dlss-preprocess dataset folder or folder of HR images."
)
flags.DEFINE_string("split", "test", "Dataset split to evaluate (datasets only).")
shared_flags.define(
    flags.DEFINE_string, "output_dir", None, "Where metrics.json, per_image.csv, grids/ go."
)
flags.DEFINE_integer("max_images", None, "Evaluate only the first N images.", lower_bound=1)
flags.DEFINE_integer("max_grids", 8, "Comparison grids for the first N images.", lower_bound=0)
shared_flags.define_tiling()
flags.DEFINE_bool(
    "skip_damaged_records",
    False,
    "Evaluate the readable records of a damaged dataset (listed as skipped) instead of stopping.",
)
flags.DEFINE_enum(
    "degradation",
    "bicubic",
    ["bicubic", "realistic"],
    "Named evaluation degradation making LR from HR (docs/real-world.md).",
)
flags.DEFINE_list(
    "perceptual",
    ["auto"],
    "Perceptual metrics: auto (LPIPS, DISTS, NIQE whose weights are cached; `dlss-weights` "
    "fetches them), none, all, or a list of lpips, dists, niqe (fetched if missing).",
)
flags.DEFINE_multi_string(
    "compare",
    [],
    "NAME=DIR: also score DIR/<name>.png, another tool's upscaling of <output_dir>/lr/<name>.png "
    "(at HR size), as method NAME. Repeatable.",
)
shared_flags.define(
    flags.DEFINE_bool,
    "overwrite",
    False,
    "Replace an earlier evaluation's metrics.json, per_image.csv, lr/ and grids/.",
)
flags.mark_flags_as_required(["model", "data", "output_dir"])


@flags.validator("compare")
def _check_compare(values) -> bool:
    for value in values:
        if "=" not in value or not value.split("=", 1)[0] or not value.split("=", 1)[1]:
            raise flags.ValidationError(f"--compare={value} must be NAME=DIR")
    names = [value.split("=", 1)[0] for value in values]
    if len(set(names)) != len(names):
        raise flags.ValidationError(f"--compare names must differ, got {names}")
    return True


@flags.validator("tile")
def _check_tile(tile: int) -> bool:
    from dlss_dist.serving import tiling  # light: no TensorFlow before the console is set up

    try:
        tiling.validate_tiling(tile, None)
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
    from dlss_dist import serving

    # Found (not loaded) first: a wrong --model fails before TensorFlow is imported.
    source = serving.locate(FLAGS.model)
    console.import_tensorflow_quietly()
    from dlss_dist.evaluation import evaluate

    summary = evaluate.evaluate(
        model=source,
        max_memory=FLAGS.max_memory,
        data=FLAGS.data,
        output_dir=FLAGS.output_dir,
        split=FLAGS.split,
        max_images=FLAGS.max_images,
        max_grids=FLAGS.max_grids,
        tile=FLAGS.tile,
        skip_damaged_records=FLAGS.skip_damaged_records,
        degradation=FLAGS.degradation,
        perceptual_metrics=FLAGS.perceptual,
        compare=dict(value.split("=", 1) for value in FLAGS.compare),
        overwrite=FLAGS.overwrite,
    )
    print(
        f"x{summary['scale']} on {summary['num_images']} images of {summary['data']}"
        f" (LR: {summary['degradation']}, border crop {summary['border_crop']},"
        f" {len(summary['skipped'])} skipped):"
    )
    print(evaluate.format_table(summary))
    print(
        f"Wrote {FLAGS.output_dir}/{evaluate.METRICS_FILE} (the LR inputs: "
        f"{FLAGS.output_dir}/{evaluate.LR_DIR}/)"
    )


def run(argv: list[str] | None = None) -> None:
    """``dlss-eval``; `argv`: the arguments (default: the command line's)."""
    run_tool("dlss-eval", main, __name__, args=argv)


if __name__ == "__main__":
    run()
