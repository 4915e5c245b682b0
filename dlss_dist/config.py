"""Gin parsing shared by every entry point: the files import what they bind; unknowns are errors."""

from __future__ import annotations

import os
from collections.abc import Sequence

import gin

# The directory holding the repository's gin files, for `include` and bare file names.
GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def resolve_gin_file(path: str) -> str:
    """Returns `path`; a bare file name that is not in the working directory is looked up
    in the repository's gin/ folder (a path with folders is never redirected)."""
    if os.path.exists(path) or os.path.dirname(path) or "://" in path:
        if not (os.path.exists(path) or "://" in path):
            raise FileNotFoundError(f"Gin file {path!r} not found.")
        return path
    candidate = os.path.join(GIN_DIR, path)
    if os.path.exists(candidate):
        return candidate
    raise FileNotFoundError(f"Gin file {path!r} not found (also looked in {GIN_DIR}).")


def parse_config(gin_files: Sequence[str], gin_bindings: Sequence[str] = ()) -> None:
    """Parses gin files then bindings; an unknown configurable or parameter is an error.

    The gin files' own `import` lines register their configurables (and the operative config
    written into a model dir repeats them), so there is no second registry here.

    Args:
      gin_files: config files, applied in order; `include` paths resolve relative to
        the including file's folder and to the repository's gin/ folder.
      gin_bindings: single bindings such as "train_loop.total_steps = 100", applied last.
    """
    files = [resolve_gin_file(path) for path in gin_files]
    for folder in {os.path.dirname(os.path.abspath(path)) for path in files} | {GIN_DIR}:
        gin.add_config_file_search_path(folder)
    gin.parse_config_files_and_bindings(files, gin_bindings, skip_unknown=False)
