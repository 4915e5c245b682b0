"""``dlss-preprocess``: images → sharded LR/HR TFRecords that TFDS loads.

Parses the command line into :class:`~beam_jobs.images_to_tfrecords.job.JobOptions`
(every option it does not know must be a Beam pipeline option), calls ``run_job`` and
tells a short story: what was found, progress, what was written and where. Beam's, gRPC's
and the workers' own logging stays out of the console unless ``--verbosity`` asks.
A user error is one line ``dlss-preprocess: error: ...`` and exit status 2 (1 when the
job ran or failed but wrote nothing); the traceback only with ``--verbosity >= 1``,
which also shows every library's log, as in the other dlss tools (dlss_dist.console).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import logging as std_logging
import os
import sys
import time
import traceback

from beam_jobs.images_to_tfrecords.errors import NoExamplesError, PreflightError

PROG = "dlss-preprocess"
EXIT_INTERRUPTED = 130  # as every dlss tool (dlss_dist.cli), after the shell's convention
EXAMPLES = """examples:
  dlss-preprocess --source=folder --input_dir=photos --output_dir=dataset --scale=2 --hr_size=64
  dlss-preprocess --source=celeba --celeba_dir=/data/celeba --output_dir=/data/celeba_sr \\
      --direct_num_workers=2 --direct_running_mode=multi_processing

Any other --option is passed to Beam (e.g. --runner, --direct_num_workers, Dataflow's)."""


def _split_ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"must be 3 numbers like 0.9,0.05,0.05: {text!r}") from e


def build_parser() -> argparse.ArgumentParser:
    """The job's own options (everything else goes to Beam's PipelineOptions)."""
    from beam_jobs.images_to_tfrecords.job import JobOptions
    from beam_jobs.images_to_tfrecords.sources import SOURCES

    defaults = JobOptions(source="folder", output_dir="")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Turn images into sharded LR/HR TFRecords (a TFDS dataset).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--source", choices=sorted(SOURCES), required=True)
    for source in SOURCES.values():
        for flag, help_text in source.folders.items():
            parser.add_argument(f"--{flag}", help=help_text)
    parser.add_argument("--output_dir", required=True, help="the dataset folder to write")
    parser.add_argument("--name", default=defaults.name, help="dataset name, the shard prefix")
    parser.add_argument("--scale", type=int, default=defaults.scale, help="HR/LR ratio, 2, 4, 8...")
    parser.add_argument(
        "--hr_size",
        type=int,
        default=defaults.hr_size,
        help="side of the square HR image (folder/celeba); minimum HR side (paired)",
    )
    parser.add_argument(
        "--patches_per_image",
        type=int,
        default=0,
        help="folder source: N random hr_size patches per photo at native resolution "
        "instead of one resized centre crop",
    )
    parser.add_argument(
        "--split_ratios",
        type=_split_ratios,
        default=defaults.split_ratios,
        help="train,validation,test fractions for folder/paired sources (default 0.9,0.05,0.05)",
    )
    parser.add_argument(
        "--num_shards", type=int, help="shards per split (default: about --examples_per_shard)"
    )
    parser.add_argument("--examples_per_shard", type=int, default=defaults.examples_per_shard)
    parser.add_argument(
        "--alpha",
        choices=("white", "reject"),
        default=defaults.alpha,
        help="transparent pixels: composite on white, or reject the image",
    )
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=defaults.max_pixels,
        help="reject images with more pixels (decompression-bomb guard)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset already in --output_dir (only once the new one is complete)",
    )
    parser.add_argument(
        "--verbosity",
        type=int,
        default=0,
        help="0: the story only; 1: also our log, Beam's and the workers' internals, tracebacks",
    )
    return parser


def unknown_beam_args(beam_args: list[str]) -> list[str]:
    """The arguments that are neither ours nor a Beam pipeline option (typos)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    seen = set()
    stack = list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        with contextlib.suppress(argparse.ArgumentError):  # declared by two classes
            cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(beam_args)
    return [a for a in unknown if a.startswith("-")]


def parse_options(argv: list[str]):
    """``argv`` → (JobOptions, verbosity); argparse exits with status 2 on bad syntax."""
    from beam_jobs.images_to_tfrecords.job import JobOptions
    from beam_jobs.images_to_tfrecords.sources import SOURCES

    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    unknown = unknown_beam_args(beam_args)
    if unknown:
        parser.error(f"unknown option(s): {' '.join(unknown)} (not ours, not Beam's)")
    inputs = {
        flag: getattr(args, flag)
        for source in SOURCES.values()
        for flag in source.folders
        if getattr(args, flag)
    }
    options = JobOptions(
        source=args.source,
        output_dir=args.output_dir,
        inputs=inputs,
        name=args.name,
        scale=args.scale,
        hr_size=args.hr_size,
        patches_per_image=args.patches_per_image,
        split_ratios=args.split_ratios,
        num_shards=args.num_shards,
        examples_per_shard=args.examples_per_shard,
        alpha=args.alpha,
        max_pixels=args.max_pixels,
        overwrite=args.overwrite,
        beam_args=tuple(beam_args),
    )
    return options, args.verbosity


def configure_console(verbosity: int) -> tuple[str, ...]:
    """Keeps framework logging out of the console at verbosity 0.

    Must run before Apache Beam is imported: Beam logs a warning at import time through
    the root logger, which would otherwise install a second console handler (every
    later record printed twice). Returns extra Beam arguments: the workers' own log
    level (multi-process workers forward their records to this process).
    """
    from absl import flags, logging

    from dlss_dist import console

    console.quiet_native_logs(verbosity)  # TensorFlow's and gRPC's C++ logs (the run lock)
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # absl would print "Logging before flag parsing"
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO if verbosity >= 1 else logging.WARNING)
    framework_level = std_logging.INFO if verbosity >= 1 else std_logging.ERROR
    for name in ("", "apache_beam", "grpc"):
        std_logging.getLogger(name).setLevel(framework_level)
    if verbosity >= 1:
        return ()
    console.show_own_story(std_logging.WARNING)  # e.g. "warning: Taking over the lock on ..."
    return ("--default_sdk_harness_log_level=ERROR",)


class Story:
    """The console lines a person reads: start, progress, result."""

    def __init__(self, stream=None, interval: float = 10.0):
        self._stream = stream or sys.stdout
        self._tty = self._stream.isatty()
        self._interval = interval
        self._started = time.monotonic()
        self._last_line = 0.0
        self._total = 0
        self._pending_newline = False
        self._last = None

    def end_line(self) -> None:
        if self._pending_newline:
            self._stream.write("\n")
            self._stream.flush()
            self._pending_newline = False

    def say(self, text: str) -> None:
        self.end_line()
        self._stream.write(text + "\n")
        self._stream.flush()

    def start(self, options, workers: str | None = None) -> None:
        folders = ", ".join(f"--{k}={v}" for k, v in options.inputs.items())
        self.say(f"{PROG}: {options.source} source ({folders}) -> {options.output_dir}")
        if workers:
            self.say(f"  {workers}")

    def progress(self, done: int, total: int) -> None:
        if (done, total) == self._last:
            return
        self._last = (done, total)
        now = time.monotonic()
        if total != self._total:
            if not self._total:
                self.say(f"  found {total} inputs")
            self._total = total
        elapsed = max(now - self._started, 1e-9)
        percent = 100 * done / max(total, 1)
        text = f"  {done}/{total} inputs done ({percent:.0f}%, {done / elapsed:.0f}/s)"
        if self._tty:
            self._stream.write("\r" + text)
            self._stream.flush()
            self._pending_newline = True
        elif now - self._last_line >= self._interval or done == total:
            self._last_line = now
            self.say(text)

    def finish(self, manifest: dict, output_dir: str) -> None:
        splits = manifest["splits"]
        written = ", ".join(
            f"{s} {splits[s]['examples']}" for s in ("train", "validation", "test") if s in splits
        )
        totals = manifest["totals"]
        self.say(
            f"  {totals['read']} inputs: {totals['written']} written, {totals['rejected']} rejected"
            f" in {time.monotonic() - self._started:.1f} s"
        )
        self.say(f"  examples per split: {written}")
        if manifest["rejected_by_reason"]:
            reasons = ", ".join(f"{r} {n}" for r, n in manifest["rejected_by_reason"].items())
            self.say(
                f"  rejected by reason: {reasons} (see {os.path.join(output_dir, 'rejects.jsonl')})"
            )
        for warning in manifest["warnings"]:
            self.say(f"  note: {warning}")
        self.say(f"  dataset: {output_dir} (manifest.json, dataset_info.json, shards)")


def _verbosity(argv: list[str]) -> int:
    """``--verbosity`` read ahead of the full parse (logging is set up before Beam loads)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--verbosity", type=int, default=0)
    try:
        return parser.parse_known_args(argv)[0].verbosity
    except SystemExit:
        return 0


def main(argv: list[str]) -> int:
    """Runs the CLI on ``argv``; returns the exit status."""
    verbosity = _verbosity(argv)
    extra = configure_console(verbosity)
    options, verbosity = parse_options(argv)

    from beam_jobs.images_to_tfrecords.job import run_job

    options = dataclasses.replace(options, beam_args=(*extra, *options.beam_args))
    story = Story()
    try:
        manifest = run_job(
            options,
            on_start=story.start,
            on_progress=story.progress,
            worker_log_to_file=verbosity < 1,
        )
    except (PreflightError, NoExamplesError) as e:
        story.end_line()
        if verbosity >= 1:
            traceback.print_exc()
        print(f"{PROG}: error: {e}", file=sys.stderr)
        _remove(getattr(e, "worker_log", None))
        return 2 if isinstance(e, PreflightError) else 1
    except BaseException as e:
        if not _interrupted(e):
            if isinstance(e, Exception):
                return _unexpected(e, story, verbosity)
            raise
        story.end_line()
        if verbosity >= 1:
            traceback.print_exc()
        _remove(getattr(e, "worker_log", None))
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    story.finish(manifest, manifest["parameters"]["output_dir"])
    return 0


def _interrupted(error: BaseException) -> bool:
    """Ctrl-C, also as Beam reports it from inside a step (a RuntimeError naming it)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, KeyboardInterrupt) or (
            isinstance(error, RuntimeError) and "KeyboardInterrupt" in _first_line(error)
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def _unexpected(e: Exception, story: Story, verbosity: int) -> int:
    story.end_line()
    if verbosity >= 1:
        raise e
    log = getattr(e, "worker_log", None)
    where = f"; the full log is {log}" if log else ""
    print(f"{PROG}: error: {type(e).__name__}: {_first_line(e)}{where}", file=sys.stderr)
    return 1


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else ""


def _remove(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.remove(path)


def run(argv: list[str] | None = None) -> None:
    """Runs the CLI and exits: ``dlss-preprocess`` (``argv`` None: ``sys.argv``).

    As the console command (``argv`` None), once the job has ended (its files closed, its
    workers gone) the exit handlers run and the process ends without the interpreter's
    teardown of every module Beam loaded, which takes about a second of CPU and does
    nothing for the user (issue 20). Called with an ``argv`` it raises ``SystemExit`` as
    usual, so a caller in the same process can catch it.
    """
    if argv is not None:
        sys.exit(main(argv))
    _exit_without_teardown(main(sys.argv[1:]))


def _exit_without_teardown(status: int) -> None:
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython: what exit runs
    if run_exit_handlers is None:
        sys.exit(status)
    run_exit_handlers()
    std_logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to tell
            stream.flush()
    os._exit(status)
