"""`load_upscaler(path_or_name)`: find what a model argument names and load it in its runtime.

Recognised, in this order:

* an existing ``.onnx`` file (ONNX Runtime) or ``.tflite`` file (LiteRT);
* a SavedModel folder (has ``saved_model.pb``);
* an export root (``<model_dir>/export``: its best export by ``exports.json``, else the newest
  version) or a training model directory (its best export, else its newest checkpoint);
* the name of a starter model shipped in the package (`starters.available`).

Only the TensorFlow formats import TensorFlow, when they are loaded: `.onnx` and `.tflite`
files, and a starter model or SavedModel folder that also holds a ``model.onnx`` when
TensorFlow is not installed, load with ONNX Runtime or LiteRT alone.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

from absl import logging

from dlss_dist import files
from dlss_dist.export_formats import ONNX_FILE, SAVED_MODEL_FILE, TFLITE_FILES
from dlss_dist.serving import memory, starters
from dlss_dist.serving.upscaler import Upscaler

FILE_FORMATS = {".onnx": "onnx", ".tflite": "tflite"}


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """What a model argument names, found without loading anything.

    Attributes:
      path: the file or folder.
      kind: "onnx", "tflite", "savedmodel" (a folder with saved_model.pb) or "directory" (an
        export root or a training model directory; resolving it needs TensorFlow).
      description: for messages: the path, or "starter model NAME (path)".
    """

    path: str
    kind: str
    description: str


def tensorflow_installed() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def locate(path_or_name: str) -> ModelSource:
    """Finds what `path_or_name` is (see the module), touching only the file system.

    Raises:
      FileNotFoundError: no such file or folder, and no starter model of that name (the
        message lists the starter models).
      ValueError: a file that is neither .onnx nor .tflite.
    """
    path = str(path_or_name)
    if not path:
        raise ValueError("no model given: pass a model file, folder or starter model name")
    if files.exists(path):
        if files.isdir(path):
            kind = "savedmodel" if files.exists(os.path.join(path, SAVED_MODEL_FILE)) else None
            return ModelSource(path, kind or "directory", path)
        extension = os.path.splitext(path)[1].lower()
        if extension not in FILE_FORMATS:
            raise ValueError(
                f"{path} is a file but not a model: give a .onnx or .tflite file, a SavedModel "
                "or export folder, a training model directory or a starter model name"
            )
        return ModelSource(path, FILE_FORMATS[extension], path)
    starter = None if os.sep in path or "/" in path else starters.path_of(path)
    if starter is not None:
        return ModelSource(starter, "savedmodel", f"starter model {path} ({starter})")
    names = starters.available()
    raise FileNotFoundError(
        f"model {path!r} is not a file, a folder or a starter model name (starter models: "
        f"{', '.join(names) if names else 'none installed'})"
    )


def needs_tensorflow(source: ModelSource) -> bool:
    """Whether loading `source` imports TensorFlow (so a CLI can import it quietly first)."""
    return source.kind not in FILE_FORMATS.values() and tensorflow_installed()


def check_convertible(source: ModelSource) -> None:
    """Raises ValueError saying why, when `source` cannot be converted to other formats.

    ONNX and TFLite files are end points: no maintained converter takes them back to a
    TensorFlow/Keras network (the SavedModel, ONNX and TFLite writers all start from one).
    """
    if source.kind in FILE_FORMATS.values():
        raise ValueError(
            f"cannot convert {source.description}: a .{source.kind} file is an end point, "
            "there is no supported way back from it to the TensorFlow network every export "
            "starts from; convert the training model directory, SavedModel or starter model "
            "it was exported from"
        )


def _tensorflow_free_file(folder: str) -> str | None:
    """A .onnx or .tflite export beside a SavedModel whose runtime is installed, or None."""
    candidates = [(ONNX_FILE, "onnxruntime"), (TFLITE_FILES["float32"], "ai_edge_litert")]
    for name, module in candidates:
        path = os.path.join(folder, name)
        if files.exists(path) and importlib.util.find_spec(module) is not None:
            return path
    return None


def load_runtime(source: ModelSource):
    """Loads `source` in its runtime (see `Upscaler`'s `Runtime`)."""
    if source.kind == "onnx":
        from dlss_dist.serving import onnx_file

        return onnx_file.OnnxRuntime(source.path)
    if source.kind == "tflite":
        from dlss_dist.serving import tflite_file

        return tflite_file.TFLiteRuntime(source.path)
    if not tensorflow_installed():
        alternative = _tensorflow_free_file(source.path) if source.kind == "savedmodel" else None
        if alternative is not None:
            logging.info("TensorFlow is not installed: using %s", alternative)
            kind = FILE_FORMATS[os.path.splitext(alternative)[1]]
            return load_runtime(ModelSource(alternative, kind, alternative))
        raise ImportError(
            f"{source.description} is a TensorFlow model and TensorFlow is not installed: "
            "pip install 'dlss_dist[cpu]', or use an ONNX export (dlss-export "
            "--format=onnx, then --model=.../model.onnx) with pip install 'dlss_dist[onnx]'"
        )
    from dlss_dist.serving import tensorflow_models

    return tensorflow_models.load(source.path)


def load_upscaler(
    path_or_name: str | ModelSource, *, max_memory: int | str = memory.DEFAULT_MAX_MEMORY
) -> Upscaler:
    """Loads a model in any format (see the module) as an `Upscaler`.

    Args:
      path_or_name: a .onnx/.tflite file, a SavedModel, an export root, a training model
        directory or a starter model name (or what `locate` found for one).
      max_memory: peak resident memory to stay under when tiling (bytes or "2G").

    Raises:
      FileNotFoundError / ValueError: nothing loadable at `path_or_name` (one-line message).
      ImportError: the model's runtime is not installed (the message says what to install).
    """
    max_memory = memory.parse_memory(max_memory)
    source = path_or_name if isinstance(path_or_name, ModelSource) else locate(path_or_name)
    runtime = load_runtime(source)
    description = source.description
    if runtime.path != source.path:
        description = f"{description} -> {runtime.path}"
    upscaler = Upscaler(runtime, max_memory=max_memory, description=description)
    logging.info("Loaded %s (x%d, %s)", description, upscaler.scale, upscaler.format)
    return upscaler
