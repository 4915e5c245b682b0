"""Gin parsing shared by every entry point: the files import what they bind; unknowns are errors.

The shipped configs are package data (`dlss_dist/configs/*.gin`), so a bare name such as
`base.gin` resolves from any working directory, in an editable install and from a wheel alike.

Beyond gin's own checks (an unknown configurable or parameter, a syntax error), a parsed
config is refused, in one line naming the binding and where it was written, when:

- a macro is set but nothing uses it (`HR_SIZE = 64`, the old name of `HR_CROP`; a typo such
  as `hr_crop = 8`): gin itself would ignore it silently;
- a macro is used but never set (`%HR_SIZ`): gin's own message dumps the whole config;
- a parameter annotated as a number (`learning_rate: float`, `shuffle_buffer: int`) is bound,
  directly or through a macro, to a string, None (unless the annotation allows None) or a
  container: it would fail later as a TypeError deep inside TensorFlow;
- an `import` line names a module that cannot be imported;
- a binding names a parameter that has moved (`MOVED_BINDINGS`), e.g.
  `make_input_fn.online_degradation`, now `train_loop.online_degradation`.

An operative config written by an older version (a model directory, a starter model) is read
through `upgrade_operative_config`, which renames or drops the moved bindings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.resources
import logging
import numbers
import os
import re
import types
import typing
from collections.abc import Iterator, Sequence

import gin
from gin import config as gin_config

from dlss_dist import files

# Bindings that moved: the old name -> the new one (None: dropped, the value now comes from
# elsewhere), and why. train_loop decides the data facts once and passes them down.
MOVED_BINDINGS: dict[str, tuple[str | None, str]] = {
    "make_input_fn.online_degradation": (
        "train_loop.online_degradation",
        "train_loop decides the online degradation once and passes it to the input pipeline",
    ),
    "make_input_fn.scale": (
        None,
        "the scale is the generator's (%SCALE); train_loop passes it to the input pipeline",
    ),
    "make_input_fn.global_batch_size": (
        None,
        "train_loop.global_batch_size is passed to the input pipeline, one value for both",
    ),
}


def _moved_binding_message(error: ValueError, sources: _Sources) -> str | None:
    found = re.search(r"Configurable '([\w.]+)' has denylisted kwarg '(\w+)'", str(error))
    if found is None:
        return None
    binding = f"{found.group(1).rpartition('.')[2]}.{found.group(2)}"
    if binding not in MOVED_BINDINGS:
        return None
    new, why = MOVED_BINDINGS[binding]
    fix = f"rename it to {new}" if new else "remove the binding"
    return f"gin binding {binding}{sources.where_set(binding)} has moved ({why}): {fix}"


def upgrade_operative_config(text: str) -> str:
    """An operative config written by an older version, with `MOVED_BINDINGS` renamed or
    dropped, so it parses with this version's configurables (gin writes one binding a line)."""
    for old, (new, _) in MOVED_BINDINGS.items():
        pattern = re.compile(rf"^{re.escape(old)}(\s*=.*)$", re.M)
        text = pattern.sub(lambda m, new=new: f"{new}{m.group(1)}" if new else "", text)
    return text


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
    if files.is_remote(path) or os.path.exists(path):
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

    The gin files' own `import` lines register their configurables (and the operative config
    written into a model dir repeats them), so there is no second registry here.

    Args:
      gin_files: config files (paths or packaged bare names), applied in order. An
        `include` resolves against the working directory, then the including files'
        folders, then the packaged configs.
      gin_bindings: single bindings such as "train_loop.total_steps = 100", applied last.
    """
    paths = [resolve_gin_file(path) for path in gin_files]
    for path in paths:
        if not files.is_remote(path):
            _add_search_folder(os.path.dirname(os.path.abspath(path)))
    _add_search_folder(packaged_configs_dir())
    sources = _Sources(paths, gin_bindings)
    try:
        with _quiet_gin_search():
            gin.parse_config_files_and_bindings(paths, gin_bindings, skip_unknown=False)
    except ImportError as error:
        raise ValueError(_import_error_message(error)) from error
    except ValueError as error:
        moved = _moved_binding_message(error, sources)
        if moved is not None:
            raise ValueError(moved) from None
        undefined = re.match(r"No bindings specified for '([^'/]+)/gin\.macro'", str(error))
        if undefined is None:
            raise
        name = undefined.group(1)
        raise ValueError(
            f"gin macro %{name} is used{sources.where_used(name)} but never set"
            f"{_did_you_mean(name, _macro_values())}; set it (`{name} = ...`) or fix the name"
        ) from None
    _check_macros_are_used(sources)
    _check_numeric_bindings(sources)


# -- checks after parsing ---------------------------------------------------------------------


class _Sources:
    """The text of every gin file parsed (with its includes) and of each --gin_param binding,
    to say where a binding was written: gin keeps no locations once a config is parsed."""

    def __init__(self, paths: Sequence[str], bindings: Sequence[str]):
        self.texts: list[tuple[str, str]] = []
        seen: set[str] = set()
        for path in paths:
            self._add_file(path, seen)
        for binding in bindings:
            self.texts.append(("--gin_param", binding))

    def _add_file(self, path: str, seen: set[str]) -> None:
        if path in seen or files.is_remote(path):  # Remote files: gin's checks, without a line.
            return
        seen.add(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            return
        self.texts.append((path, text))
        for included in re.findall(r"^\s*include\s+['\"]([^'\"]+)['\"]", text, re.M):
            for folder in [os.getcwd(), os.path.dirname(path), *_search_folders]:
                candidate = os.path.join(folder, included)
                if os.path.exists(candidate):
                    self._add_file(candidate, seen)
                    break

    def _find(self, pattern: str) -> str:
        # The last place wins, as in gin (later files and bindings override earlier ones).
        found = ""
        for label, text in self.texts:
            for number, line in enumerate(text.splitlines(), 1):
                if re.search(pattern, line.split("#", 1)[0]):
                    where = label if label == "--gin_param" else f"{label} line {number}"
                    found = f" ({where}: {line.strip()})"
        return found

    def where_used(self, macro: str) -> str:
        return self._find(rf"%{re.escape(macro)}(?![\w.])")

    def where_set(self, binding: str) -> str:
        """`binding` is a macro name or `[scope/]name.parameter` (name without module)."""
        scope, _, rest = binding.rpartition("/")
        prefix = rf"{re.escape(scope)}/" if scope else r"(?<![\w/.])"
        key = re.escape(rest).replace(r"\.", r"\s*\.\s*")
        return self._find(rf"^\s*{prefix}(?:[\w.]+\.)?{key}\s*=")


def _import_error_message(error: ImportError) -> str:
    # gin adds the location as lines of its own: '  In file "x.gin", line 3' and the line.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    location = re.search(r'In file "([^"]+)", line (\d+)', str(error))
    statement = lines[-1] if len(lines) > 2 else ""
    where = f"{location.group(1)} line {location.group(2)}: " if location else ""
    return (
        f"gin {where}{statement or 'import'} failed: {lines[0] if lines else error}; fix the "
        f"module name or install the package that provides it"
    )


def _macro_values() -> dict[str, object]:
    return {
        scope: params.get("value")
        for (scope, selector), params in gin_config._CONFIG.items()
        if selector == "gin.macro"
    }


def _did_you_mean(name: str, known: typing.Iterable[str]) -> str:
    renamed = {"HR_SIZE": "HR_CROP"}  # docs/training.md: the crop macro's old name
    if name in renamed:
        return f"; {name} was renamed {renamed[name]}"
    by_upper = {candidate.upper(): candidate for candidate in known if candidate != name}
    close = difflib.get_close_matches(name.upper(), list(by_upper), n=1, cutoff=0.75)
    return f"; did you mean {by_upper[close[0]]}?" if close else ""


def _references(value: object) -> Iterator[gin_config.ConfigurableReference]:
    if isinstance(value, gin_config.ConfigurableReference):
        yield value
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _references(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _references(item)


def _macro_name(reference: gin_config.ConfigurableReference) -> str | None:
    if reference.configurable.selector != "gin.macro":
        return None
    return reference.scoped_selector.rpartition("/")[0]


def _check_macros_are_used(sources: _Sources) -> None:
    macros = _macro_values()
    used = {
        _macro_name(reference)
        for params in gin_config._CONFIG.values()
        for value in params.values()
        for reference in _references(value)
    }
    unused = sorted(set(macros) - used)
    if unused:
        name = unused[0]
        others = f" (also unused: {', '.join(unused[1:])})" if len(unused) > 1 else ""
        in_use = ", ".join(sorted(used - {None})) or "none"
        raise ValueError(
            f"gin macro {name} is set{sources.where_set(name)} but nothing uses it"
            f"{_did_you_mean(name, macros)}{others}; macros in use: {in_use}"
        )


@dataclasses.dataclass(frozen=True)
class _Numeric:
    kinds: tuple[type, ...]
    allows_none: bool

    @property
    def name(self) -> str:
        return "an integer" if self.kinds == (int,) else "a number"


def _numeric_hint(function: object, parameter: str) -> _Numeric | None:
    """The numeric kind a parameter is annotated with (int, float, optionally None)."""
    target = function.__init__ if isinstance(function, type) else function
    try:
        hint = typing.get_type_hints(target).get(parameter)
    except Exception:  # noqa: BLE001 - an annotation that cannot be evaluated: no check
        return None
    is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    args = typing.get_args(hint) if is_union else (hint,)
    kinds = tuple(arg for arg in args if arg is not type(None))
    if not kinds or not all(kind in (int, float) for kind in kinds):
        return None
    return _Numeric(
        kinds=(int,) if kinds == (int,) else (int, float), allows_none=len(kinds) < len(args)
    )


def _resolve_macros(value: object, macros: dict[str, object]) -> tuple[object, str | None]:
    """Follows macro references (%A = %B = 3); returns the value and the first macro name."""
    first = None
    for _ in range(len(macros) + 1):
        if not isinstance(value, gin_config.ConfigurableReference):
            break
        name = _macro_name(value)
        if name is None:
            break
        first = first or name
        value = macros.get(name)
    return value, first


def _check_numeric_bindings(sources: _Sources) -> None:
    macros = _macro_values()
    for (scope, selector), params in gin_config._CONFIG.items():
        if selector == "gin.macro":
            continue
        configurable = gin_config._REGISTRY.get_match(selector)
        if configurable is None:
            continue
        for parameter, raw in params.items():
            hint = _numeric_hint(configurable.wrapped, parameter)
            if hint is None:
                continue
            value, macro = _resolve_macros(raw, macros)
            if isinstance(value, gin_config.ConfigurableReference):
                continue  # @function() results are not known before the call
            if value is None and hint.allows_none:
                continue
            if isinstance(value, numbers.Real):
                continue  # int vs float vs bool, ranges: the configurable's own checks
            binding = f"{scope + '/' if scope else ''}{configurable.name}.{parameter}"
            via = f" (through macro {macro}{sources.where_set(macro)})" if macro else ""
            where = "" if macro else sources.where_set(binding)
            none_ok = " or None" if hint.allows_none else ""
            raise ValueError(
                f"gin binding {binding} = {value!r}{via}{where}: must be {hint.name}"
                f"{none_ok}, not {type(value).__name__}"
            )
