"""What a command-line tool prints: its own story by default, everyone's internals on request.

At the default verbosity a tool shows the INFO lines of dlss_dist and beam_jobs as plain
sentences, and from other libraries (TensorFlow, Keras, Beam, gRPC, gin) only errors. The C++
runtime's banners (oneDNN, CPU features, dataset-op notes, grappler "remapper failed" lines
logged at ERROR level although nothing failed) are switched off before TensorFlow loads.
`--verbosity=1` (or higher) restores absl's full log format and every library's records.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile

from absl import logging as absl_logging

# The verbosity at which the console shows every library's records in absl's format.
VERBOSE = 1
_OWN_PACKAGES = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), package) + os.sep
    for package in ("dlss_dist", "beam_jobs")
)


def _is_own(record: logging.LogRecord) -> bool:
    # absl's logging functions log through one logger named "absl", so the source file,
    # not the logger name, tells our records from a library's.
    return record.pathname.startswith(_OWN_PACKAGES)


class _OwnStoryFilter(logging.Filter):
    """Passes our records from `level` (INFO) up, and other libraries' only from ERROR up."""

    def __init__(self, level: int = logging.INFO):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or (record.levelno >= self.level and _is_own(record))


class _PlainFormatter(logging.Formatter):
    """`message` for INFO; `warning: message` and `error: message` above it."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


def quiet_native_logs(verbosity: int) -> None:
    """Silences the C++ runtime's log unless asked for; must run before TensorFlow loads
    (it reads the variable once) and is inherited by Beam's worker processes."""
    if verbosity < VERBOSE:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with the C++ runtime's start-up banners (oneDNN, CPU features)
    kept off the console: they are written straight to file descriptor 2 before the native
    log is initialised, so no log level reaches them. If the import fails, what it wrote is
    shown after all."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module("tensorflow")
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def setup(verbosity: int | None = None, *, tensorflow: bool = True) -> None:
    """Configures the console of a command-line tool (call first thing in `main`).

    Args:
      verbosity: absl's `--verbosity` value; None reads it from the parsed flags.
      tensorflow: whether the tool uses TensorFlow (it is then imported here, quietly).
    """
    if verbosity is None:
        verbosity = absl_logging.get_verbosity()
    quiet_native_logs(verbosity)
    if verbosity >= VERBOSE:
        return
    if tensorflow:
        import_tensorflow_quietly()
    handler = show_own_story(logging.INFO)
    # Libraries that log through the root logger before absl's handler is installed would
    # otherwise print through logging.lastResort or a basicConfig handler of their own.
    root = logging.getLogger()
    for other in list(root.handlers):
        if other is not handler:
            root.removeHandler(other)
    logging.captureWarnings(True)
    # A library's warnings module output (Keras, NumPy deprecations) is internals too.
    logging.getLogger("py.warnings").addFilter(_OwnStoryFilter())
    sys.stderr.flush()


def show_own_story(level: int = logging.INFO) -> logging.Handler:
    """Makes absl's handler print our own records from `level` up as plain sentences
    (``warning: ...``) and other libraries' only from ERROR up; returns the handler.

    `setup` calls it with INFO; a tool that tells its story otherwise (dlss-preprocess
    prints its own progress lines) calls it with WARNING, so the warnings a user must see
    (a lock taken over) still reach the console.
    """
    absl_logger = logging.getLogger("absl")
    if absl_logger.getEffectiveLevel() > level:
        absl_logger.setLevel(level)
    handler = absl_logging.get_absl_handler()
    handler.setFormatter(_PlainFormatter())
    for old in [f for f in handler.filters if isinstance(f, _OwnStoryFilter)]:
        handler.removeFilter(old)
    handler.addFilter(_OwnStoryFilter(level))
    return handler
