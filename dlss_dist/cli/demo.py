r"""Runs the whole pipeline on bundled sample photographs (what `make demo` runs).

dlss-demo --output_dir=demo_output [--overwrite] [--gin_param='train_loop.total_steps = 50']

Trains demo.gin unless --gin_file names other configs. Tells the run in six stages (photos,
preprocessing, training, export, evaluation, report) and ends with one explained table.
"""

from __future__ import annotations

import sys

from absl import flags

from dlss_dist.cli import quiet_tensorflow_logs, run_tool, shared_flags

FLAGS = flags.FLAGS
DEFAULT_GIN_FILE = "demo.gin"
shared_flags.define(
    flags.DEFINE_string,
    "output_dir",
    None,
    "Where photos, dataset, model, evaluation and report go.",
)
shared_flags.define(
    flags.DEFINE_bool, "overwrite", False, "Replace the outputs of an earlier demo run."
)
shared_flags.define(
    flags.DEFINE_multi_string,
    "gin_file",
    [],
    "Gin config files, applied in order (none given: demo.gin).",
)
shared_flags.define(
    flags.DEFINE_multi_string, "gin_param", [], "Gin bindings applied after the files."
)
flags.mark_flag_as_required("output_dir")


def main(argv):
    del argv  # run_tool refuses stray arguments
    quiet_tensorflow_logs()
    from dlss_dist import config, demo

    config.parse_config(FLAGS.gin_file or [DEFAULT_GIN_FILE], FLAGS.gin_param)
    report, summary = demo.run_demo(FLAGS.output_dir, overwrite=FLAGS.overwrite)
    # Stages 1-5 are the log's story (stderr); the result goes to stdout.
    sys.stderr.flush()
    print(demo.stage_header(len(demo.STAGES)))
    print(demo.explained_table(summary))
    print(f"\nReport: {report} (every metric, a comparison picture, the time per stage)")


def run(argv: list[str] | None = None) -> None:
    """``dlss-demo``; `argv`: the arguments (default: the command line's)."""
    run_tool("dlss-demo", main, __name__, args=argv)


if __name__ == "__main__":
    run()
