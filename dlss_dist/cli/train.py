r"""Trains the super-resolution GAN.

  dlss-train --gin_file=srgan_celeba_32_128.gin --model_dir=/models/celeba \
      --data_dir=/data/celeba [--gin_param='train_loop.total_steps = 1000']

Flags say where; everything about what is trained is a gin binding. The run resumes from the
newest checkpoint in --model_dir. Exit codes: 0 done, 1 error (including a non-finite loss),
143 stopped by SIGTERM after saving a checkpoint (so a Kubernetes Job restarts it).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from dlss_dist.cli import quiet_tensorflow_logs

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings applied after the files.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, samples and exports.")
flags.DEFINE_string("data_dir", None, "A dataset written by dlss-preprocess.")
flags.mark_flags_as_required(["model_dir", "data_dir"])
flags.register_validator("gin_file", bool, message="give at least one --gin_file")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    quiet_tensorflow_logs()
    from dlss_dist import config, distribute
    from dlss_dist.training import loop

    config.parse_config(FLAGS.gin_file, FLAGS.gin_param)
    strategy = distribute.create_strategy()
    try:
        metrics = loop.train_loop(
            strategy=strategy, model_dir=FLAGS.model_dir, data_dir=FLAGS.data_dir
        )
    except loop.Preempted as stop:
        logging.warning("%s", stop)
        sys.exit(loop.PREEMPTED_EXIT_CODE)
    except (loop.NonFiniteLossError, ValueError, FileNotFoundError) as error:
        logging.error("%s", error)
        sys.exit(f"dlss-train: {error}")
    logging.info("Training finished: %s", metrics)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
