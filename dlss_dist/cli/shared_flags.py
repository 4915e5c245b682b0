"""Flags that several tools share: one definition each, one name and one meaning.

absl allows a flag name to be defined once per process. Each tool runs in its own process,
but a process that imports two tools (the test suite, a notebook) would stop with
DuplicateFlagError at the second ``--model``; here the second tool adopts the first one's
definition instead. The flags count as the calling tool's own (its ``--help`` lists them),
because this module disclaims them.
"""

from __future__ import annotations

from collections.abc import Callable

from absl import flags

flags.disclaim_key_flags()  # a flag defined through here belongs to the tool that asked

MODEL_HELP = (
    "Starter model name, SavedModel, export root, training model_dir, .onnx or .tflite file."
)


def define(define_function: Callable[..., object], name: str, *args, **kwargs) -> None:
    """``define_function(name, *args, **kwargs)`` (an absl ``flags.DEFINE_*``), unless another
    tool imported into this process defined `name` already: then the tool adopts that
    definition as its key flag. Tools sharing a name must give it the same meaning and
    default (a tool wanting another default resolves an empty value in its `main`).

    A ``flag_values`` keyword defines into that FlagValues instead of absl's global one.

    Raises:
      ValueError: `name` is defined already with another default (a programming error).
    """
    flag_values = kwargs.get("flag_values", flags.FLAGS)
    if name in flag_values:
        existing = flag_values[name].default
        default = args[0] if args else kwargs.get("default")
        if existing != default:
            raise ValueError(
                f"--{name} is defined by two tools with different defaults "
                f"({existing!r} and {default!r}): give it one default"
            )
        flags.declare_key_flag(name, flag_values=flag_values)
    else:
        define_function(name, *args, **kwargs)


def define_model() -> None:
    """``--model``: any model `dlss_dist.serving.load_upscaler` takes."""
    define(flags.DEFINE_string, "model", None, MODEL_HELP)


def define_tiling() -> None:
    """``--tile`` and ``--max_memory``: how an `Upscaler` cuts large images."""
    define(
        flags.DEFINE_integer,
        "tile",
        0,
        "Tile side in input pixels (0: automatic, as large as --max_memory allows).",
        lower_bound=0,
    )
    define(
        flags.DEFINE_string,
        "max_memory",
        "2G",  # serving.memory.DEFAULT_MAX_MEMORY, without importing serving to parse flags
        "Peak memory to stay under when tiling automatically (e.g. 1G, 1500M).",
    )
