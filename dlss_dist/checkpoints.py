"""The training checkpoint and the generator in it: one floor above `models/` and `export.py`.

`make_checkpoint` names the objects a checkpoint tracks (the names are the model-directory
contract's, `dlss_dist.model_dir`); `CheckpointStore` saves and resumes them during training;
`load_generator` and `build_generator_from_config` rebuild a generator from a model
directory's ``operative_config.gin`` and its checkpoint for export, evaluation and upscaling.
Training and serving both sit above this module.
"""

from __future__ import annotations

import gin
import keras
import tensorflow as tf
from absl import logging

from dlss_dist import config as config_lib
from dlss_dist import export, models
from dlss_dist.model_dir import (
    EMA_GENERATOR,
    GENERATOR,
    STEP,
    ArchitectureMismatchError,
    ModelDir,
    resolve_checkpoint,
)


def make_checkpoint(
    *, step: tf.Variable, generator, ema_generator=None, **others
) -> tf.train.Checkpoint:
    """The training checkpoint, with the object names `load_generator` reads back."""
    tracked = {STEP: step, GENERATOR: generator, **others}
    if ema_generator is not None:
        tracked[EMA_GENERATOR] = ema_generator
    return tf.train.Checkpoint(**tracked)


def _restore_matching(status, path: str) -> None:
    """Asserts a restore matched the built networks, with a message a person can act on."""
    try:
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise ArchitectureMismatchError(
            f"{path} holds a different architecture than the current config builds "
            f"(first difference: {str(error).splitlines()[0][:300]}). Train it with the "
            "config it was made with (its operative_config.gin), or use a new --model_dir."
        ) from None


class CheckpointStore:
    """Restores the newest checkpoint of a model directory and saves new ones at a step.

    Non-chief workers take part in every save (it may involve collectives) but write to a
    private directory that is removed right afterwards.
    """

    def __init__(
        self,
        checkpoint: tf.train.Checkpoint,
        step: tf.Variable,
        *,
        model_dir: str,
        chief: bool,
        worker: int,
        keep: int,
    ):
        self._checkpoint = checkpoint
        self._step = step
        self._chief = chief
        self._paths = ModelDir(model_dir)
        self._save_dir = self._paths.checkpoints if chief else self._paths.worker_tmp(worker)
        self._manager = tf.train.CheckpointManager(
            checkpoint, self._save_dir, max_to_keep=keep, step_counter=step
        )

    def latest(self) -> str | None:
        return self._paths.latest_checkpoint()

    def restore_latest(self) -> str | None:
        """Restores the newest checkpoint, if any; returns its path.

        Raises ArchitectureMismatchError when the checkpoint's networks differ from the ones
        built (a changed config on an existing model directory).
        """
        latest = self.latest()
        if latest:
            try:
                status = self._checkpoint.restore(latest)
            except (ValueError, tf.errors.InvalidArgumentError) as error:
                raise ArchitectureMismatchError(
                    f"{latest} holds a different architecture than the current config builds "
                    f"({str(error).splitlines()[0][:300]}). Train it with the config it was "
                    "made with (its operative_config.gin), or use a new --model_dir."
                ) from None
            _restore_matching(status, latest)
            logging.info("Resumed from %s at step %d.", latest, int(self._step.numpy()))
        return latest

    def save(self) -> str:
        path = self._manager.save(checkpoint_number=int(self._step.numpy()))
        if self._chief:
            logging.info("Saved checkpoint %s.", path)
        else:
            tf.io.gfile.rmtree(self._save_dir)
        return path


def build_generator_from_config(config: str) -> keras.Model:
    """Builds the (untrained) generator an ``operative_config.gin`` describes.

    The process's gin config is replaced by that file's bindings.
    """
    gin.clear_config()
    with tf.io.gfile.GFile(config) as f, gin.unlock_config():
        # Written by gin itself, so no binding is a typo; skipping unknowns lets a model dir
        # from an older version (e.g. with a binding since removed) still be exported.
        # One written by an older version has its moved bindings renamed.
        gin.parse_config(config_lib.upgrade_operative_config(f.read()), skip_unknown=True)
    return models.build_generator()


def load_generator(model_dir: str, checkpoint: str | None = None) -> tuple[keras.Model, int]:
    """Builds the generator from ``<model_dir>/operative_config.gin`` and restores its weights.

    The operative config carries the gin files' own `import` lines, so parsing it registers
    every configurable it binds; no second registry is needed.

    Args:
      model_dir: a training model directory.
      checkpoint: a checkpoint prefix or directory; default: the newest in
        ``<model_dir>/checkpoints``.

    Returns:
      (generator, scale). The EMA weights are restored when the checkpoint has them.
      The process's gin config is replaced by the model dir's operative config.
    """
    config = ModelDir(model_dir).operative_config
    if not tf.io.gfile.exists(config):
        raise FileNotFoundError(f"{config} not found: is {model_dir} a training model_dir?")
    path = resolve_checkpoint(model_dir, checkpoint)
    generator = build_generator_from_config(config)
    restore_generator_weights(generator, path)
    return generator, export.infer_scale(generator)


def restore_generator_weights(generator: keras.Model, checkpoint: str) -> str:
    """Reads a checkpoint's generator weights into `generator`: the EMA copy when the
    checkpoint has one (what gets exported), else the raw generator. Returns the attribute
    read ("ema_generator" or "generator").

    Raises ArchitectureMismatchError when the checkpoint holds another architecture.
    """
    names = {name for name, _ in tf.train.list_variables(checkpoint)}
    attribute = (
        EMA_GENERATOR if any(n.startswith(f"{EMA_GENERATOR}/") for n in names) else GENERATOR
    )
    try:
        status = tf.train.Checkpoint(**{attribute: generator}).read(checkpoint).expect_partial()
    except (ValueError, tf.errors.InvalidArgumentError) as error:
        raise ArchitectureMismatchError(
            f"{checkpoint} holds a different generator than the current config builds "
            f"({str(error).splitlines()[0][:300]})."
        ) from None
    _restore_matching(status, checkpoint)
    logging.info("Restored %s weights from %s", attribute, checkpoint)
    return attribute
