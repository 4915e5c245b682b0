"""THE model-directory contract: every name under a training `model_dir`, and its readers.

    <model_dir>/
      run.lock                  the live training run (dlss_dist.run_lock), while it runs
      operative_config.gin      every gin binding the run used, imports first (chief only)
      checkpoints/ckpt-<step>.* tf.train.Checkpoint: step, generator, discriminator, both
                                optimizers, ema_generator; `checkpoint` names the newest
      summaries/events.*        TensorBoard scalars (losses, PSNR, throughput) and samples
      samples/step_<step>.png   LR (nearest) | bicubic | SR | HR rows
      export/<step>/            SavedModels, the `keep_exports` best by validation PSNR
      export/exports.json       their ranking, best first (written by `BestExporter`)
      tmp/worker-<i>/           non-chief workers' throw-away checkpoint copies

Nothing else in the package spells these names: the trainer, export, evaluation, upscaling,
the demo and the tests ask this module. It sits above `models/` and `export.py` (restoring
a generator needs both) and below training, evaluation and upscaling.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import gin
import keras
import tensorflow as tf
from absl import logging

from dlss_dist import export, files, models

OPERATIVE_CONFIG = "operative_config.gin"
CHECKPOINT_DIR = "checkpoints"
SUMMARY_DIR = "summaries"
SAMPLE_DIR = "samples"
EXPORT_DIR = "export"
EXPORTS_FILE = "exports.json"
WORKER_TMP_DIR = "tmp"

# The checkpoint's object names; `load_generator` reads the generator back by them.
STEP = "step"
GENERATOR = "generator"
EMA_GENERATOR = "ema_generator"
_STEP_KEY = f"{STEP}/.ATTRIBUTES/VARIABLE_VALUE"


class ArchitectureMismatchError(ValueError):
    """The model directory's checkpoint was written by a different network architecture."""


@dataclasses.dataclass(frozen=True)
class ModelDir:
    """Paths inside one model directory (local or any `tf.io.gfile` URL)."""

    root: str

    @property
    def operative_config(self) -> str:
        return os.path.join(self.root, OPERATIVE_CONFIG)

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.root, CHECKPOINT_DIR)

    @property
    def summaries(self) -> str:
        return os.path.join(self.root, SUMMARY_DIR)

    @property
    def samples(self) -> str:
        return os.path.join(self.root, SAMPLE_DIR)

    @property
    def export_root(self) -> str:
        return os.path.join(self.root, EXPORT_DIR)

    def sample(self, step: int) -> str:
        return os.path.join(self.samples, f"step_{step:07d}.png")

    def worker_tmp(self, worker: int) -> str:
        return os.path.join(self.root, WORKER_TMP_DIR, f"worker-{worker}")

    def latest_checkpoint(self) -> str | None:
        return tf.train.latest_checkpoint(self.checkpoints)

    def write_operative_config(self, text: str) -> None:
        files.atomic_write(self.operative_config, text)


def make_checkpoint(
    *, step: tf.Variable, generator, ema_generator=None, **others
) -> tf.train.Checkpoint:
    """The training checkpoint, with the object names `load_generator` reads back."""
    tracked = {STEP: step, GENERATOR: generator, **others}
    if ema_generator is not None:
        tracked[EMA_GENERATOR] = ema_generator
    return tf.train.Checkpoint(**tracked)


def checkpoint_step(checkpoint: str) -> int | None:
    """The training step stored in a checkpoint, or None if it has no step variable."""
    names = dict(tf.train.list_variables(checkpoint))
    return int(tf.train.load_variable(checkpoint, _STEP_KEY)) if _STEP_KEY in names else None


def resolve_checkpoint(model_dir: str, checkpoint: str | None = None) -> str:
    """Returns a checkpoint prefix: `checkpoint` itself, the newest in a directory, or the
    newest in ``<model_dir>/checkpoints``. Raises FileNotFoundError naming what was searched."""
    if checkpoint is None:
        checkpoint = ModelDir(model_dir).checkpoints
    if tf.io.gfile.isdir(checkpoint):
        latest = tf.train.latest_checkpoint(checkpoint)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint found in {checkpoint}")
        return latest
    if not tf.io.gfile.exists(checkpoint + ".index"):
        raise FileNotFoundError(f"checkpoint {checkpoint} not found (no {checkpoint}.index)")
    return checkpoint


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


def read_exports(export_root: str) -> list[dict]:
    """The kept exports listed in ``<export_root>/exports.json``, best first.

    Each entry is a dict with step, psnr, path, time. Paths are rebuilt from the step (the
    root may have been moved or mounted elsewhere since, or been written relative to another
    working directory), and entries whose folder is gone are dropped.
    """
    path = os.path.join(export_root, EXPORTS_FILE)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        exports = json.load(f).get("exports", [])
    for entry in exports:
        entry["path"] = os.path.join(export_root, str(entry["step"]))
    return [e for e in exports if tf.io.gfile.exists(e["path"])]


def best_export(export_root: str) -> str | None:
    """The best kept SavedModel under an export root (by exports.json), else the highest
    integer version folder holding a SavedModel, else None."""
    for entry in read_exports(export_root):
        if tf.io.gfile.exists(os.path.join(entry["path"], "saved_model.pb")):
            return entry["path"]
    if not tf.io.gfile.isdir(export_root):
        return None
    versions = [
        int(name)
        for name in files.list_dir(export_root)
        if name.isdigit() and files.exists(os.path.join(export_root, name, "saved_model.pb"))
    ]
    return os.path.join(export_root, str(max(versions))) if versions else None


class BestExporter:
    """Keeps the `keep` best exports (highest validation PSNR) as ``<export_root>/<step>/``.

    Version folders are integers, so TF Serving pointed at `export_root` serves the newest of
    the kept ones. Each export is written to a hidden temporary folder and renamed into
    place, so TF Serving never sees a half-written version. Scores live in
    ``<export_root>/exports.json`` (read back on construction, so a resumed run continues
    the same ranking)::

        {"metric": "psnr", "keep": 3, "scale": 4,
         "exports": [{"step": 2000, "psnr": 27.1, "path": ".../2000", "time": ...}, ...]}

    ``exports`` is sorted best first; readers use `read_exports` / `best_export`. In a
    multi-worker job call it on the chief only.
    """

    def __init__(
        self,
        *,
        export_root: str,
        scale: int,
        keep: int = 3,
        max_input_pixels: int = export.DEFAULT_MAX_INPUT_PIXELS,
    ):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        if max_input_pixels < 1:
            raise ValueError(f"max_input_pixels must be positive, got {max_input_pixels}")
        self.export_root = export_root
        self.scale = scale
        self.keep = keep
        self.max_input_pixels = max_input_pixels
        self._exports = read_exports(export_root)

    @property
    def exports(self) -> list[dict]:
        """The kept exports, best first: dicts with step, psnr, path, time."""
        return [dict(e) for e in self._exports]

    @property
    def best_path(self) -> str | None:
        """Path of the best kept export, or None before the first export."""
        return self._exports[0]["path"] if self._exports else None

    def _write_index(self) -> None:
        files.atomic_write_json(
            os.path.join(self.export_root, EXPORTS_FILE),
            {"metric": "psnr", "keep": self.keep, "scale": self.scale, "exports": self._exports},
        )

    def maybe_export(self, generator: keras.Model, *, step: int, psnr: float) -> str | None:
        """Exports `generator` as version `step` if its `psnr` is among the `keep` best.

        Returns the export path, or None when the model was not good enough (or the PSNR is
        not finite). A previous export of the same step is replaced.
        """
        step, psnr = int(step), float(psnr)
        if not math.isfinite(psnr):
            logging.warning("Not exporting step %d: validation PSNR is %s", step, psnr)
            return None
        others = [e for e in self._exports if e["step"] != step]
        if len(others) >= self.keep and psnr <= min(e["psnr"] for e in others):
            logging.info(
                "Not exporting step %d: PSNR %.3f dB is not among the %d best",
                step,
                psnr,
                self.keep,
            )
            return None

        final = os.path.join(self.export_root, str(step))
        # Staged and renamed whole: TF Serving never sees a half-written version, and a
        # previous export of this step (this run's own, from before a resume) is replaced.
        with files.staged_folder(final, replace=True) as staging:
            export.export_generator(
                generator, staging, scale=self.scale, max_input_pixels=self.max_input_pixels
            )

        entry = {"step": step, "psnr": psnr, "path": final, "time": time.time()}
        ranked = sorted([*others, entry], key=lambda e: (-e["psnr"], -e["step"]))
        self._exports, dropped = ranked[: self.keep], ranked[self.keep :]
        # Index first, then delete: a crash in between leaves an extra folder, never an index
        # that points at a deleted one.
        self._write_index()
        for old in dropped:
            logging.info("Removing export %s (PSNR %.3f dB)", old["path"], old["psnr"])
            if tf.io.gfile.exists(old["path"]):
                tf.io.gfile.rmtree(old["path"])
        logging.info("Exported step %d (PSNR %.3f dB) to %s", step, psnr, final)
        return final


def build_generator_from_config(config: str) -> keras.Model:
    """Builds the (untrained) generator an ``operative_config.gin`` describes.

    The process's gin config is replaced by that file's bindings.
    """
    gin.clear_config()
    with tf.io.gfile.GFile(config) as f, gin.unlock_config():
        # Written by gin itself, so no binding is a typo; skipping unknowns lets a model dir
        # from an older version (e.g. with a binding since removed) still be exported.
        gin.parse_config(f.read(), skip_unknown=True)
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
