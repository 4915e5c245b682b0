"""Thin absl entry points; the work happens in the library modules they call.

Every tool starts through `run_tool`, the one place that decides how a CLI talks to a user:

* ``--help`` prints the tool's docstring and its own flags (with descriptions and defaults)
  and exits 0; ``--helpfull`` is absl's list of every flag of every module (also exit 0).
* A user error becomes ONE line on stderr, ``dlss-<tool>: error: <what went wrong>``, and a
  non-zero exit: `EXIT_USAGE` (2) for a bad command line (unknown flag, bad flag value,
  missing required flag, stray argument), `EXIT_ERROR` (1) for everything else a user can
  cause (a gin typo or syntax error, a missing file, a path that is a file where a folder is
  wanted, a full disk, corrupt data, an invalid setting). The traceback is printed too with
  ``--debug`` or ``--verbosity=1`` (or higher).
* Ctrl-C outside training is one line and exit `EXIT_INTERRUPTED` (130).
* ``--version`` prints ``dlss-<tool> <package version>`` and exits 0 (nothing heavy loads).
* A flag's old name (``run_tool(renamed={"data_dir": "data"})``) still works for one release,
  with one ``dlss-<tool>: warning: --data_dir is deprecated ...`` line on stderr.

Exceptions that are not user errors (a bug: TypeError, KeyError, ...) keep their traceback.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence

from absl import app, flags

from dlss_dist import console

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

FLAGS = flags.FLAGS
flags.DEFINE_bool(
    "debug", False, "On an error, print the Python traceback too (as does --verbosity=1)."
)

_HELP_FLAGS = ("--help", "-help", "--helpshort", "-helpshort", "-?", "--?")
_VERSION_FLAGS = ("--version", "-version")
PACKAGE = "dlss_dist"


class UserError(Exception):
    """An error whose message is the whole story for the user (no traceback needed).

    A library exception class that cannot derive from this one (the library must not import
    cli/) says the same with a class attribute ``user_error = True`` (e.g. training's
    NonFiniteLossError); an ``exit_code`` attribute then sets the exit status.
    """


def quiet_tensorflow_logs(*, tensorflow: bool = True) -> None:
    """Sets up the console (see `dlss_dist.console`): the tool's own story by default,
    library internals at `--verbosity=1`. Call first in `main`, before TensorFlow loads.

    Tools that may run without TensorFlow (dlss-upscale with an ONNX model) pass
    ``tensorflow=False`` and call `console.import_tensorflow_quietly` once they know they
    need it."""
    console.setup(tensorflow=tensorflow)


def _user_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes that mean "the user's input or environment", not a bug.

    ValueError: invalid settings and data (the library's convention, gin's unknown
    bindings); SyntaxError: gin parse errors; OSError: missing files, permissions, a file
    where a folder is wanted, a full disk; tf.errors.OpError: the same seen through
    tf.io.gfile and tf.data (NotFound, FailedPrecondition, DataLoss, ...).
    """
    types: list[type[BaseException]] = [UserError, ValueError, SyntaxError, OSError]
    tf = sys.modules.get("tensorflow")  # never import TensorFlow just to classify an error
    if tf is not None:
        types.append(tf.errors.OpError)
    return tuple(types)


def is_missing_extra(error: BaseException) -> bool:
    """An optional dependency the user has not installed, reported by the library as an
    ImportError with the command that installs it ("... pip install 'dlss_dist[onnx]'")."""
    return isinstance(error, ImportError) and "pip install" in str(error)


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is the user's to fix (one line, no traceback) rather than a bug."""
    return (
        isinstance(error, _user_error_types())
        or getattr(type(error), "user_error", False)
        or is_missing_extra(error)
    )


def one_line(error: BaseException) -> str:
    """An exception as one line of text (multi-line messages, e.g. gin's, are joined)."""
    if isinstance(error, SyntaxError) and not isinstance(error, IndentationError):
        # Gin's parse errors put the location in attributes, not in the message.
        # No file name: the --gin_param bindings, parsed as one string, a binding per line.
        where = f"{error.filename} line" if error.filename else "--gin_param binding"
        where = f"{where} {error.lineno}"
        text = (error.text or "").strip()
        return f"gin syntax error in {where}: {error.msg}" + (f": {text}" if text else "")
    tf = sys.modules.get("tensorflow")
    is_op_error = tf is not None and isinstance(error, tf.errors.OpError)
    message = str(error)
    if is_op_error:
        # Drop TensorFlow's graph-function and op decorations around the real message.
        message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", error.message)
        message = re.sub(r"\s*\[Op:[^\]]*\](\s*name:\s*\S*)?\s*$", "", message)
    # Gin adds a line per configurable the error passed through: call stack, not news.
    lines = [
        line.strip()
        for line in message.splitlines()
        if line.strip() and not line.strip().startswith("In call to configurable")
    ]
    if not lines:
        return type(error).__name__
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0]} ({'; '.join(lines[1:])})"


def _show_traceback() -> bool:
    try:
        return bool(FLAGS.debug) or FLAGS.verbosity >= 1
    except flags.UnparsedFlagAccessError:
        return False


def fail(tool: str, message: str, exit_code: int = EXIT_ERROR) -> None:
    """Prints ``<tool>: error: <message>`` to stderr and exits with `exit_code`."""
    sys.stderr.write(f"{tool}: error: {message}\n")
    sys.stderr.flush()
    sys.exit(exit_code)


def package_version() -> str:
    """The installed dlss_dist version (``unknown`` when run from a source tree not installed)."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _print_help(tool: str, module_name: str, renamed: Mapping[str, str]) -> None:
    doc = (sys.modules[module_name].__doc__ or "").strip("\n")
    key_module = sys.argv[0] if module_name == "__main__" else module_name
    print(f"{tool}: {doc}\n" if doc else f"USAGE: {tool} [flags]\n")
    print("flags:")
    print(FLAGS.module_help(key_module))
    if renamed:
        old_names = ", ".join(f"--{old} (now --{new})" for old, new in renamed.items())
        print(
            f"\nOld flag names, still accepted with a warning until the next release: {old_names}."
        )
    print("\nTry --helpfull to get a list of all flags (TensorFlow's, absl's, ...).")


def _flag_name(argument: str) -> tuple[str, str | None] | None:
    """``--name=value`` / ``-name`` -> (name, value or None); None for a non-flag argument."""
    if not argument.startswith("-") or argument in ("-", "--"):
        return None
    name, equals, value = argument.lstrip("-").partition("=")
    return name, (value if equals else None)


def _wants_version(arguments: list[str]) -> bool:
    """A bare ``--version`` (not ``--version=7`` or ``--version 7``, dlss-export's old name
    for --export_version)."""
    for index, argument in enumerate(arguments):
        following = arguments[index + 1] if index + 1 < len(arguments) else "-"
        if argument in _VERSION_FLAGS and following.startswith("-"):
            return True
    return False


def rename_deprecated(tool: str, argv: list[str], renamed: Mapping[str, str]) -> list[str]:
    """``argv`` with every old flag name in `renamed` (old -> new) replaced by the new one,
    and one warning line per old name used (stderr).

    Raises:
      flags.Error: an old and a new name were both given.
    """
    if not renamed:
        return argv
    # --flagfile contents count as the command line too.
    arguments = FLAGS.read_flags_from_files(argv[1:], force_gnu=False)
    given = {name for name, _ in filter(None, map(_flag_name, arguments))}
    result = [argv[0]]
    warned = set()
    for index, argument in enumerate(arguments):
        if argument == "--":
            result.extend(arguments[index:])
            break
        parsed = _flag_name(argument)
        name, value = parsed if parsed else (None, None)
        negated = name is not None and name.startswith("no") and name[2:] in renamed
        old = name[2:] if negated else name
        if old not in renamed:
            result.append(argument)
            continue
        new = renamed[old]
        if new in given or f"no{new}" in given:
            raise flags.Error(f"--{old} is the old name of --{new}: give --{new} only")
        if old not in warned:
            warned.add(old)
            sys.stderr.write(
                f"{tool}: warning: --{old} is deprecated, use --{new} "
                "(the old name will be removed in the next release)\n"
            )
        new_name = f"no{new}" if negated else new
        result.append(f"--{new_name}" + (f"={value}" if value is not None else ""))
    return result


@contextlib.contextmanager
def _own_validators_only(key_module: str) -> Iterator[None]:
    """While parsing, the flag checks of other tools imported into this process (a test
    session, a notebook) are set aside: e.g. dlss-eval's required --model is not dlss-train's,
    and dlss-train's "at least one --gin_file" is not dlss-demo's, though both share the flag.

    A check is another tool's when it guards only flags this tool does not own (absl's
    required-flag checks), or when its function was written in another tool's module (so a
    tool's checks are functions of its own module, never a builtin such as `bool`). Left in
    place: another tool's *required* mark on a flag both share (absl writes those checks).
    """
    own = {flag.name for flag in FLAGS.get_key_flags_for_module(key_module)}
    modules = {*FLAGS.flags_by_module_dict(), *FLAGS.key_flags_by_module_dict()}
    other_tools = {
        module
        for module in modules
        if module != key_module and module.startswith((f"{PACKAGE}.", "beam_jobs.", "__main__"))
    } - {__name__, f"{__name__}.shared_flags"}

    def theirs(validator) -> bool:
        checker = getattr(validator, "checker", None)
        if getattr(checker, "__module__", None) in other_tools:
            return True
        return not set(validator.get_flags_names()) <= own

    ours = own | {
        flag.name for module in other_tools for flag in FLAGS.get_key_flags_for_module(module)
    }  # absl's own flags (--verbosity, ...) keep their checks
    saved = {name: FLAGS[name].validators for name in ours if name in FLAGS}
    for name, validators in saved.items():
        FLAGS[name].validators = [v for v in validators if not theirs(v)]
    try:
        yield
    finally:
        for name, validators in saved.items():
            FLAGS[name].validators = validators


def _flags_parser(
    tool: str, module_name: str, renamed: Mapping[str, str], pass_unknown_flags: bool
) -> Callable[[list[str]], list[str]]:
    """absl flags parser: our own --help and --version, old flag names, and flag errors as
    one line with exit 2."""
    key_module = sys.argv[0] if module_name == "__main__" else module_name

    def parse(argv: list[str]) -> list[str]:
        arguments = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
        if any(argument in _HELP_FLAGS for argument in arguments):
            _print_help(tool, module_name, renamed)
            sys.exit(0)
        if any(argument in ("--helpfull", "-helpfull") for argument in arguments):
            app.usage(writeto_stdout=True)  # absl's list of every flag, but exit 0 (absl: 1)
            sys.exit(0)
        if _wants_version(arguments):
            print(f"{tool} {package_version()}")
            sys.exit(0)
        if FLAGS.is_parsed():  # run before in this process (tests): start from the defaults
            FLAGS.unparse_flags()
        try:
            argv = rename_deprecated(tool, list(argv), renamed)
            with _own_validators_only(key_module):
                return FLAGS(argv, known_only=pass_unknown_flags)
        except flags.Error as error:
            fail(tool, f"{one_line(error)} (see {tool} --help)", EXIT_USAGE)
        return []  # not reached

    return parse


def run_tool(
    tool: str,
    main: Callable[[Sequence[str]], object],
    module_name: str,
    *,
    args: Sequence[str] | None = None,
    renamed: Mapping[str, str] | None = None,
    pass_unknown_flags: bool = False,
) -> None:
    """Runs `main` under absl with this package's help and error conventions (module doc).

    Args:
      tool: the console script's name, e.g. ``dlss-upscale``; prefixes every error line.
      main: the absl main; it gets the arguments left after flag parsing.
      module_name: ``__name__`` of the module defining the tool's flags; its docstring and
        flags are what ``--help`` shows.
      args: the command-line arguments, without the program name (default:
        ``sys.argv[1:]``); tests run a tool in their own process with them.
      renamed: old flag name -> new name, for names kept one release as deprecated aliases.
      pass_unknown_flags: hand flags that are not absl's to `main` (after the program name)
        instead of refusing them; `main` checks them (dlss-preprocess: Beam's options).
    """
    key_module = sys.argv[0] if module_name == "__main__" else module_name
    FLAGS.register_key_flag_for_module(key_module, FLAGS["debug"])
    FLAGS.register_key_flag_for_module(key_module, FLAGS["verbosity"])  # --verbosity=1: internals
    renamed = dict(renamed or {})

    def guarded_main(argv: Sequence[str]) -> object:
        if len(argv) > 1 and not pass_unknown_flags:
            fail(tool, f"unexpected arguments {list(argv[1:])} (see {tool} --help)", EXIT_USAGE)
        try:
            return main(argv)
        except app.UsageError as error:
            _maybe_traceback()
            fail(tool, f"{one_line(error)} (see {tool} --help)", EXIT_USAGE)
        except KeyboardInterrupt:
            _maybe_traceback()
            fail(tool, "interrupted", EXIT_INTERRUPTED)
        except Exception as error:
            if not is_user_error(error):
                raise
            _maybe_traceback()
            fail(tool, one_line(error), int(getattr(error, "exit_code", EXIT_ERROR)))
        return None

    app.run(
        guarded_main,
        argv=None if args is None else [tool, *args],
        flags_parser=_flags_parser(tool, module_name, renamed, pass_unknown_flags),
    )


def _maybe_traceback() -> None:
    if _show_traceback():
        traceback.print_exc()
