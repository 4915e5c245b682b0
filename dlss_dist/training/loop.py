"""`train_loop`, the one gin-configurable training entry: it checks settings and composes.

What it composes, each in its own module:
- `trainer.Trainer`: the per-replica GAN math and the inner loop, `train(iterator, n)`;
- `controller.Controller`: the outer loop, chunks ending where an action is next due;
- `actions`: checkpoints, summaries, samples, validation + best export, the stop signals
  and preemption vote, and the process-global state (seeds, precision, determinism);
- `model_dir`: every name inside the model directory, checkpoints and exports;
- `dlss_dist.run_lock`: one live training run per model directory (taken by the chief).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import gin
import tensorflow as tf
from absl import logging

from dlss_dist import checkpoints, distribute, export, models, run_lock
from dlss_dist import model_dir as model_dir_lib
from dlss_dist import progress as progress_lib
from dlss_dist.data import pipeline, schema
from dlss_dist.training import actions as actions_lib
from dlss_dist.training import controller as controller_lib
from dlss_dist.training import exporter as exporter_lib
from dlss_dist.training import trainer as trainer_lib

# Re-exported for callers that catch them around train_loop (the CLI, the demo).
NonFiniteLossError = controller_lib.NonFiniteLossError
Preempted = controller_lib.Preempted
RunLockLostError = controller_lib.RunLockLostError
ArchitectureMismatchError = model_dir_lib.ArchitectureMismatchError
LockHeldError = run_lock.LockHeldError

TOOL = "dlss-train"


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"train_loop.{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"train_loop.{name} must be >= {minimum}, got {value}.")


def check_settings(settings: dict, *, num_replicas: int) -> None:
    """Raises ValueError naming the gin binding of the first bad `train_loop` setting.

    Runs before anything is built or written, so a bad setting costs nothing.
    """
    minimums = {
        "total_steps": 1,
        "global_batch_size": 1,
        "steps_per_loop": 1,
        "warmup_steps": 0,
        "checkpoint_every_steps": 1,
        "keep_checkpoints": 1,
        "summary_every_steps": 1,
        "sample_every_steps": 0,
        "num_samples": 0,
        "export_every_steps": 0,
        "keep_exports": 1,
        "validation_examples": 1,
        "seed": 0,
        "max_input_pixels": 1,
    }
    for name, minimum in minimums.items():
        _check_int(name, settings[name], minimum)
    ema_decay = settings["ema_decay"]
    if ema_decay is not None and (
        isinstance(ema_decay, bool)
        or not isinstance(ema_decay, int | float)
        or not 0.0 < ema_decay < 1.0
    ):
        raise ValueError(
            f"train_loop.ema_decay must be a number in (0, 1), or None for no EMA generator; "
            f"got {ema_decay!r}."
        )
    if settings["global_batch_size"] % num_replicas:
        raise ValueError(
            f"train_loop.global_batch_size (GLOBAL_BATCH_SIZE) = {settings['global_batch_size']} "
            f"is not divisible by the {num_replicas} replicas in sync."
        )
    if not isinstance(settings["validation_split"], str):
        raise ValueError(
            f"train_loop.validation_split must be a split name, got "
            f"{settings['validation_split']!r}."
        )


def check_model_dir(model_dir: str, *, total_steps: int) -> None:
    """Refuses a model directory this run cannot continue, before anything is written.

    Raises:
      ValueError: `model_dir` is a file, or its newest checkpoint is past `total_steps`.
    """
    if tf.io.gfile.exists(model_dir) and not tf.io.gfile.isdir(model_dir):
        raise ValueError(f"--model_dir={model_dir} is a file, not a folder.")
    latest = model_dir_lib.ModelDir(model_dir).latest_checkpoint()
    step = model_dir_lib.checkpoint_step(latest) if latest else None
    if step is not None and step > total_steps:
        raise ValueError(
            f"train_loop.total_steps = {total_steps} is below the newest checkpoint's step "
            f"{step} ({latest}). Raise train_loop.total_steps to continue training, export "
            "that checkpoint with dlss-export, or use another --model_dir."
        )


def training_facts(
    manifest: dict, *, scale: int, max_input_pixels: int, online_degradation
) -> model_dir_lib.TrainingFacts:
    """The facts this run decides once (see `model_dir.TrainingFacts`), recorded for export
    and evaluation."""
    if online_degradation is None:
        return model_dir_lib.TrainingFacts(
            scale=scale, max_input_pixels=max_input_pixels, degradation=manifest.get("degradation")
        )
    spec = (
        dataclasses.asdict(online_degradation)
        if dataclasses.is_dataclass(online_degradation)
        else {"repr": repr(online_degradation)}
    )
    return model_dir_lib.TrainingFacts(
        scale=scale,
        max_input_pixels=max_input_pixels,
        degradation=f"online:{type(online_degradation).__name__}",
        degradation_spec=spec,
    )


def resolve_init_checkpoint(source: str) -> str:
    """The checkpoint `--init_generator_from` names: a training model directory's newest, a
    checkpoint directory's newest, or a checkpoint prefix. Raises ValueError if none."""
    is_model_dir = tf.io.gfile.isdir(model_dir_lib.ModelDir(source).checkpoints)
    try:
        return model_dir_lib.resolve_checkpoint(source, None if is_model_dir else source)
    except FileNotFoundError as error:
        raise ValueError(
            f"--init_generator_from={source}: {error}. Give a training model directory "
            "(one with checkpoints/) or a checkpoint prefix."
        ) from None


def _init_generator(trainer: trainer_lib.Trainer, checkpoint: str) -> None:
    """Starts the generator (and its EMA copy) from another run's generator weights."""
    for generator in (trainer.generator, trainer.ema_generator):
        if generator is not None:
            checkpoints.restore_generator_weights(generator, checkpoint)
    logging.info("Generator initialised from %s.", checkpoint)


def build_trainer(
    strategy: tf.distribute.Strategy,
    *,
    global_batch_size: int,
    ema_decay: float | None,
    mixed_precision: bool,
    warmup_steps: int,
    jit_compile: bool,
    time_input: bool,
) -> tuple[trainer_lib.Trainer, tf.train.Checkpoint]:
    """Creates everything stateful inside the strategy's scope: the networks (and the EMA
    copy), built optimizers, the trainer with its step counter, and the checkpoint. The
    networks, losses and optimizers come from gin (`bench/train_step.py` builds its trainer
    here too, so it times what training runs)."""
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
        trainer = trainer_lib.Trainer(
            generator=generator,
            discriminator=discriminator,
            generator_optimizer=generator_optimizer,
            discriminator_optimizer=discriminator_optimizer,
            global_batch_size=global_batch_size,
            ema_generator=ema_generator,
            ema_decay=ema_decay,
            mixed_precision=mixed_precision,
            warmup_steps=warmup_steps,
            jit_compile=jit_compile,
            time_input=time_input,
        )
        checkpoint = checkpoints.make_checkpoint(
            step=trainer.global_step,
            generator=generator,
            ema_generator=ema_generator,
            discriminator=discriminator,
            generator_optimizer=generator_optimizer,
            discriminator_optimizer=discriminator_optimizer,
        )
    return trainer, checkpoint


@gin.configurable(denylist=["strategy", "model_dir", "data_dir", "init_generator_from"])
def train_loop(
    *,
    strategy: tf.distribute.Strategy,
    model_dir: str,
    data_dir: str,
    total_steps: int = gin.REQUIRED,
    global_batch_size: int = gin.REQUIRED,
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
    max_input_pixels: int = export.DEFAULT_MAX_INPUT_PIXELS,
    online_degradation: Callable | None = None,
    init_generator_from: str | None = None,
) -> dict[str, float]:
    """Trains the GAN in `model_dir` from `data_dir`, resuming from its newest checkpoint.

    Args:
      strategy: from `distribute.create_strategy()`.
      model_dir: where checkpoints, summaries, samples and exports go (local or gs://);
        layout in `model_dir.py`.
      data_dir: a dataset written by `dlss-preprocess`.
      total_steps: train until the global step reaches this.
      global_batch_size: examples per step over all replicas (seed 1's `batch`).
      steps_per_loop: steps per compiled call (fewer Python round trips).
      warmup_steps: pixel-loss-only steps before the adversarial phase.
      checkpoint_every_steps: checkpoint interval (also saved at the end and on a signal).
      keep_checkpoints: how many checkpoints to keep.
      summary_every_steps: TensorBoard scalars and log-line interval.
      sample_every_steps: PNG sample grid interval (seed 1's `interval`); 0: only at the end.
      num_samples: rows in a sample grid (0: no sample grids).
      export_every_steps: validation + best-export interval (0: only at the end).
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
      online_degradation: makes each training LR from its HR crop in the input pipeline,
        ``f(hr_uint8, seed) -> lr_uint8`` (e.g. ``@RealWorldDegradation()``), and the
        validation LR the same way; None trains on the dataset's stored LR.
      init_generator_from: a training model directory (or checkpoint) whose generator
        starts this run: fine-tuning, e.g. a GAN phase from a PSNR-trained model. Read once,
        when `model_dir` has no checkpoint yet; a resumed run continues from its own.

    The scale (the generator's own, `export.infer_scale`), the global batch size and the online
    degradation are decided here, once, and passed down as values to the input pipeline,
    validation, samples and exports; the chief records them, with `max_input_pixels`, in the
    model directory's ``training_facts.json``, which `dlss-export` and evaluation read.

    Returns:
      The last chunk's metrics (global means); empty when the model directory was already
      trained to `total_steps`.

    Raises:
      ValueError: a bad setting (naming its binding), a model directory this run cannot
        continue, or a dataset that does not fit the config.
      ArchitectureMismatchError: the model directory holds another architecture.
      LockHeldError: another live run trains in this model directory.
      NonFiniteLossError: a loss became NaN or Inf.
      Preempted: SIGTERM or SIGINT was received (after a checkpoint was saved).
      RunLockLostError: another run took over the model directory.
    """
    check_settings(dict(locals()), num_replicas=strategy.num_replicas_in_sync)
    check_model_dir(model_dir, total_steps=total_steps)
    init_checkpoint = resolve_init_checkpoint(init_generator_from) if init_generator_from else None
    manifest = schema.read_manifest(data_dir)
    chief = distribute.is_chief(strategy)
    paths = model_dir_lib.ModelDir(model_dir)

    with contextlib.ExitStack() as stack:
        # Only the chief writes the directory's shared files, so only it holds the lock.
        lock = stack.enter_context(run_lock.RunLock(model_dir, TOOL)) if chief else None
        stack.enter_context(
            actions_lib.process_state(
                seed=seed, deterministic=deterministic, mixed_precision=mixed_precision
            )
        )
        trainer, checkpoint = build_trainer(
            strategy,
            global_batch_size=global_batch_size,
            ema_decay=ema_decay,
            mixed_precision=mixed_precision,
            warmup_steps=warmup_steps,
            jit_compile=jit_compile,
            time_input=not deterministic,
        )
        scale = export.infer_scale(trainer.generator)
        pipeline.check_compatible(
            manifest, scale=scale, degradation=None, online_degradation=online_degradation
        )
        skip_damaged = pipeline.skip_damaged_records()
        store = checkpoints.CheckpointStore(
            checkpoint,
            trainer.global_step,
            model_dir=model_dir,
            chief=chief,
            worker=distribute.worker_id(strategy),
            keep=keep_checkpoints,
        )
        resumed = store.restore_latest()
        if init_checkpoint and not resumed:
            _init_generator(trainer, init_checkpoint)
        start_step = int(trainer.global_step.numpy())
        input_fn = pipeline.make_input_fn(
            data_dir,
            scale=scale,
            global_batch_size=global_batch_size,
            online_degradation=online_degradation,
            skip_damaged=skip_damaged,
            start_step=start_step,
        )
        iterator = iter(strategy.distribute_datasets_from_function(input_fn))

        def load(split):
            return pipeline.load_examples(
                data_dir, split, validation_examples, skip_damaged=skip_damaged
            )

        examples = load(validation_split)
        if not examples:
            logging.warning("No %r split: samples and validation use train.", validation_split)
            examples = load("train")
        if online_degradation is not None:
            examples = pipeline.degrade_examples(examples, online_degradation, scale=scale)
        writer = (
            tf.summary.create_file_writer(paths.summaries)
            if chief
            else tf.summary.create_noop_writer()
        )
        exporter = None
        if chief:
            paths.write_operative_config(gin.operative_config_str())
            paths.write_training_facts(
                training_facts(
                    manifest,
                    scale=scale,
                    max_input_pixels=max_input_pixels,
                    online_degradation=online_degradation,
                )
            )
            exporter = exporter_lib.BestExporter(
                export_root=paths.export_root,
                scale=scale,
                keep=keep_exports,
                max_input_pixels=max_input_pixels,
            )

        save = actions_lib.SaveCheckpoint(
            store, checkpoint_every_steps, saved_at=start_step if resumed else None
        )
        # The chief reports progress: a bar on a terminal; when piped, a line at every
        # summary step with the rate, the time left and the metrics (absl's log).
        progress = stack.enter_context(
            progress_lib.Progress(
                total_steps,
                "training",
                unit="step",
                initial=start_step,
                enabled=chief,
                every=summary_every_steps,
                say=logging.info,
            )
        )
        summaries = actions_lib.WriteSummaries(writer, summary_every_steps)
        samples = actions_lib.WriteSamples(
            sample_every_steps,
            trainer=trainer,
            examples=examples[:num_samples],
            scale=scale,
            paths=paths,
            writer=writer,
            chief=chief,
        )
        validate = actions_lib.ValidateAndExport(
            export_every_steps,
            trainer=trainer,
            examples=examples,
            scale=scale,
            exporter=exporter,
            writer=writer,
            chief=chief,
        )
        signals = stack.enter_context(actions_lib.StopSignals())
        controller = controller_lib.Controller(
            trainer=trainer,
            iterator=iterator,
            total_steps=total_steps,
            steps_per_loop=steps_per_loop,
            actions=[summaries, save, samples, validate],
            checkpoint=save,
            vote=actions_lib.PreemptionVote(strategy, signals, lock),
            global_batch_size=global_batch_size,
            progress=progress,
            last_good_checkpoint=store.latest,
        )
        try:
            if start_step < total_steps:
                # Signal handlers are in place from here (tests wait for this line).
                logging.info("Training from step %d to %d.", start_step, total_steps)
                metrics = controller.run()
            else:
                logging.info(
                    "%s is already trained to train_loop.total_steps = %d.", model_dir, total_steps
                )
                metrics = {}
                # A pod that died during the final export resumes here: export once more.
                if chief and not exporter.exports:
                    samples(start_step)
                    validate(start_step)
        finally:
            writer.flush()
        # Every worker logs this; equal values prove the replicas stayed in sync.
        logging.info(
            "Final generator weights fingerprint: %s",
            actions_lib.weights_fingerprint(trainer.generator),
        )
    return metrics
