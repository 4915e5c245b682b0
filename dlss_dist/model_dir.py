"""THE model-directory contract: every name under a training `model_dir`, and its readers.

    <model_dir>/
      run.lock                  the live training run (dlss_dist.run_lock), while it runs
      operative_config.gin      every gin binding the run used, imports first (chief only)
      training_facts.json       what the run decided once, as values: scale, the exports'
                                max_input_pixels, the LR degradation (chief only); what
                                export and evaluation use, whatever gin says later
      checkpoints/ckpt-<step>.* tf.train.Checkpoint: step, generator, discriminator, both
                                optimizers, ema_generator; `checkpoint` names the newest
      summaries/events.*        TensorBoard scalars (losses, PSNR, throughput) and samples
      samples/step_<step>.png   LR (nearest) | bicubic | SR | HR rows
      export/<step>/            SavedModels, the `keep_exports` best by validation PSNR
      export/exports.json       their ranking, best first (written by `write_exports_index`)
      tmp/worker-<i>/           non-chief workers' throw-away checkpoint copies

Nothing else in the package spells these names: the trainer, export, evaluation, upscaling,
the demo and the tests ask this module. It is on the ground floor: it imports only
`dlss_dist.files` (and TensorFlow's file and checkpoint readers), so training, serving and
evaluation all read the directory through it without importing one another. Building and
restoring the networks a checkpoint holds is `dlss_dist.checkpoints`, one floor up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import tensorflow as tf

from dlss_dist import files

OPERATIVE_CONFIG = "operative_config.gin"
TRAINING_FACTS = "training_facts.json"
CHECKPOINT_DIR = "checkpoints"
SUMMARY_DIR = "summaries"
SAMPLE_DIR = "samples"
EXPORT_DIR = "export"
EXPORTS_FILE = "exports.json"
WORKER_TMP_DIR = "tmp"

# The checkpoint's object names; `checkpoints.load_generator` reads the generator back by them.
STEP = "step"
GENERATOR = "generator"
EMA_GENERATOR = "ema_generator"
_STEP_KEY = f"{STEP}/.ATTRIBUTES/VARIABLE_VALUE"


class ArchitectureMismatchError(ValueError):
    """The model directory's checkpoint was written by a different network architecture."""


@dataclasses.dataclass(frozen=True)
class TrainingFacts:
    """What a training run decided once and passed down as values, recorded for its readers.

    Attributes:
      scale: the generator's upscaling factor.
      max_input_pixels: the largest input H*W its exports accept; `dlss-export` and a model
        directory loaded for evaluation or upscaling use this, not a gin lookup (None only
        for an old model directory whose operative config does not say: the default).
      degradation: how the LR it trained on was made: the dataset's stored degradation name
        (``bicubic_matlab_antialias``) or ``online:<name>`` for LR made in the input pipeline.
      degradation_spec: the online degradation's settings (None for stored LR).
    """

    scale: int
    max_input_pixels: int | None
    degradation: str | None = None
    degradation_spec: dict | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: dict) -> TrainingFacts:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


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

    @property
    def training_facts(self) -> str:
        return os.path.join(self.root, TRAINING_FACTS)

    def write_operative_config(self, text: str) -> None:
        files.atomic_write(self.operative_config, text)

    def write_training_facts(self, facts: TrainingFacts) -> None:
        files.atomic_write_json(self.training_facts, facts.to_json())


# A model directory written before training_facts.json existed: its operative config's line.
_LEGACY_MAX_INPUT_PIXELS = re.compile(r"^train_loop\.max_input_pixels\s*=\s*(\d+)\s*$", re.M)


def read_training_facts(model_dir: str, *, scale: int) -> TrainingFacts:
    """The facts the run recorded in `model_dir` (see `TrainingFacts`).

    A model directory from before ``training_facts.json`` gets what its operative config
    recorded: the ``train_loop.max_input_pixels`` line gin wrote there (None when the run left
    the default), with `scale` (the caller's, from the restored generator) and no degradation.
    Nothing is read from the process's gin configuration.
    """
    paths = ModelDir(model_dir)
    if files.exists(paths.training_facts):
        facts = TrainingFacts.from_json(json.loads(files.read_bytes(paths.training_facts)))
        if facts.scale != scale:
            raise ValueError(
                f"{paths.training_facts} records scale {facts.scale} but the checkpoint's "
                f"generator upscales x{scale}: the directory holds files of two runs"
            )
        return facts
    max_input_pixels = None
    if files.exists(paths.operative_config):
        text = files.read_bytes(paths.operative_config).decode("utf-8")
        found = _LEGACY_MAX_INPUT_PIXELS.search(text)
        max_input_pixels = int(found.group(1)) if found else None
    return TrainingFacts(scale=scale, max_input_pixels=max_input_pixels)


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


def write_exports_index(export_root: str, *, keep: int, scale: int, exports: list[dict]) -> None:
    """Writes ``<export_root>/exports.json``: the kept exports (dicts with step, psnr, path,
    time), best first, as `read_exports` reads them back."""
    files.atomic_write_json(
        os.path.join(export_root, EXPORTS_FILE),
        {"metric": "psnr", "keep": keep, "scale": scale, "exports": exports},
    )
