r"""Turns images into sharded LR/HR TFRecords (a TFDS dataset) with Apache Beam.

  dlss-preprocess --source=folder --input_dir=photos --output_dir=dataset --scale=2 --hr_size=64
  dlss-preprocess --source=celeba --celeba_dir=/data/celeba --output_dir=/data/celeba_sr \
      --direct_num_workers=2 --direct_running_mode=multi_processing

Every other --option is passed to Beam as a pipeline option (--runner, --direct_num_workers,
--direct_running_mode, Dataflow's --project ...); one that is neither ours nor Beam's is
refused. Prints what was found, progress, what was written and where; Beam's, gRPC's and the
workers' own logging only with --verbosity=1. Exit codes as every dlss tool: 0 done, 1 error
(one line `dlss-preprocess: error: ...`, the traceback too with --debug), 2 bad command line,
130 Ctrl-C. A failed or interrupted run leaves the previous dataset as it was. See
docs/preprocess.md.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging as std_logging
import os
import sys
import time
import typing

from absl import app, flags

from beam_jobs.images_to_tfrecords.errors import NoExamplesError, PreflightError
from beam_jobs.images_to_tfrecords.options import SOURCE_FOLDERS, JobOptions
from dlss_dist import progress as progress_lib
from dlss_dist.cli import UserError, is_user_error, run_tool, shared_flags

PROG = "dlss-preprocess"
FLAGS = flags.FLAGS


class _NumbersParser(flags.ArgumentParser):
    """``0.9,0.05,0.05`` -> ``(0.9, 0.05, 0.05)``: a fixed count of comma-separated numbers."""

    def __init__(self, example: tuple[float, ...]):
        self._example = ",".join(map(str, example))
        self._count = len(example)

    def parse(self, argument):
        if isinstance(argument, tuple):
            return argument
        try:
            numbers = tuple(float(part) for part in str(argument).split(","))
        except ValueError:
            numbers = ()
        if len(numbers) != self._count:
            raise ValueError(
                f"must be {self._count} comma-separated numbers like {self._example}, "
                f"got {argument!r}"
            )
        return numbers

    def flag_type(self) -> str:
        return f"{self._count} comma-separated numbers"


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the command line from :class:`JobOptions`: one flag per field with a ``help``
    in its metadata (type from the annotation, ``choices``/``minimum`` from the metadata, the
    field's default; required without one), and each source's folder flags for ``inputs``."""
    hints = typing.get_type_hints(JobOptions)
    for field in dataclasses.fields(JobOptions):
        meta = field.metadata
        if "help" not in meta:
            continue  # inputs (the folder flags below), beam_args (the other flags)
        name, kind, help_text = field.name, hints[field.name], meta["help"]
        default = None if field.default is dataclasses.MISSING else field.default
        bounds = {"lower_bound": meta["minimum"]} if "minimum" in meta else {}
        if "choices" in meta:
            define = (flags.DEFINE_enum, name, default, list(meta["choices"]), help_text)
        elif kind is bool:
            define = (flags.DEFINE_bool, name, default, help_text)
        elif kind in (int, int | None):
            define = (flags.DEFINE_integer, name, default, help_text)
        elif kind is str:
            define = (flags.DEFINE_string, name, default, help_text)
        elif typing.get_origin(kind) is tuple and set(typing.get_args(kind)) == {float}:
            flags.DEFINE(
                _NumbersParser(default),
                name,
                default,
                help_text,
                flag_values=flag_values,
                serializer=flags.CsvListSerializer(","),
            )
            continue
        else:
            raise TypeError(f"JobOptions.{name}: no command-line flag type for {kind}")
        kwargs = {**bounds} if define[0] is flags.DEFINE_integer else {}
        shared_flags.define(*define, flag_values=flag_values, **kwargs)
        if field.default is dataclasses.MISSING:
            flags.mark_flag_as_required(name, flag_values=flag_values)
    for folders in SOURCE_FOLDERS.values():
        for flag, help_text in folders.items():
            shared_flags.define(flags.DEFINE_string, flag, None, help_text, flag_values=flag_values)


define_flags()


def unknown_beam_args(beam_args: list[str]) -> list[str]:
    """The arguments that are neither ours nor a Beam pipeline option (typos, strays)."""
    import argparse

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
    return unknown


def options_from_flags(flag_values: flags.FlagValues, beam_args: list[str]) -> JobOptions:
    """The parsed flags (``define_flags``) and the Beam options left over -> JobOptions.

    Raises:
      app.UsageError: an argument is neither ours nor a Beam pipeline option.
    """
    unknown = unknown_beam_args(list(beam_args))
    strays = [argument for argument in unknown if not argument.startswith("-")]
    if strays:
        raise app.UsageError(f"unexpected arguments {strays}")
    if unknown:
        raise app.UsageError(
            f"unknown option(s) {' '.join(unknown)}: neither dlss-preprocess's nor a Beam "
            "pipeline option"
        )
    values = {
        field.name: flag_values[field.name].value
        for field in dataclasses.fields(JobOptions)
        if "help" in field.metadata
    }
    inputs = {
        flag: flag_values[flag].value
        for folders in SOURCE_FOLDERS.values()
        for flag in folders
        if flag_values[flag].value
    }
    return JobOptions(**values, inputs=inputs, beam_args=tuple(beam_args))


def parse_options(argv: list[str]) -> JobOptions:
    """A ``dlss-preprocess`` command line (without the program name) -> JobOptions, parsed
    apart from absl's global flags (for scripts and tests).

    Raises:
      app.UsageError: a bad command line.
    """
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    try:
        rest = flag_values([PROG, *argv], known_only=True)
    except flags.Error as error:
        raise app.UsageError(str(error)) from error
    return options_from_flags(flag_values, rest[1:])


def configure_console(verbosity: int) -> tuple[str, ...]:
    """Keeps framework logging out of the console at verbosity 0.

    Must run before Apache Beam is imported: Beam logs a warning at import time through
    the root logger, which would otherwise install a second console handler (every
    later record printed twice). Returns extra Beam arguments: the workers' own log
    level (multi-process workers forward their records to this process).
    """
    from absl import logging

    from dlss_dist import console

    console.quiet_native_logs(verbosity)  # TensorFlow's and gRPC's C++ logs (the run lock)
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
    """The console lines a person reads: start, progress (`dlss_dist.progress`), result."""

    def __init__(self, stream=None):
        self._stream = stream or sys.stdout
        self._started = time.monotonic()
        self._running_since = self._started
        self._progress: progress_lib.Progress | None = None

    def end_line(self) -> None:
        """Ends the progress report (a bar on a terminal goes; when piped, a last line)."""
        if self._progress is not None:
            self._progress.close()

    def say(self, text: str) -> None:
        if self._progress is not None and self._progress.is_bar:
            self._progress.write(text)  # above the bar
            return
        self._stream.write(text + "\n")
        self._stream.flush()

    def start(self, options, workers: str | None = None) -> None:
        self._running_since = time.monotonic()
        folders = ", ".join(f"--{k}={v}" for k, v in options.inputs.items())
        self.say(f"{PROG}: {options.source} source ({folders}) -> {options.output_dir}")
        if workers:
            self.say(f"  {workers}")

    def progress(self, done: int, total: int) -> None:
        """From the job's progress watcher: `total` inputs found so far, `done` of them done."""
        if self._progress is None:
            self.say(f"  found {total} inputs")
            self._progress = progress_lib.Progress(
                total,
                "  preprocessing",
                unit="input",
                stream=self._stream,
                started=self._running_since,
            )
        self._progress.update(done=done, total=total)

    def finish(self, manifest: dict, output_dir: str) -> None:
        self.end_line()
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


class JobFailedError(UserError):
    """The pipeline failed (a worker error): its last line, and the worker log's path."""


def main(argv: list[str]) -> None:
    """The absl main: ``argv`` is the program name and the Beam pipeline options."""
    verbosity = FLAGS.verbosity
    extra = configure_console(verbosity)
    options = options_from_flags(FLAGS, argv[1:])

    from beam_jobs.images_to_tfrecords.job import check_options, run_job

    try:
        check_options(options)  # the options alone: a bad command line (exit 2)
    except PreflightError as error:
        raise app.UsageError(str(error)) from error
    options = dataclasses.replace(options, beam_args=(*extra, *options.beam_args))
    story = Story()
    try:
        manifest = run_job(
            options,
            on_start=story.start,
            on_progress=story.progress,
            worker_log_to_file=verbosity < 1,
        )
    except (PreflightError, NoExamplesError) as error:
        story.end_line()
        _remove(getattr(error, "worker_log", None))
        raise
    except BaseException as error:
        story.end_line()
        if _interrupted(error):
            _remove(getattr(error, "worker_log", None))
            raise KeyboardInterrupt from error
        if not isinstance(error, Exception) or is_user_error(error):
            raise
        log = getattr(error, "worker_log", None)
        where = f"; the full log is {log}" if log else ""
        raise JobFailedError(f"{type(error).__name__}: {_first_line(error)}{where}") from error
    story.finish(manifest, manifest["parameters"]["output_dir"])


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


def _first_line(error: BaseException) -> str:
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
    nothing for the user (issue 20). Called with an ``argv`` (without the program name) it
    raises ``SystemExit`` as usual, so a caller in the same process can catch it.
    """
    if argv is not None:
        run_tool(PROG, main, __name__, args=argv, pass_unknown_flags=True)
        return
    try:
        run_tool(PROG, main, __name__, pass_unknown_flags=True)
    except SystemExit as exit_:
        _exit_without_teardown(exit_.code)


def _exit_without_teardown(code: int | str | None) -> None:
    if isinstance(code, str):  # sys.exit("message"): Python prints it and exits 1
        sys.stderr.write(code + "\n")
        code = 1
    status = 0 if code is None else int(code)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython: what exit runs
    if run_exit_handlers is None:
        sys.exit(status)
    run_exit_handlers()
    std_logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to tell
            stream.flush()
    os._exit(status)
