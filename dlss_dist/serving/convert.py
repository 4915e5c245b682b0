"""The generator behind any TensorFlow model on disk, for `dlss-export` to write in every format.

Sources: a training model directory (its checkpoint), a SavedModel, an export root or a
starter model (the SavedModel's weights put back into the network its ``operative_config.gin``
describes: beside the SavedModel, as in a starter model, or in the model directory above
``<model_dir>/export/<version>/``). ONNX and TFLite files are end points: nothing converts
them back (see `source_generator`).
"""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf
from absl import logging

from dlss_dist import checkpoints, export, model_dir
from dlss_dist.serving import loading, tensorflow_models
from dlss_dist.serving.loading import ModelSource

# Version folder name when the source's own name is not an integer (a starter model).
DEFAULT_VERSION = 1


@dataclasses.dataclass
class SourceGenerator:
    """A source's generator with what an export of it needs.

    Attributes:
      generator: the Keras generator, weights restored.
      scale: its factor.
      origin: what it came from (a checkpoint prefix or a SavedModel folder), for messages.
      version: the version folder to export to by default (a checkpoint's step, or an
        export's own version number).
      max_input_pixels: the source SavedModel's limit, or the one a training run recorded
        in its model directory (`model_dir.read_training_facts`); None: the default.
    """

    generator: keras.Model
    scale: int
    origin: str
    version: int
    max_input_pixels: int | None = None


def _operative_config_for(savedmodel: str) -> str | None:
    parent = os.path.dirname(os.path.normpath(savedmodel))
    candidates = [
        os.path.join(savedmodel, model_dir.OPERATIVE_CONFIG),  # a starter model
        os.path.join(os.path.dirname(parent), model_dir.OPERATIVE_CONFIG),  # <dir>/export/<v>
    ]
    return next((c for c in candidates if tf.io.gfile.exists(c)), None)


def _from_savedmodel(path: str) -> SourceGenerator:
    config = _operative_config_for(path)
    if config is None:
        raise ValueError(
            f"cannot convert the SavedModel {path}: its network is rebuilt from the "
            f"{model_dir.OPERATIVE_CONFIG} of its training run, and there is none beside it or "
            "in the model directory above its export folder; export from the training model "
            "directory instead (--model=MODEL_DIR)"
        )
    loaded = tf.saved_model.load(path)
    saved = list(getattr(loaded, "generator_variables", []))
    generator = checkpoints.build_generator_from_config(config)
    shapes = [tuple(v.shape) for v in generator.variables]
    if [tuple(v.shape) for v in saved] != shapes:
        raise ValueError(
            f"the SavedModel {path} does not hold the network {config} describes "
            f"({len(saved)} weights saved, {len(shapes)} built): not converted"
        )
    for variable, value in zip(generator.variables, saved, strict=True):
        variable.assign(value.numpy())
    name = os.path.basename(os.path.normpath(path))
    version = int(name) if name.isdigit() else DEFAULT_VERSION
    logging.info("Rebuilt the generator of %s from %s", path, config)
    return SourceGenerator(
        generator,
        int(loaded.scale.numpy()),
        path,
        version,
        int(loaded.max_input_pixels.numpy()),
    )


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A training model directory's checkpoint: found (cheap) before it is loaded (slow)."""

    model_dir: str
    path: str
    version: int


def resolve_checkpoint(directory: str, checkpoint: str | None = None) -> Checkpoint:
    """`checkpoint`, or the newest in `directory`, with its training step as the version."""
    path = model_dir.resolve_checkpoint(directory, checkpoint)
    version = model_dir.checkpoint_step(path)
    if version is None:
        raise ValueError(f"{path} has no `step` variable: pass --export_version")
    return Checkpoint(directory, path, version)


def checkpoint_generator(checkpoint: Checkpoint) -> SourceGenerator:
    """The generator of a training model directory's checkpoint."""
    generator, scale = checkpoints.load_generator(checkpoint.model_dir, checkpoint.path)
    facts = model_dir.read_training_facts(checkpoint.model_dir, scale=scale)
    return SourceGenerator(
        generator, scale, checkpoint.path, checkpoint.version, facts.max_input_pixels
    )


def source_generator(source: ModelSource, checkpoint: str | None = None) -> SourceGenerator:
    """The generator of `source` (see the module), ready for `dlss_dist.export` and
    `dlss_dist.exporters`.

    Raises:
      ValueError: `source` is an ONNX or TFLite file (no way back to a Keras network), a
        SavedModel without the operative config to rebuild it, or `checkpoint` was given for
        a source that is not a training model directory.
    """
    loading.check_convertible(source)
    if tensorflow_models.is_model_dir(source.path) and not tf.io.gfile.exists(
        os.path.join(source.path, "saved_model.pb")
    ):
        return checkpoint_generator(resolve_checkpoint(source.path, checkpoint))
    if checkpoint is not None:
        raise ValueError(
            f"--checkpoint is for a training model directory; {source.description} is not one"
        )
    savedmodel = tensorflow_models.resolve_savedmodel(source.path)
    if savedmodel is None:
        raise FileNotFoundError(
            f"{source.description} is neither a training model directory, a SavedModel nor "
            "an export root"
        )
    result = _from_savedmodel(savedmodel)
    if export.infer_scale(result.generator) != result.scale:
        raise ValueError(f"{savedmodel}: the rebuilt network's scale differs from the export's")
    return result
