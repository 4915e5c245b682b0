r"""Exports a trained generator as a TF Serving SavedModel, ONNX or TFLite.

  dlss-export --model=/models/celeba --export_dir=/models/celeba/serving
  dlss-export --model=DIR --checkpoint=DIR/checkpoints/ckpt-12 --export_dir=OUT --export_version=7
  dlss-export --model=realworld_x4 --export_dir=OUT --format=onnx
  dlss-export --model=/models/celeba/export/2000 --export_dir=OUT --format=onnx,tflite

--model converts from any TensorFlow model dlss-upscale takes: a training model directory, a
SavedModel, an export root or a starter model name; a SavedModel's network is rebuilt from the
operative_config.gin of its run (beside it, or in the model directory above its export
folder), and its version is its folder's number (1 for a starter model). A .onnx or .tflite
file cannot be converted back. (--model_dir and --version are the old names of --model and
--export_version, accepted with a warning until the next release.)

From a training model directory the generator is rebuilt from <model_dir>/operative_config.gin
and restored from the newest checkpoint (or --checkpoint); the EMA weights are exported when
the checkpoint has them. The SavedModel goes to <export_dir>/<version>/, the folder layout TF
Serving watches (version: --export_version, else the checkpoint's training step).

  dlss-export --model=DIR --export_dir=OUT --format=savedmodel,onnx,tflite

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

from dlss_dist import console
from dlss_dist.cli import quiet_tensorflow_logs, run_tool, shared_flags
from dlss_dist.export_formats import FORMATS, TFLITE_FILES

FLAGS = flags.FLAGS
shared_flags.define_model()
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or folder (default: the newest).")
flags.DEFINE_string(
    "export_dir", None, "Export root; the SavedModel goes to <export_dir>/<version>."
)
flags.DEFINE_integer(
    "export_version", None, "Version folder name (default: the checkpoint's step)."
)
flags.DEFINE_integer(
    "max_input_pixels",
    None,
    "Largest input W*H in pixels the SavedModel accepts (default: the source export's, else "
    "what the training run recorded in its model directory).",
    lower_bound=1,
)
flags.DEFINE_list(
    "format", ["savedmodel"], "Comma-separated formats to write: savedmodel, onnx, tflite."
)
flags.DEFINE_integer("onnx_opset", 17, "ONNX opset for --format=onnx.", lower_bound=13)
flags.DEFINE_enum("onnx_layout", "nhwc", ["nhwc", "nchw"], "ONNX input/output layout.")
flags.DEFINE_list("tflite_variants", ["float32", "float16"], "TFLite variants to write.")
shared_flags.define(
    flags.DEFINE_bool,
    "overwrite",
    False,
    "Replace an existing <export_dir>/<version> folder (as a whole).",
)
flags.mark_flags_as_required(["model", "export_dir"])
RENAMED = {"model_dir": "model", "version": "export_version"}  # old names, for one release

# The export formats' names live in a module without TensorFlow: checking flags stays light.
TFLITE_VARIANTS = tuple(TFLITE_FILES)


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
    quiet_tensorflow_logs(tensorflow=False)
    from dlss_dist import serving

    source = serving.locate(FLAGS.model)  # a wrong --model fails before TensorFlow loads
    serving.check_convertible(source)
    console.import_tensorflow_quietly()
    import tensorflow as tf

    from dlss_dist import export, exporters
    from dlss_dist.serving import convert

    exporters.check_dependencies(FLAGS.format)
    path = FLAGS.export_dir
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
        raise ValueError(f"--export_dir={path} is a file, not a folder")
    if FLAGS.export_version is not None:
        # Before the (slow) model load: an occupied version folder costs nothing to refuse.
        exporters.check_version_folder(
            os.path.join(FLAGS.export_dir, str(FLAGS.export_version)), overwrite=FLAGS.overwrite
        )
    checkpoint = _training_checkpoint(source, FLAGS.checkpoint)
    if checkpoint is not None:
        if FLAGS.export_version is None:
            exporters.check_version_folder(
                os.path.join(FLAGS.export_dir, str(checkpoint.version)),
                overwrite=FLAGS.overwrite,
            )
        found = convert.checkpoint_generator(checkpoint)
    else:
        found = convert.source_generator(source, FLAGS.checkpoint)
    version = FLAGS.export_version if FLAGS.export_version is not None else found.version
    written = exporters.export_version(
        found.generator,
        FLAGS.export_dir,
        version,
        scale=found.scale,
        formats=FLAGS.format,
        max_input_pixels=(
            FLAGS.max_input_pixels or found.max_input_pixels or export.DEFAULT_MAX_INPUT_PIXELS
        ),
        overwrite=FLAGS.overwrite,
        onnx_opset=FLAGS.onnx_opset,
        onnx_layout=FLAGS.onnx_layout,
        tflite_variants=tuple(FLAGS.tflite_variants),
    )
    for kind, path in written.items():
        print(f"Exported x{found.scale} generator from {found.origin} to {path} ({kind})")


def _training_checkpoint(source, checkpoint: str | None):
    """The checkpoint to export when `source` is a training model directory, else None."""
    import tensorflow as tf

    from dlss_dist.serving import convert, tensorflow_models

    if not tensorflow_models.is_model_dir(source.path) or tf.io.gfile.exists(
        os.path.join(source.path, "saved_model.pb")
    ):
        return None
    return convert.resolve_checkpoint(source.path, checkpoint)


def run(argv: list[str] | None = None) -> None:
    """``dlss-export``; `argv`: the arguments (default: the command line's)."""
    run_tool("dlss-export", main, __name__, args=argv, renamed=RENAMED)


if __name__ == "__main__":
    run()
