"""The whole job: one composite ``PTransform`` and :func:`run_job` (its typed options,
:class:`JobOptions`, are in options.py).

``run_job(JobOptions(...))`` is what the CLI, the demo and the tests call. It checks
everything it can before any work (``PreflightError``), runs the pipeline into a staging
folder inside ``output_dir``, and only when the new dataset is complete swaps it in
(removing an old one under ``overwrite``): a run that fails leaves the previous dataset
as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import posixpath
import re
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import apache_beam as beam
from absl import logging
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_jobs.images_to_tfrecords import manifest as manifest_lib
from beam_jobs.images_to_tfrecords import progress, shards
from beam_jobs.images_to_tfrecords.errors import NoExamplesError, PreflightError
from beam_jobs.images_to_tfrecords.examples import (
    REJECTS_TAG,
    WRITTEN_TAG,
    ExampleConfig,
    MakeExamples,
)
from beam_jobs.images_to_tfrecords.options import JobOptions
from beam_jobs.images_to_tfrecords.sources import SOURCES, is_local, normalize_root
from dlss_dist import console, imaging, run_lock
from dlss_dist.data import schema

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
STAGING_PREFIX = "_staging-"  # <output_dir>/_staging-<run id>/: the dataset being written
_OLD_PREFIX = "_replaced-"  # <output_dir>/_replaced-<run id>/: the old one, while swapping
# Runners whose workers share this machine's disk (progress files work there).
_LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner")
# Runners that honour --direct_num_workers (the job picks a default for them).
_WORKER_RUNNERS = ("FnApiRunner", "DirectRunner", "SwitchingDirectRunner")
# Below this many inputs one worker finishes first: on two free cores, two worker processes
# cost about 1.3 s more start-up (their Python and Beam imports) and save about 1.4 ms per
# input, break-even near 900 inputs (BENCHMARKS.md, issue 20).
WORKERS_PAY_OFF_FROM = 1000
# The command Beam's FnApiRunner starts a multi_processing worker with, and ours (worker.py).
_BEAM_WORKER_COMMAND = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main"
WORKER_COMMAND = f"{shlex.quote(sys.executable)} -m beam_jobs.images_to_tfrecords.worker"


def _check_number(flag: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PreflightError(f"--{flag} must be an integer >= {minimum}, got {value!r}")


def check_options(options: JobOptions) -> JobOptions:
    """Checks the options (not the file system); returns them with folders normalised.

    Raises:
      PreflightError: saying which option is wrong and how.
    """
    if options.source not in SOURCES:
        raise PreflightError(f"--source must be one of {sorted(SOURCES)}, got {options.source!r}")
    source = SOURCES[options.source]
    try:
        imaging.check_scale(options.scale)
    except ValueError as e:
        raise PreflightError(f"--scale: {e}") from e
    _check_number("hr_size", options.hr_size, 1)
    if options.hr_size < options.scale or options.hr_size % options.scale:
        raise PreflightError(
            f"--hr_size={options.hr_size} must be a positive multiple of --scale={options.scale} "
            f"(e.g. {max(1, round(options.hr_size / options.scale)) * options.scale})"
        )
    if not _NAME_RE.match(options.name):
        raise PreflightError(f"--name={options.name!r} must match {_NAME_RE.pattern}")
    if options.num_shards is not None:
        _check_number("num_shards", options.num_shards, 1)
    _check_number("examples_per_shard", options.examples_per_shard, 1)
    _check_number("max_pixels", options.max_pixels, 1)
    _check_number("patches_per_image", options.patches_per_image, 0)
    if options.patches_per_image and not source.supports_patches:
        raise PreflightError(f"--patches_per_image does not apply to --source={source.name}")
    if options.alpha not in imaging.ALPHA_POLICIES:
        raise PreflightError(f"--alpha must be one of {imaging.ALPHA_POLICIES}")
    ratios = tuple(options.split_ratios)
    if (
        len(ratios) != 3
        or not all(isinstance(r, int | float) and math.isfinite(r) and r >= 0 for r in ratios)
        or sum(ratios) <= 0
    ):
        raise PreflightError(
            "--split_ratios must be 3 finite non-negative numbers with a positive sum "
            f"(train,validation,test), got {','.join(map(str, ratios))}"
        )
    for flag in options.inputs:
        if flag not in source.folders:
            owner = next((s.name for s in SOURCES.values() if flag in s.folders), None)
            raise PreflightError(
                f"--{flag} is only used with --source={owner}"
                if owner
                else f"--{flag} is not an input of --source={source.name}"
            )
    for flag in source.folders:
        if not options.inputs.get(flag):
            raise PreflightError(f"--source={source.name} needs --{flag}")
    if not options.output_dir:
        raise PreflightError("--output_dir is required")
    return dataclasses.replace(
        options,
        inputs={flag: normalize_root(path) for flag, path in options.inputs.items()},
        output_dir=normalize_root(options.output_dir),
        split_ratios=tuple(float(r) for r in ratios),
        beam_args=tuple(options.beam_args),
    )


def existing_dataset_files(output_dir: str) -> list[str]:
    """The files of a dataset already in ``output_dir`` (what a swap replaces)."""
    if not FileSystems.exists(output_dir):
        return []
    names = (
        schema.MANIFEST_FILE,
        schema.REJECTS_FILE,
        manifest_lib.DATASET_INFO_FILE,
        manifest_lib.FEATURES_FILE,
        manifest_lib.METADATA_FILE,
    )
    found = [posixpath.join(output_dir, n) for n in names]
    found = [p for p in found if FileSystems.exists(p)]
    try:
        matched = FileSystems.match([posixpath.join(output_dir, f"*.{schema.SHARD_SUFFIX}-*-of-*")])
        found += [m.path for m in matched[0].metadata_list]
    except Exception:  # noqa: BLE001 - Beam raises when nothing matched
        pass
    return sorted(found)


def _check_output(options: JobOptions) -> None:
    """The output folder can hold a new dataset, and we may replace what is there."""
    out = options.output_dir
    if is_local(out):
        if os.path.exists(out) and not os.path.isdir(out):
            raise PreflightError(f"--output_dir={out} is a file, not a folder")
        parent = out
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PreflightError(f"--output_dir={out}: {parent} is not writable")
    existing = existing_dataset_files(out)
    if existing and not options.overwrite:
        raise PreflightError(
            f"--output_dir={out} already holds a dataset ({len(existing)} files, "
            f"e.g. {posixpath.basename(existing[0])}); pass --overwrite to replace it or "
            "choose another directory"
        )


def preflight(options: JobOptions) -> JobOptions:
    """All checks before any work: options, inputs and output. Returns normalised options."""
    options = check_options(options)
    SOURCES[options.source].check(dict(options.inputs))
    _check_output(options)
    return options


def manifest_base(options: JobOptions) -> dict:
    """The manifest's fixed part: name, source, scale, hr_size, degradation, parameters."""
    parameters = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    parameters.pop("inputs")
    parameters.pop("beam_args")
    for flag in sorted({f for s in SOURCES.values() for f in s.folders}):
        parameters[flag] = options.inputs.get(flag)
    parameters["split_ratios"] = list(options.split_ratios)
    return {
        "name": options.name,
        "source": options.source,
        "scale": options.scale,
        "hr_size": options.hr_size,
        "degradation": SOURCES[options.source].degradation,
        "parameters": dict(sorted(parameters.items())),
        "created_unix": None,
    }


class ImagesToTfrecords(beam.PTransform):
    """The whole job as one step: list → examples → shards + rejects → manifest.

    Applied to a pipeline's begin; writes the dataset into ``output_dir`` and returns
    the manifest (one dict). ``progress_dir``: a local folder for progress files, or None.
    """

    def __init__(self, options: JobOptions, output_dir: str, progress_dir: str | None = None):
        super().__init__()
        self._options = options
        self._output_dir = output_dir
        self._progress_dir = progress_dir

    def expand(self, pbegin):
        options = self._options
        source = SOURCES[options.source]
        config = ExampleConfig(
            scale=options.scale,
            hr_size=options.hr_size,
            patches_per_image=options.patches_per_image,
            alpha=options.alpha,
            max_pixels=options.max_pixels,
        )
        items = (
            pbegin
            | f"Read{source.name.capitalize()}"
            >> source.read(dict(options.inputs), options.split_ratios)
            | "CountFound" >> beam.ParDo(_CountFound(self._progress_dir))
            | "Distribute" >> beam.Reshuffle()
        )
        results = items | "DecodeDegradeEncode" >> beam.ParDo(
            MakeExamples(config, self._progress_dir)
        ).with_outputs(REJECTS_TAG, WRITTEN_TAG, main="examples")
        shard_infos = results.examples | "WriteShards" >> shards.WriteShards(
            self._output_dir, options.name, options.num_shards, options.examples_per_shard
        )
        base = manifest_base(options)
        base["created_unix"] = int(time.time())
        return (
            items,
            results[WRITTEN_TAG],
            results[REJECTS_TAG],
            shard_infos,
        ) | "Account" >> manifest_lib.WriteAccounting(
            self._output_dir, options.name, base, options.examples_per_shard
        )


class _CountFound(beam.DoFn):
    """Passes items through, counting them for the progress display."""

    def __init__(self, progress_dir):
        self._progress_dir = progress_dir

    def setup(self):
        self._found = progress.ProgressCounter(self._progress_dir, progress.TOTAL)

    def process(self, item):
        self._found.add()
        yield item

    def finish_bundle(self):
        self._found.flush()


def beam_options(beam_args: tuple[str, ...]) -> PipelineOptions:
    """Beam's options; without ``--runner`` the in-process FnApiRunner.

    Beam's DirectRunner would first try to download the Prism runner binary, which
    fails offline and is not what the job is tested on; the FnApiRunner is what it
    falls back to, and it honours ``--direct_num_workers`` and
    ``--direct_running_mode``.
    """
    args = list(beam_args)
    if not _given(args, "runner"):
        args.append("--runner=FnApiRunner")
    return PipelineOptions(args)


def _given(beam_args, name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in beam_args)


class LocalRunner(FnApiRunner):
    """Beam's FnApiRunner, starting its multi_processing workers with :mod:`worker`.

    The workers run Beam's own SDK harness either way; ours exit without the
    interpreter's teardown, which Beam waits for one worker after another when the job
    ends (see worker.py). Only the command line of the worker processes differs: the
    pipeline, its options and every other runner are untouched.
    """

    def run_via_runner_api(self, pipeline_proto, options):
        for environment in pipeline_proto.components.environments.values():
            if (
                environment.urn == python_urns.SUBPROCESS_SDK
                and environment.payload == _BEAM_WORKER_COMMAND.encode()
            ):
                environment.payload = WORKER_COMMAND.encode()
        return super().run_via_runner_api(pipeline_proto, options)


def _runner(pipeline_options: PipelineOptions):
    """The runner object for ``beam.Pipeline``: ours for the FnApiRunner, else Beam's choice."""
    if str(pipeline_options.get_all_options().get("runner")) == "FnApiRunner":
        return LocalRunner()
    return None


def available_cores() -> int:
    """The CPU cores this process may use: its CPU affinity, capped by a cgroup CPU quota
    (a container's CPU limit, rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(cores, 1)


def count_inputs(options: JobOptions, limit: int) -> int:
    """The number of input files, counted up to ``limit`` (listing stops there)."""
    source = SOURCES[options.source]
    return sum(1 for _ in itertools.islice(source.list_inputs(dict(options.inputs)), limit))


def choose_workers(
    beam_args: tuple[str, ...], count: Callable[[int], int], cores: int
) -> tuple[tuple[str, ...], str | None]:
    """Picks ``--direct_num_workers`` when the user did not and the runner is a local one.

    ``count(limit)`` counts the inputs up to ``limit``. All ``cores`` work as worker
    processes (``multi_processing``, unless ``--direct_running_mode`` says otherwise) when
    there are at least :data:`WORKERS_PAY_OFF_FROM` inputs, else one worker in this process.
    Returns (the Beam arguments to add, the sentence for the job's story, or None when the
    choice was not ours).
    """
    standard = PipelineOptions(list(beam_args)).get_all_options()
    runner = standard.get("runner") or "FnApiRunner"
    if str(runner) not in _WORKER_RUNNERS or standard.get("environment_type") == "LOOPBACK":
        return (), None
    if _given(beam_args, "direct_num_workers"):
        workers = standard.get("direct_num_workers") or cores
        return (), f"{workers} worker{'s' if workers != 1 else ''} (--direct_num_workers)"
    mode = standard.get("direct_running_mode") or "in_memory"
    if mode == "in_memory" and _given(beam_args, "direct_running_mode"):
        return ("--direct_num_workers=1",), "1 worker (--direct_running_mode=in_memory)"
    if cores < 2:
        return ("--direct_num_workers=1",), "1 worker (1 CPU core available)"
    found = count(WORKERS_PAY_OFF_FROM)
    if found < WORKERS_PAY_OFF_FROM:
        return (
            ("--direct_num_workers=1",),
            f"1 worker: {found} inputs are too few to pay for starting {cores} worker "
            f"processes (from {WORKERS_PAY_OFF_FROM}; --direct_num_workers=N to choose)",
        )
    extra = (f"--direct_num_workers={cores}",)
    if not _given(beam_args, "direct_running_mode"):
        mode = "multi_processing"
        extra += ("--direct_running_mode=multi_processing",)
    kind = "processes" if mode == "multi_processing" else "threads"
    return (
        extra,
        f"{cores} worker {kind}, one per CPU core ({WORKERS_PAY_OFF_FROM} inputs or more; "
        "--direct_num_workers=N to choose)",
    )


def _runs_locally(options: PipelineOptions) -> bool:
    standard = options.get_all_options()
    if standard.get("environment_type") == "LOOPBACK":
        return True
    return str(standard.get("runner")) in _LOCAL_RUNNERS


def _publish(staging: str, output_dir: str, run_id: str) -> None:
    """Swaps the finished dataset in ``staging`` into ``output_dir``.

    The old dataset's files move aside first (a rename each), then the new ones move in
    with ``manifest.json`` last, then the old ones are deleted. Readers look for the
    manifest first, so they see the old dataset, then none, then the new one.
    """
    old = existing_dataset_files(output_dir)
    if old:
        aside = posixpath.join(output_dir, f"{_OLD_PREFIX}{run_id}")
        FileSystems.mkdirs(aside)
        FileSystems.rename(old, [posixpath.join(aside, posixpath.basename(p)) for p in old])
    new = [m.path for m in FileSystems.match([posixpath.join(staging, "*")])[0].metadata_list]
    new = [p for p in new if posixpath.basename(p) != shards.TMP_DIR]
    new.sort(key=lambda p: posixpath.basename(p) == schema.MANIFEST_FILE)
    for path in new:
        FileSystems.rename([path], [posixpath.join(output_dir, posixpath.basename(path))])
    FileSystems.delete([staging])
    if old:
        FileSystems.delete([aside])


@contextlib.contextmanager
def _stderr_to_file(enabled: bool):
    """Sends this process's and Beam's worker processes' stderr to a log file.

    The multi-process workers are child processes that log gRPC and harness internals
    straight to the stderr they inherit, before any option of ours reaches them; the
    file descriptor is the one switch that covers them. Yields the log's path (None
    when not enabled); the file is deleted on success and kept (and attached to the
    exception as ``worker_log``) on failure.
    """
    if not enabled:
        yield None
        return
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in the finally below
        prefix="dlss-preprocess-", suffix=".log", delete=False
    )
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    failed = False
    try:
        yield log.name
    except BaseException as e:
        failed = True
        e.worker_log = log.name
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log.close()
        if not failed:
            os.remove(log.name)


def run_job(
    options: JobOptions,
    *,
    on_start: Callable[[JobOptions, str | None], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    worker_log_to_file: bool = False,
) -> dict:
    """Runs the job to completion and returns the manifest it wrote.

    Args:
      options: what to do (checked here first).
      on_start: called just before the pipeline starts with the checked options (their
        ``beam_args`` include the number of workers the job chose, see
        :func:`choose_workers`) and a sentence saying how many workers run and why (None
        when the runner is not a local one).
      on_progress: called with ``(inputs done, inputs found)`` about once a second while
        the pipeline runs (local runners only).
      worker_log_to_file: send stderr (Beam's and its worker processes' chatter) to a
        temporary log file while the job runs; on failure the exception's ``worker_log``
        names it.

    Raises:
      PreflightError: bad options, inputs or output (nothing was written).
      NoExamplesError: every input was rejected (the old dataset, if any, is kept).
    """
    options = preflight(options)
    # The lock is taken before stderr goes to the worker log, so that a takeover's warning
    # reaches the user.
    lock = _take_lock(options.output_dir)
    try:
        with _stderr_to_file(worker_log_to_file):
            manifest = _run_locked(options, lock, on_start, on_progress)
    finally:
        lock.release()
    splits = manifest["splits"]
    order = [s for s in ("train", "validation", "test") if s in splits]
    order += [s for s in splits if s not in order]
    counts = ", ".join(f"{splits[s]['examples']} {s}" for s in order)
    logging.info("Wrote %s examples to %s.", counts, options.output_dir)
    return manifest


def _take_lock(output_dir: str):
    """One live dlss-preprocess per output folder (``run.lock``; see dlss_dist.run_lock).

    On a local disk the lock needs no TensorFlow; on ``gs://`` and the like it uses
    ``tf.io.gfile``, imported here first without its start-up banners.
    """
    if not is_local(output_dir):
        console.import_tensorflow_quietly()
    lock = run_lock.RunLock(output_dir, "dlss-preprocess")
    try:
        return lock.acquire()
    except run_lock.LockHeldError as e:
        raise PreflightError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - tf.io.gfile's errors for an unwritable folder
        raise PreflightError(f"cannot write to --output_dir={output_dir}: {e}") from e


def _remove_dead_staging(output_dir: str) -> None:
    """Deletes staging folders of earlier runs that died (we hold the lock: none is live)."""
    if is_local(output_dir):
        for name in os.listdir(output_dir):
            if name.startswith(STAGING_PREFIX):
                logging.info("Removing %s, left by an earlier run", name)
                shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
        return
    try:
        matched = FileSystems.match([posixpath.join(output_dir, f"{STAGING_PREFIX}*")])[0]
    except Exception:  # noqa: BLE001 - nothing matched
        return
    if matched.metadata_list:
        FileSystems.delete([m.path for m in matched.metadata_list])


def _run_locked(options, lock, on_start, on_progress) -> dict:
    _remove_dead_staging(options.output_dir)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    staging = posixpath.join(options.output_dir, f"{STAGING_PREFIX}{run_id}")
    try:
        FileSystems.mkdirs(staging)
    except Exception as e:  # noqa: BLE001 - each filesystem raises its own kind
        raise PreflightError(f"cannot write to --output_dir={options.output_dir}: {e}") from e
    extra, workers_note = choose_workers(
        options.beam_args, lambda limit: count_inputs(options, limit), available_cores()
    )
    options = dataclasses.replace(options, beam_args=(*options.beam_args, *extra))
    pipeline_options = beam_options(options.beam_args)
    progress_dir = (
        tempfile.mkdtemp(prefix="dlss_progress_") if _runs_locally(pipeline_options) else None
    )
    watcher = None
    if progress_dir and on_progress:
        watcher = progress.ProgressWatcher(progress_dir, on_progress)
        watcher.start()
    keep_staging = False
    logging.info(
        "dlss-preprocess %s -> %s (staging %s)", options.source, options.output_dir, staging
    )
    try:
        if workers_note:
            logging.info("Workers: %s", workers_note)
        if on_start:
            on_start(options, workers_note)
        with beam.Pipeline(runner=_runner(pipeline_options), options=pipeline_options) as pipeline:
            _ = pipeline | "ImagesToTfrecords" >> ImagesToTfrecords(options, staging, progress_dir)
        if watcher:
            watcher.stop()
            counts = progress.read_counts(progress_dir)
            on_progress(counts[progress.DONE], counts[progress.TOTAL])
        tmp = posixpath.join(staging, shards.TMP_DIR)
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
        with FileSystems.open(posixpath.join(staging, schema.MANIFEST_FILE)) as f:
            manifest = json.load(f)
        if not manifest["totals"]["examples"]:
            keep_staging = True  # its rejects.jsonl says why
            raise NoExamplesError(
                f"no example was written: all {manifest['totals']['read']} inputs were "
                f"rejected ({_reasons(manifest)}); see "
                f"{posixpath.join(staging, schema.REJECTS_FILE)}. The dataset in "
                f"{options.output_dir}, if any, is unchanged"
            )
        for name, text in manifest_lib.tfds_metadata(manifest).items():
            manifest_lib.write_text(posixpath.join(staging, name), text)
        if lock.lost:
            raise RuntimeError(
                f"the lock on {options.output_dir} was taken over by another run while this "
                "one worked; nothing was published"
            )
        _publish(staging, options.output_dir, run_id)
    except BaseException:
        if watcher and watcher.is_alive():
            watcher.stop()
        if not keep_staging and FileSystems.exists(staging):
            FileSystems.delete([staging])
        raise
    finally:
        if progress_dir:
            shutil.rmtree(progress_dir, ignore_errors=True)
    return manifest


def _reasons(manifest: dict) -> str:
    return ", ".join(f"{n} {r}" for r, n in manifest["rejected_by_reason"].items())
