r"""Checks a dataset written by dlss-preprocess against its manifest.json.

  dlss-verify --data=/data/celeba

Reads every shard file record by record: both CRCs of each record, the record count of each
file against the manifest's shard_lengths, missing and stray shard files. Prints one line per
split and one line per damaged file; exit 0 when the dataset is whole, 1 when it is damaged
(or unreadable), 2 for a bad command line. --json prints the full report as JSON instead.
"""

from __future__ import annotations

import json

from absl import flags

from dlss_dist.cli import UserError, quiet_tensorflow_logs, run_tool, shared_flags

FLAGS = flags.FLAGS
shared_flags.define(
    flags.DEFINE_string,
    "data",
    None,
    "Dataset folder written by dlss-preprocess (has manifest.json).",
)
flags.DEFINE_bool("json", False, "Print the report as JSON.")
flags.mark_flag_as_required("data")


def main(argv):
    del argv  # run_tool refuses stray arguments
    quiet_tensorflow_logs()
    from dlss_dist.data import verify

    report = verify.verify_dataset(FLAGS.data)
    if FLAGS.json:
        print(json.dumps(report, indent=2))
    else:
        for split, info in report["splits"].items():
            print(
                f"{split}: {info['readable']} readable of {info['expected']} records "
                f"in {info['files']} file(s)"
            )
        for line in report["damage"]:
            print(f"DAMAGED {line}")
    if not report["ok"]:
        raise UserError(
            f"{FLAGS.data} is damaged ({len(report['damage'])} problem(s) above). Fix: {verify.FIX}"
        )
    print(f"{FLAGS.data}: every record's CRC and every count match manifest.json")


def run(argv: list[str] | None = None) -> None:
    """``dlss-verify``; `argv`: the arguments (default: the command line's)."""
    run_tool("dlss-verify", main, __name__, args=argv)


if __name__ == "__main__":
    run()
