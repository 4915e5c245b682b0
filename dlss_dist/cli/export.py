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
flags.mark_flags_as_required(["model_dir", "export_dir"])


def main(argv):
    del argv  # run_tool refuses stray arguments
    quiet_tensorflow_logs()
    import tensorflow as tf

    from dlss_dist import export, exporters
    from dlss_dist.training import loop, model_dir

    if not FLAGS.format or not set(FLAGS.format) <= set(exporters.FORMATS):
        raise ValueError(f"--format={FLAGS.format}: choose from {list(exporters.FORMATS)}")
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
    generator, scale = model_dir.load_generator(FLAGS.model_dir, checkpoint)
    version_dir = os.path.join(FLAGS.export_dir, str(version))
    written = {}
    if "savedmodel" in FLAGS.format:
        written["SavedModel"] = export.export_generator(
            generator,
            version_dir,
            scale=scale,
            max_input_pixels=FLAGS.max_input_pixels or loop.max_input_pixels_of_run(),
        )
    written.update(
        exporters.export_files(
            generator,
            version_dir,
            scale=scale,
            formats=FLAGS.format,
            onnx_opset=FLAGS.onnx_opset,
            onnx_layout=FLAGS.onnx_layout,
            tflite_variants=tuple(FLAGS.tflite_variants),
        )
    )
    for kind, path in written.items():
        print(f"Exported x{scale} generator from {checkpoint} to {path} ({kind})")


def run():
    run_tool("dlss-export", main, __name__)


if __name__ == "__main__":
    run()
