"""Periodic work between training chunks, each a small action with an interval.

The controller asks every action when it is next due (`next_due`) and ends each chunk at
the earliest such step, then calls the actions that are due (`is_due`); every action also
runs once at the final step. Actions exist on every worker with the same intervals, so all
workers cut chunks at the same steps; the ones that write files do nothing off the chief.

Also here: the stop signals (SIGTERM and SIGINT) and the preemption vote, and
`process_state`, the one place that sets (and restores) process-global TF/Keras state.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
import threading

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dlss_dist import checkpoints, files, imaging, models, pictures
from dlss_dist.data import pipeline
from dlss_dist.evaluation import baselines
from dlss_dist.evaluation import metrics as metrics_lib

NEVER = sys.maxsize


class PeriodicAction:
    """Something done every `every` steps (0: only at the final step)."""

    name = "action"

    def __init__(self, every: int):
        self.every = every

    def next_due(self, step: int) -> int:
        """The first step after `step` at which this action wants the chunk to end."""
        return (step // self.every + 1) * self.every if self.every else NEVER

    def is_due(self, step: int, *, final: bool) -> bool:
        return final or bool(self.every and step % self.every == 0)

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError


class SaveCheckpoint(PeriodicAction):
    """Saves a checkpoint every `every` steps, at the end, and before a stop (all workers)."""

    name = "checkpoint"

    def __init__(self, store: checkpoints.CheckpointStore, every: int, *, saved_at: int | None):
        super().__init__(every)
        self.store = store
        self.saved_at = saved_at

    def __call__(self, step: int, metrics: dict[str, float] | None = None) -> None:
        if self.saved_at != step:
            self.store.save()
            self.saved_at = step


class WriteSummaries(PeriodicAction):
    """TensorBoard scalars every `every` steps (the console's progress lines, with the same
    metrics, come from `dlss_dist.progress`)."""

    name = "summaries"

    def __init__(self, writer, every: int):
        super().__init__(every)
        self.writer = writer

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        with self.writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(name, value)


def inference_copy(model: keras.Model) -> keras.Model:
    """A float32 generator outside any strategy with `model`'s current weights.

    Exports and validation use it, so SavedModels hold plain variables whatever strategy
    or precision policy trained them.
    """
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = models.build_generator()
    finally:
        keras.mixed_precision.set_global_policy(policy)
    copy.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    return copy


def upscale_numpy(generator: keras.Model, lr: np.ndarray) -> np.ndarray:
    """Runs a generator on one uint8 HxWx3 image and returns uint8."""
    sr = generator(pipeline.to_float(tf.constant(lr[None])), training=False)
    return pipeline.to_uint8(tf.cast(sr, tf.float32))[0].numpy()


def sample_grid(generator: keras.Model, examples, scale: int) -> np.ndarray:
    """One labelled row per example: LR (nearest) | bicubic | SR | HR, like the seeds' samples."""
    return pictures.stack_rows(
        [
            pictures.super_resolution_grid(
                nearest=imaging.upscale_nearest(lr, scale),
                bicubic=baselines.bicubic(lr, scale),
                sr=upscale_numpy(generator, lr),
                hr=hr,
            )
            for lr, hr in examples
        ]
    )


def validation_psnr(generator: keras.Model, examples, scale: int) -> float:
    """Mean RGB PSNR (dB, border crop = scale) of the generator's uint8 output."""
    values = [
        metrics_lib.psnr(hr, upscale_numpy(generator, lr), border=scale) for lr, hr in examples
    ]
    return float(np.mean(values)) if values else float("nan")


def weights_fingerprint(model: keras.Model) -> str:
    """A short hash of a model's weights, for comparing workers' copies in logs."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


class WriteSamples(PeriodicAction):
    """A PNG grid of `num_samples` validation examples every `every` steps (chief only)."""

    name = "samples"

    def __init__(self, every, *, trainer, examples, scale, paths, writer, chief: bool):
        super().__init__(every)
        self.trainer = trainer
        self.examples = examples
        self.scale = scale
        self.paths = paths
        self.writer = writer
        self.chief = chief

    def __call__(self, step: int, metrics=None) -> None:
        if not (self.chief and self.examples):
            return
        generator = inference_copy(self.trainer.ema_generator or self.trainer.generator)
        grid = sample_grid(generator, self.examples, self.scale)
        path = self.paths.sample(step)
        files.atomic_write(path, imaging.encode_png(grid))
        with self.writer.as_default(step=step):
            tf.summary.image("lr_nearest|bicubic|sr|hr", grid[None], max_outputs=1)


class ValidateAndExport(PeriodicAction):
    """Validation PSNR every `every` steps, exporting the generator if it is among the best
    (chief only). The EMA generator is the one validated and exported when there is one."""

    name = "export"

    def __init__(self, every, *, trainer, examples, scale, exporter, writer, chief: bool):
        super().__init__(every)
        self.trainer = trainer
        self.examples = examples
        self.scale = scale
        self.exporter = exporter
        self.writer = writer
        self.chief = chief

    def __call__(self, step: int, metrics=None) -> None:
        if not self.chief:
            return
        generator = inference_copy(self.trainer.ema_generator or self.trainer.generator)
        psnr = validation_psnr(generator, self.examples, self.scale)
        with self.writer.as_default(step=step):
            tf.summary.scalar("validation/psnr", psnr)
        exported = self.exporter.maybe_export(generator, step=step, psnr=psnr)
        logging.info(
            "Step %d: validation PSNR %.3f dB%s.",
            step,
            psnr,
            f", exported {exported}" if exported else "",
        )


class StopSignals:
    """Records SIGTERM and SIGINT instead of dying, so the loop can checkpoint first.

    The first signal is logged in one line and recorded in `received` (its number); a second
    one exits the process at once with 128 + its number, saving nothing.

    Python runs signal handlers only when the main thread is between bytecodes, which it is
    not during a long compiled chunk. So the handlers themselves do nothing, and the work is
    done by a watcher thread reading `signal.set_wakeup_fd`'s pipe, which the interpreter's
    C-level handler writes to the moment a signal arrives: "at once" really is at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = 0
        self._previous = {}
        self._previous_wakeup = None
        self._pipe = None
        self._watcher = None

    def __enter__(self):
        # Python only lets the main thread install signal handlers (tests may use others).
        if threading.current_thread() is not threading.main_thread():
            return self
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._pipe = (read_end, write_end)
        self._watcher = threading.Thread(target=self._watch, name="stop-signals", daemon=True)
        self._watcher.start()
        self._previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._ignore)
        return self

    @staticmethod
    def _ignore(signum, frame):
        del signum, frame  # The watcher thread has seen it already.

    def _watch(self):
        read_end = self._pipe[0]
        while True:
            data = os.read(read_end, 64)
            for signum in data:
                if signum == 0:  # __exit__'s sentinel
                    return
                if signum in self.SIGNALS:
                    self._record(signum)

    def _record(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.received:
            os.write(2, f"{name} again: exiting now without a checkpoint.\n".encode())
            os._exit(128 + signum)
        self.received = signum
        logging.warning(
            "%s received: finishing the current steps and saving a checkpoint "
            "(%s again to exit at once).",
            name,
            "Ctrl-C" if signum == signal.SIGINT else name,
        )

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            os.write(self._pipe[1], b"\0")
            self._watcher.join()
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None


class PreemptionVote:
    """After every chunk: should all workers stop? One tiny all-reduce in multi-worker runs,
    so every worker stops at the same step even when a signal reached only some of them.

    Returns (signal number or 0, whether the run lock was lost), over all workers.
    """

    def __init__(self, strategy, signals: StopSignals, lock=None):
        self.signals = signals
        self.lock = lock
        self._multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

        @tf.function
        def any_worker(flags):
            # ReduceOp has only SUM and MEAN: sum one 0/1 flag per kind of stop.
            return strategy.reduce(
                tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(flags)), axis=None
            )

        self._any_worker = any_worker

    def __call__(self) -> tuple[int, bool]:
        received = self.signals.received
        lost = bool(self.lock is not None and self.lock.lost)
        if not self._multi_worker:
            return received, lost
        local = [float(received == signal.SIGINT), float(received == signal.SIGTERM), float(lost)]
        sigint, sigterm, lost = (v > 0 for v in self._any_worker(tf.constant(local)).numpy())
        signum = signal.SIGINT if sigint else signal.SIGTERM if sigterm else 0
        return int(signum), bool(lost)


@contextlib.contextmanager
def process_state(*, seed: int, deterministic: bool, mixed_precision: bool):
    """Sets the process-global state a run needs, and restores what can be restored.

    Seeds Python, NumPy and TF (`keras.utils.set_random_seed`), sets the Keras precision
    policy (restored afterwards) and, if asked, TF op determinism. TF has no public way to
    turn op determinism off again, so it stays on for the rest of the process.
    """
    policy = keras.mixed_precision.global_policy()
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)
