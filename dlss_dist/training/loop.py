"""The outer training loop: iteration, checkpoints, resume, summaries, samples, export.

The per-replica math lives in trainer.py; this module decides when things happen. Every
process of a multi-worker run executes the same sequence of collective calls (train chunks,
checkpoint saves, the preemption vote), while only the chief writes summaries, samples, the
operative config and exports.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import sys
import threading
import time

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dlss_dist import distribute, imaging, models
from dlss_dist.data import pipeline
from dlss_dist.evaluation import metrics as metrics_lib
from dlss_dist.evaluation import report
from dlss_dist.training import trainer as trainer_lib

OPERATIVE_CONFIG = "operative_config.gin"
CHECKPOINT_DIR = "checkpoints"
SUMMARY_DIR = "summaries"
SAMPLE_DIR = "samples"
EXPORT_DIR = "export"
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: a restartPolicy=OnFailure pod is restarted.


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or Inf; the last saved checkpoint is still good."""


class Preempted(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM arrived; a checkpoint was written at `step` before stopping."""

    def __init__(self, step: int):
        super().__init__(f"Stopped by SIGTERM after saving a checkpoint at step {step}.")
        self.step = step


class _SigtermFlag:
    """Records SIGTERM instead of dying, so the loop can checkpoint first."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        # Python only lets the main thread install signal handlers (tests may use others).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint after the current steps.")
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _inference_copy(model: keras.Model) -> keras.Model:
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
    rows = [
        report.super_resolution_grid(
            nearest=imaging.upscale_nearest(lr, scale),
            bicubic=imaging.upscale_bicubic(lr, scale),
            sr=upscale_numpy(generator, lr),
            hr=hr,
        )
        for lr, hr in examples
    ]
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    return np.concatenate(rows, axis=0)


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


def _interval_end(step: int, every: int) -> int:
    """The next multiple of `every` after `step` (infinity when `every` is 0)."""
    return (step // every + 1) * every if every else sys.maxsize


def _make_train_fn(
    strategy, replica_step, *, jit_compile: bool, step_counter: tf.Variable, time_input: bool
):
    """Compiles `num_steps` replica steps per call, with optional in-graph data-wait timing.

    `time_input` must be False under op determinism, which forbids tf.timestamp.
    """
    step_fn = tf.function(replica_step, jit_compile=True) if jit_compile else replica_step

    @tf.function
    def train_steps(iterator, num_steps):
        totals = {name: tf.constant(0.0) for name in trainer_lib.METRICS}
        data_wait = tf.constant(0.0, tf.float64)
        for _ in tf.range(num_steps):
            if time_input:
                start = tf.timestamp()
                with tf.control_dependencies([start]):
                    lr, hr = next(iterator)
                with tf.control_dependencies(strategy.experimental_local_results(hr)):
                    data_wait += tf.timestamp() - start
            else:
                lr, hr = next(iterator)
            per_replica = strategy.run(step_fn, args=(lr, hr))
            # Reassign (not mutate) so AutoGraph carries the dict through the loop.
            totals = {
                name: total
                + strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[name], axis=None)
                for name, total in totals.items()
            }
        step_counter.assign_add(tf.cast(num_steps, tf.int64))
        steps = tf.cast(num_steps, tf.float32)
        return {name: value / steps for name, value in totals.items()}, data_wait

    return train_steps


def _build_training_state(
    strategy: tf.distribute.Strategy,
    *,
    global_batch_size: int,
    ema_decay: float | None,
    mixed_precision: bool,
) -> tuple[trainer_lib.Trainer, tf.Variable, tf.train.Checkpoint]:
    """Creates everything stateful inside the strategy's scope: the networks (and the EMA
    copy), built optimizers, the step counter, and the checkpoint that tracks them."""
    with strategy.scope():
        generator = models.build_generator()
        discriminator = models.build_discriminator()
        ema_generator = None
        if ema_decay is not None:
            ema_generator = models.build_generator()
            ema_generator.set_weights(generator.get_weights())
        with gin.config_scope("generator"):
            generator_optimizer = trainer_lib.build_optimizer(
                generator, trainer_lib.make_optimizer(), mixed_precision=mixed_precision
            )
        with gin.config_scope("discriminator"):
            discriminator_optimizer = trainer_lib.build_optimizer(
                discriminator, trainer_lib.make_optimizer(), mixed_precision=mixed_precision
            )
        step = tf.Variable(
            0,
            dtype=tf.int64,
            trainable=False,
            name="global_step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        trainer = trainer_lib.Trainer(
            generator=generator,
            discriminator=discriminator,
            generator_optimizer=generator_optimizer,
            discriminator_optimizer=discriminator_optimizer,
            global_batch_size=global_batch_size,
            ema_generator=ema_generator,
            ema_decay=ema_decay,
            mixed_precision=mixed_precision,
        )
        tracked = dict(
            step=step,
            generator=generator,
            discriminator=discriminator,
            generator_optimizer=generator_optimizer,
            discriminator_optimizer=discriminator_optimizer,
        )
        if ema_generator is not None:
            tracked["ema_generator"] = ema_generator
        checkpoint = tf.train.Checkpoint(**tracked)
    return trainer, step, checkpoint


class _Checkpoints:
    """Restores the newest checkpoint of `model_dir` and saves new ones at the current step.

    Non-chief workers must take part in every save (it may involve collectives), but write
    to a private directory that is removed right afterwards.
    """

    def __init__(self, checkpoint, step, *, model_dir: str, chief: bool, worker: int, keep: int):
        self._checkpoint = checkpoint
        self._step = step
        self._chief = chief
        self._directory = os.path.join(model_dir, CHECKPOINT_DIR)
        self._save_dir = (
            self._directory if chief else os.path.join(model_dir, "tmp", f"worker-{worker}")
        )
        self._manager = tf.train.CheckpointManager(
            checkpoint, self._save_dir, max_to_keep=keep, step_counter=step
        )

    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(self._directory)

    def restore_latest(self) -> str | None:
        """Restores the newest checkpoint, if any; returns its path."""
        latest = self.latest()
        if latest:
            self._checkpoint.restore(latest).assert_existing_objects_matched()
            logging.info("Resumed from %s at step %d.", latest, int(self._step.numpy()))
        return latest

    def save(self) -> None:
        path = self._manager.save(checkpoint_number=int(self._step.numpy()))
        if self._chief:
            logging.info("Saved checkpoint %s.", path)
        else:
            tf.io.gfile.rmtree(self._save_dir)


@gin.configurable(denylist=["strategy", "model_dir", "data_dir"])
def train_loop(
    *,
    strategy: tf.distribute.Strategy,
    model_dir: str,
    data_dir: str,
    total_steps: int = gin.REQUIRED,
    global_batch_size: int = gin.REQUIRED,
    scale: int = gin.REQUIRED,
    steps_per_loop: int = 10,
    warmup_steps: int = 0,
    checkpoint_every_steps: int = 1000,
    keep_checkpoints: int = 3,
    summary_every_steps: int = 100,
    sample_every_steps: int = 1000,
    num_samples: int = 4,
    export_every_steps: int = 0,
    keep_exports: int = 3,
    validation_split: str = "validation",
    validation_examples: int = 32,
    ema_decay: float | None = 0.999,
    mixed_precision: bool = False,
    jit_compile: bool = False,
    seed: int = 0,
    deterministic: bool = False,
    max_input_pixels: int = 4_000_000,
) -> dict[str, float]:
    """Trains the GAN in `model_dir` from `data_dir`, resuming from its newest checkpoint.

    Args:
      strategy: from `distribute.create_strategy()`.
      model_dir: where checkpoints, summaries, samples and exports go (local or gs://).
      data_dir: a dataset written by `dlss-preprocess`.
      total_steps: train until the global step reaches this.
      global_batch_size: examples per step over all replicas (seed 1's `batch`).
      scale: super-resolution factor.
      steps_per_loop: steps per compiled call (fewer Python round trips).
      warmup_steps: pixel-loss-only steps before the adversarial phase.
      checkpoint_every_steps: checkpoint interval (also saved at the end and on SIGTERM).
      keep_checkpoints: how many checkpoints to keep.
      summary_every_steps: TensorBoard scalars and log-line interval.
      sample_every_steps: PNG sample grid interval (seed 1's `interval`); 0 disables.
      num_samples: rows in a sample grid.
      export_every_steps: SavedModel export interval (0: only at the end).
      keep_exports: the best exports by validation PSNR kept.
      validation_split: split for samples and validation PSNR (falls back to train).
      validation_examples: whole images used for validation PSNR.
      ema_decay: keep an EMA copy of the generator, which is what gets exported
        (None disables).
      mixed_precision: train under `mixed_float16` with dynamic loss scaling.
      jit_compile: compile the replica step with XLA.
      seed: seeds weight initialisation and data order.
      deterministic: enable TF op determinism (bit-exact resume; slower).
      max_input_pixels: the exported model's input size limit.

    Returns:
      The last chunk's metrics (global means).

    Raises:
      NonFiniteLossError: a loss became NaN or Inf.
      Preempted: SIGTERM was received (after a checkpoint was saved).
    """
    for name, value in (
        ("total_steps", total_steps),
        ("steps_per_loop", steps_per_loop),
        ("checkpoint_every_steps", checkpoint_every_steps),
        ("summary_every_steps", summary_every_steps),
    ):
        if value < 1:
            raise ValueError(f"train_loop.{name} must be >= 1, got {value}.")
    if global_batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"GLOBAL_BATCH_SIZE={global_batch_size} is not divisible by the "
            f"{strategy.num_replicas_in_sync} replicas in sync."
        )
    imaging.check_scale(scale)
    chief = distribute.is_chief(strategy)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    trainer, step, checkpoint = _build_training_state(
        strategy,
        global_batch_size=global_batch_size,
        ema_decay=ema_decay,
        mixed_precision=mixed_precision,
    )
    checkpoints = _Checkpoints(
        checkpoint,
        step,
        model_dir=model_dir,
        chief=chief,
        worker=distribute.worker_id(strategy),
        keep=keep_checkpoints,
    )
    resumed = checkpoints.restore_latest()
    start_step = int(step.numpy())
    input_fn = pipeline.make_input_fn(data_dir, start_step=start_step)
    iterator = iter(strategy.distribute_datasets_from_function(input_fn))
    train_functions = {
        phase: _make_train_fn(
            strategy,
            fn,
            jit_compile=jit_compile,
            step_counter=step,
            time_input=not deterministic,
        )
        for phase, fn in (("pixel", trainer.pixel_step), ("gan", trainer.gan_step))
    }

    samples = pipeline.load_examples(data_dir, validation_split, validation_examples)
    if not samples:
        logging.warning("No %r split: samples and validation use train.", validation_split)
        samples = pipeline.load_examples(data_dir, "train", validation_examples)
    writer = (
        tf.summary.create_file_writer(os.path.join(model_dir, SUMMARY_DIR))
        if chief
        else tf.summary.create_noop_writer()
    )
    exporter = None
    if chief:
        tf.io.gfile.makedirs(model_dir)
        with tf.io.gfile.GFile(os.path.join(model_dir, OPERATIVE_CONFIG), "w") as f:
            f.write(gin.operative_config_str())
        from dlss_dist.export import BestExporter

        exporter = BestExporter(
            export_root=os.path.join(model_dir, EXPORT_DIR),
            scale=scale,
            keep=keep_exports,
            max_input_pixels=max_input_pixels,
        )

    def export_and_sample(current_step: int, *, sample: bool, export: bool) -> None:
        inference = _inference_copy(trainer.ema_generator or trainer.generator)
        if sample and samples:
            grid = sample_grid(inference, samples[:num_samples], scale)
            path = os.path.join(model_dir, SAMPLE_DIR, f"step_{current_step:07d}.png")
            tf.io.gfile.makedirs(os.path.dirname(path))
            with tf.io.gfile.GFile(path, "wb") as f:
                f.write(imaging.encode_png(grid))
            with writer.as_default(step=current_step):
                tf.summary.image("lr_nearest|bicubic|sr|hr", grid[None], max_outputs=1)
        if export:
            psnr = validation_psnr(inference, samples, scale)
            with writer.as_default(step=current_step):
                tf.summary.scalar("validation/psnr", psnr)
            exported = exporter.maybe_export(inference, step=current_step, psnr=psnr)
            logging.info(
                "Step %d: validation PSNR %.3f dB%s.",
                current_step,
                psnr,
                f", exported {exported}" if exported else "",
            )

    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    @tf.function
    def any_worker(flag):
        # One tiny all-reduce per chunk, so every worker stops at the same step even
        # when SIGTERM reached only some of them.
        return strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(flag)), axis=None
        )

    progress = (
        keras.utils.Progbar(total_steps, stateful_metrics=trainer_lib.METRICS)
        if chief and sys.stderr.isatty()
        else None
    )
    metrics: dict[str, float] = {}
    current = start_step
    last_saved = start_step if resumed else -1
    with _SigtermFlag() as sigterm:
        while current < total_steps:
            chunk_end = min(
                current + steps_per_loop,
                total_steps,
                _interval_end(current, checkpoint_every_steps),
                _interval_end(current, summary_every_steps),
                _interval_end(current, sample_every_steps),
                _interval_end(current, export_every_steps),
                warmup_steps if current < warmup_steps else sys.maxsize,
            )
            phase = "pixel" if current < warmup_steps else "gan"
            started = time.perf_counter()
            values, data_wait = train_functions[phase](iterator, tf.constant(chunk_end - current))
            metrics = {name: float(value) for name, value in values.items()}
            elapsed = time.perf_counter() - started
            done = chunk_end - current
            current = chunk_end
            if not all(math.isfinite(value) for value in metrics.values()):
                bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
                raise NonFiniteLossError(
                    f"Non-finite loss {bad} in steps {current - done + 1}..{current}; "
                    f"training stopped. The last good checkpoint is {checkpoints.latest()}."
                )
            metrics["images_per_second"] = done * global_batch_size / elapsed
            if not deterministic:
                metrics["data_wait_fraction"] = float(data_wait) / elapsed
            if progress is not None:
                progress.update(
                    current, [(k, v) for k, v in metrics.items() if k in trainer_lib.METRICS]
                )
            if current % summary_every_steps == 0 or current == total_steps:
                with writer.as_default(step=current):
                    for name, value in metrics.items():
                        tf.summary.scalar(name, value)
                if progress is None and chief:
                    logging.info(
                        "step %d/%d %s",
                        current,
                        total_steps,
                        " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())),
                    )
            if current % checkpoint_every_steps == 0:
                checkpoints.save()
                last_saved = current
            if chief:
                # The last step always samples and exports, once, after the loop.
                periodic = current < total_steps
                sample = periodic and sample_every_steps and current % sample_every_steps == 0
                export = periodic and export_every_steps and current % export_every_steps == 0
                if sample or export:
                    export_and_sample(current, sample=bool(sample), export=bool(export))
            stop = sigterm.received
            if multi_worker:
                stop = bool(any_worker(tf.constant(float(stop))) > 0)
            if stop and current < total_steps:
                if last_saved != current:
                    checkpoints.save()
                writer.flush()
                raise Preempted(current)
    if last_saved != current:
        checkpoints.save()
    # Every worker logs this; equal values prove the replicas stayed in sync.
    logging.info("Final generator weights fingerprint: %s", weights_fingerprint(trainer.generator))
    # Also on a restart after the final checkpoint, if the pod died during the export.
    if chief and (start_step < total_steps or not exporter.exports):
        export_and_sample(current, sample=True, export=True)
    writer.flush()
    return metrics
