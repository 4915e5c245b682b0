r"""Exports a trained generator as a TF Serving SavedModel.

  dlss-export --model_dir=/models/celeba --export_dir=/models/celeba/serving
  dlss-export --model_dir=DIR --checkpoint=DIR/checkpoints/ckpt-12 --export_dir=OUT --version=7

The generator is rebuilt from <model_dir>/operative_config.gin and restored from the newest
checkpoint (or --checkpoint); the EMA weights are exported when the checkpoint has them.
The SavedModel goes to <export_dir>/<version>/, the folder layout TF Serving watches
(version: --version, else the checkpoint's training step).

  dlss-export --model_dir=DIR --export_dir=OUT --format=savedmodel,onnx,tflite

--format also writes <export_dir>/<version>/model.onnx (ONNX Runtime, TensorRT) and
model.tflite + model_fp16.tflite (LiteRT); see docs/export-and-serving-formats.md.

Every flag is checked before anything is written. The version folder is written under a
hidden name and renamed into place whole, so TF Serving never sees half a version and a
failure (a full disk) leaves nothing. A version folder that already holds files is refused
unless --overwrite, which replaces it whole (formats are never added to another export).
"""

from __future__ import annotations

import os

from absl import flags

from dlss_dist.cli import quiet_tensorflow_logs, run_tool

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Training model_dir (has operative_config.gin).")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or folder (default: the newest).")
flags.DEFINE_string(
    "export_dir", None, "Export root; the SavedModel goes to <export_dir>/<version>."
)
flags.DEFINE_integer("version", None, "Version folder name (default: the checkpoint's step).")
flags.DEFINE_integer(
    "max_input_pixels",
    None,
    "Largest input H*W the SavedModel accepts (default: the run's train_loop.max_input_pixels).",
    lower_bound=1,
)
flags.DEFINE_list(
    "format", ["savedmodel"], "Comma-separated formats to write: savedmodel, onnx, tflite."
)
flags.DEFINE_integer("onnx_opset", 17, "ONNX opset for --format=onnx.", lower_bound=13)
flags.DEFINE_enum("onnx_layout", "nhwc", ["nhwc", "nchw"], "ONNX input/output layout.")
flags.DEFINE_list("tflite_variants", ["float32", "float16"], "TFLite variants to write.")
flags.DEFINE_bool(
    "overwrite", False, "Replace an existing <export_dir>/<version> folder (as a whole)."
)
flags.mark_flags_as_required(["model_dir", "export_dir"])


# dlss_dist.exporters.FORMATS and TFLITE_FILES (a test checks they agree): spelled out here
# so that checking the flags does not import TensorFlow.
FORMATS = ("savedmodel", "onnx", "tflite")
TFLITE_VARIANTS = ("float32", "float16")


@flags.multi_flags_validator(["format", "tflite_variants"])
def _check_formats(values: dict) -> bool:
    """Checked at parse time, so a bad value is a usage error (exit 2) and nothing is written."""
    unknown = sorted(set(values["format"] or ()) - set(FORMATS)) or not values["format"]
    if unknown:
        raise flags.ValidationError(
            f"--format={','.join(values['format'] or [])}: choose from {', '.join(FORMATS)}"
        )
    variants = values["tflite_variants"] or []
    unknown = sorted(set(variants) - set(TFLITE_VARIANTS))
    if "tflite" in values["format"] and (unknown or not variants):
        raise flags.ValidationError(
            f"--tflite_variants={','.join(variants)}: choose from {', '.join(TFLITE_VARIANTS)}"
        )
    return True


def main(argv):
    del argv  # run_tool refuses stray arguments
    quiet_tensorflow_logs()
    import tensorflow as tf

    from dlss_dist import exporters
    from dlss_dist.training import loop, model_dir

    exporters.check_dependencies(FLAGS.format)
    for flag in ("model_dir", "export_dir"):
        path = getattr(FLAGS, flag)
        if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
            raise ValueError(f"--{flag}={path} is a file, not a folder")
    if not tf.io.gfile.isdir(FLAGS.model_dir):
        raise FileNotFoundError(f"--model_dir={FLAGS.model_dir} does not exist")
    checkpoint = model_dir.resolve_checkpoint(FLAGS.model_dir, FLAGS.checkpoint)
    version = FLAGS.version
    if version is None:
        version = model_dir.checkpoint_step(checkpoint)
    if version is None:
        raise ValueError(f"{checkpoint} has no `step` variable: pass --version")
    version_dir = os.path.join(FLAGS.export_dir, str(version))
    # Before the (slow) model load: an occupied version folder costs nothing to refuse.
    exporters.check_version_folder(version_dir, overwrite=FLAGS.overwrite)
    generator, scale = model_dir.load_generator(FLAGS.model_dir, checkpoint)
    written = exporters.export_version(
        generator,
        FLAGS.export_dir,
        version,
        scale=scale,
        formats=FLAGS.format,
        max_input_pixels=FLAGS.max_input_pixels or loop.max_input_pixels_of_run(),
        overwrite=FLAGS.overwrite,
        onnx_opset=FLAGS.onnx_opset,
        onnx_layout=FLAGS.onnx_layout,
        tflite_variants=tuple(FLAGS.tflite_variants),
    )
    for kind, path in written.items():
        print(f"Exported x{scale} generator from {checkpoint} to {path} ({kind})")


def run():
    run_tool("dlss-export", main, __name__)


if __name__ == "__main__":
    run()
