r"""Trains the super-resolution GAN.

  dlss-train --gin_file=sr_dcgan_celeba_32_128.gin --model_dir=/models/celeba \
      --data=/data/celeba [--gin_param='train_loop.total_steps = 1000'] \
      [--init_generator_from=/models/psnr_run]

Flags say where; everything about what is trained is a gin binding. The run resumes from the
newest checkpoint in --model_dir. Exit codes: 0 done, 1 error (one line `dlss-train: error:
...`, including a non-finite loss, a bad setting and a model directory another live run
holds; the traceback too with -v 1), 2 bad command line, 130 stopped by SIGINT (Ctrl-C)
and 143 stopped by SIGTERM, both after saving a checkpoint (a Kubernetes Job restarts the
pod; the run resumes). A second Ctrl-C exits at once without saving. See docs/training.md.
"""

from __future__ import annotations

import sys

from absl import flags, logging

from dlss_dist.cli import one_line, quiet_tensorflow_logs, run_tool, shared_flags

FLAGS = flags.FLAGS
shared_flags.define(
    flags.DEFINE_multi_string, "gin_file", [], "Gin config files, applied in order."
)
shared_flags.define(
    flags.DEFINE_multi_string, "gin_param", [], "Gin bindings applied after the files."
)
shared_flags.define(
    flags.DEFINE_string, "model_dir", None, "Checkpoints, summaries, samples and exports."
)
shared_flags.define(flags.DEFINE_string, "data", None, "A dataset written by dlss-preprocess.")
flags.DEFINE_string(
    "init_generator_from",
    None,
    "Fine-tune: a training model directory (or checkpoint) whose generator (its EMA copy if "
    "it has one) starts this run, e.g. a GAN phase from a PSNR-trained model. Used only when "
    "--model_dir has no checkpoint yet.",
)
flags.mark_flags_as_required(["model_dir", "data"])
RENAMED = {"data_dir": "data"}  # the old name, accepted with a warning for one release


@flags.validator("gin_file", message="give at least one --gin_file")
def _check_gin_file(gin_files) -> bool:
    # A function of this module, not the builtin `bool`: run_tool tells a tool's own checks
    # from those of other tools imported into the same process by the module they live in.
    return bool(gin_files)


def main(argv):
    del argv  # run_tool refuses stray arguments
    quiet_tensorflow_logs()
    import tensorflow as tf

    from dlss_dist import config, distribute
    from dlss_dist.data import verify
    from dlss_dist.training import loop

    try:
        config.parse_config(FLAGS.gin_file, FLAGS.gin_param)
        strategy = distribute.create_strategy()
        metrics = loop.train_loop(
            strategy=strategy,
            model_dir=FLAGS.model_dir,
            data_dir=FLAGS.data,
            init_generator_from=FLAGS.init_generator_from,
        )
    except loop.Preempted as stop:
        # one_line: without gin's "In call to configurable 'train_loop' (<function ...>)".
        logging.warning("%s", one_line(stop))
        sys.exit(stop.exit_code)
    except tf.errors.OpError as error:
        # tf.data names no file (or an iterator op): scan the dataset to name each damaged
        # or unreadable one, and the fix, as dlss-verify does.
        explained = verify.read_error(FLAGS.data, error)
        if explained is None:
            raise
        raise explained from error
    if metrics:
        logging.info(
            "Training finished: %s", " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        )


def run(argv: list[str] | None = None) -> None:
    """``dlss-train``; `argv`: the arguments (default: the command line's)."""
    run_tool("dlss-train", main, __name__, args=argv, renamed=RENAMED)


if __name__ == "__main__":
    run()
