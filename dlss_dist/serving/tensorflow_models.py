"""The TensorFlow formats: a SavedModel, an export root, a training model directory.

Imported only when one of them is loaded (`dlss_dist.serving.loading`), so the ONNX and TFLite
paths never import TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from dlss_dist import checkpoints, model_dir
from dlss_dist.export_formats import OUTPUT_NAME, SAVED_MODEL_FILE
from dlss_dist.exporters.graph import UpscaleGraph
from dlss_dist.serving.upscaler import ModelError


def is_model_dir(path: str) -> bool:
    """True for a training model directory (it has ``operative_config.gin``)."""
    return tf.io.gfile.exists(model_dir.ModelDir(path).operative_config)


def resolve_savedmodel(path: str) -> str | None:
    """A SavedModel directory for `path`, or None.

    `path` may be a SavedModel itself, an export root (``<model_dir>/export``: the best export
    listed in its ``exports.json``, or else the highest integer version), or a training model
    directory (the best export of its export root).
    """
    if tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE)):
        return path
    best = model_dir.best_export(path)
    if best is None and is_model_dir(path):
        best = model_dir.best_export(model_dir.ModelDir(path).export_root)
    return best


class SavedModelRuntime:
    """A dlss_dist SavedModel's ``upscale`` signature.

    Attributes:
      path: the SavedModel directory.
      scale, max_input_pixels: read from the SavedModel's variables.
      signatures: its signatures (``serving_default``, ``upscale``).
    """

    format = "savedmodel"

    def __init__(self, path: str):
        self.path = path
        self._loaded = tf.saved_model.load(path)
        if "upscale" not in self._loaded.signatures:
            raise ValueError(f"{path} has no `upscale` signature: not a dlss_dist export")
        self.signatures = self._loaded.signatures
        self._upscale = self.signatures["upscale"]
        self.scale = int(self._loaded.scale.numpy())
        self.max_input_pixels = int(self._loaded.max_input_pixels.numpy())

    def upscale_batch(self, images: np.ndarray) -> np.ndarray:
        try:
            result = self._upscale(images=tf.convert_to_tensor(images, tf.uint8))
        except tf.errors.InvalidArgumentError as error:
            raise ModelError(error.message) from None
        return result["images"].numpy()


class CheckpointRuntime:
    """A training model directory's generator, rebuilt from its operative config and restored
    from a checkpoint (the EMA weights when there are any), run in inference mode.

    Attributes:
      path: the checkpoint prefix.
      model_dir: the training model directory.
      generator: the Keras generator (what `dlss-export` converts).
      max_input_pixels: the limit the run recorded for its exports
        (`model_dir.read_training_facts`), so the directory behaves as its export would.
    """

    format = "checkpoint"

    def __init__(self, directory: str, checkpoint: str | None = None):
        self.model_dir = directory
        self.path = model_dir.resolve_checkpoint(directory, checkpoint)
        self.generator, self.scale = checkpoints.load_generator(directory, self.path)
        facts = model_dir.read_training_facts(directory, scale=self.scale)
        self.max_input_pixels = facts.max_input_pixels
        self._graph = UpscaleGraph(self.generator)

    def upscale_batch(self, images: np.ndarray) -> np.ndarray:
        result = self._graph.upscale(tf.convert_to_tensor(images, tf.uint8))
        return result[OUTPUT_NAME].numpy()


def load(path: str):
    """The runtime for a SavedModel, an export root or a training model directory.

    Raises:
      FileNotFoundError: `path` is none of them.
    """
    savedmodel = resolve_savedmodel(path)
    if savedmodel is not None:
        if savedmodel != path:
            logging.info("Using the export %s of %s", savedmodel, path)
        return SavedModelRuntime(savedmodel)
    if is_model_dir(path):
        logging.info("%s has no export: using its newest checkpoint", path)
        return CheckpointRuntime(path)
    raise FileNotFoundError(
        f"{path} is neither a SavedModel (no {SAVED_MODEL_FILE}), an export root with "
        "integer version folders, a training model directory (no operative_config.gin), "
        "nor a .onnx/.tflite file"
    )
