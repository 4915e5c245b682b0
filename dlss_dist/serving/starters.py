"""Starter models shipped inside the package (``dlss_dist/starter_models/<name>/``).

Any subfolder with a ``MODEL_CARD.md`` is a starter model, loadable by its folder name
(``dlss-upscale --model=realworld_x4``). Each holds a SavedModel and may hold a
``model.onnx`` of the same generator, which the inference-only install (no TensorFlow) uses.
"""

from __future__ import annotations

import importlib.resources
import os

MODEL_CARD = "MODEL_CARD.md"


def starter_root() -> str:
    """The folder holding the starter models (inside the installed package)."""
    return str(importlib.resources.files("dlss_dist").joinpath("starter_models"))


def available() -> list[str]:
    """Names of the shipped starter models, sorted."""
    root = starter_root()
    if not os.path.isdir(root):
        return []
    return sorted(
        name for name in os.listdir(root) if os.path.isfile(os.path.join(root, name, MODEL_CARD))
    )


def path_of(name: str) -> str | None:
    """The folder of starter model `name`, or None if there is no such starter model."""
    if name in available():
        return os.path.join(starter_root(), name)
    return None
