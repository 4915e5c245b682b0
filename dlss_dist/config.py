"""Gin parsing shared by every entry point: all configurables registered, unknowns are errors.

The shipped configs are package data (`dlss_dist/configs/*.gin`), so a bare name such as
`base.gin` resolves from any working directory, in an editable install and from a wheel alike.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
from collections.abc import Iterator, Sequence

import gin


def register_configurables() -> None:
    """Imports every module that defines a gin configurable."""
    # pylint: disable=import-outside-toplevel,unused-import
    import dlss_dist.data.pipeline  # noqa: F401
    import dlss_dist.demo  # noqa: F401
    import dlss_dist.distribute  # noqa: F401
    import dlss_dist.models  # noqa: F401
    import dlss_dist.models.losses  # noqa: F401
    import dlss_dist.training.loop  # noqa: F401
    import dlss_dist.training.trainer  # noqa: F401


def packaged_configs_dir() -> str:
    """The folder of the configs shipped inside the package (a real folder: the package is
    installed unzipped by pip, editable or not)."""
    return os.fspath(importlib.resources.files("dlss_dist") / "configs")


def packaged_config_names() -> list[str]:
    """The shipped config file names, sorted."""
    return sorted(name for name in os.listdir(packaged_configs_dir()) if name.endswith(".gin"))


def resolve_gin_file(path: str) -> str:
    """Returns the file to parse for `path`.

    A path with a folder, an existing file or a URL is used as given (an explicit path always
    wins). A bare file name that is not in the working directory is a packaged config.

    Raises:
      FileNotFoundError: naming every place that was searched.
    """
    if "://" in path or os.path.exists(path):
        return path
    searched = [os.path.abspath(path)]
    if not os.path.dirname(path):
        candidate = os.path.join(packaged_configs_dir(), path)
        if os.path.exists(candidate):
            return candidate
        searched.append(candidate)
    raise FileNotFoundError(
        f"gin file {path!r} not found; searched: {', '.join(searched)}. "
        f"Packaged configs: {', '.join(packaged_config_names())}."
    )


class _DropGinResourceMisses(logging.Filter):
    """gin tries every search folder with each of its readers; its package-resource reader
    logs `Path not found: base.gin` at ERROR level for each folder that does not hold the
    file, even when a later folder does. Those records describe a successful search."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.module == "resource_reader" and record.msg == "Path not found: %s")


@contextlib.contextmanager
def _quiet_gin_search() -> Iterator[None]:
    drop = _DropGinResourceMisses()
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


_search_folders: list[str] = []


def _add_search_folder(folder: str) -> None:
    """gin keeps one global list of include folders, searched in the order added."""
    if folder not in _search_folders:
        _search_folders.append(folder)
        gin.add_config_file_search_path(folder)


def parse_config(gin_files: Sequence[str], gin_bindings: Sequence[str] = ()) -> None:
    """Parses gin files then bindings; an unknown configurable or parameter is an error.

    Args:
      gin_files: config files (paths or packaged bare names), applied in order. An
        `include` resolves against the working directory, then the including files'
        folders, then the packaged configs.
      gin_bindings: single bindings such as "train_loop.total_steps = 100", applied last.
    """
    register_configurables()
    files = [resolve_gin_file(path) for path in gin_files]
    for path in files:
        if "://" not in path:
            _add_search_folder(os.path.dirname(os.path.abspath(path)))
    _add_search_folder(packaged_configs_dir())
    with _quiet_gin_search():
        gin.parse_config_files_and_bindings(files, gin_bindings, skip_unknown=False)
