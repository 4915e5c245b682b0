"""The job's typed options, :class:`JobOptions`, and the folders each ``--source`` reads.

The command line is built from these (``dlss-preprocess``'s flags are the fields below, with
their help, choices and bounds from each field's metadata), so this module imports neither
Apache Beam nor TensorFlow: ``dlss-preprocess --help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from dlss_dist import imaging

# --source -> {folder flag: help}; each folder is given as JobOptions.inputs[flag]. The source
# classes (sources.SOURCES) take their folders from here.
SOURCE_FOLDERS: dict[str, dict[str, str]] = {
    "folder": {"input_dir": "folder source: the root searched recursively"},
    "paired": {
        "lr_dir": "paired source: low-resolution images",
        "hr_dir": "paired source: high-resolution images (same paths)",
    },
    "celeba": {"celeba_dir": "celeba source: holds img_align_celeba/ and list_eval_partition.txt"},
}


def _flag(help_text: str, **metadata) -> dict:
    """A field's command-line description: help, and optionally ``choices`` or ``minimum``."""
    return {"help": help_text, **metadata}


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """Everything the job needs; ``inputs`` maps the source's folder flags to paths.

    Example: ``JobOptions(source="folder", inputs={"input_dir": "photos"},
    output_dir="dataset", scale=2, hr_size=32)``. ``beam_args`` are Beam pipeline
    options (``--runner``, ``--direct_num_workers``, Dataflow's ``--project`` ...).
    Each field with a ``help`` in its metadata is a ``dlss-preprocess`` flag of that name;
    ``inputs`` are the folder flags of :data:`SOURCE_FOLDERS`.
    """

    source: str = dataclasses.field(
        metadata=_flag("where the images come from", choices=tuple(sorted(SOURCE_FOLDERS)))
    )
    output_dir: str = dataclasses.field(metadata=_flag("the dataset folder to write"))
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    name: str = dataclasses.field(
        default="dlss_sr", metadata=_flag("dataset name, the shard prefix")
    )
    scale: int = dataclasses.field(default=4, metadata=_flag("HR/LR ratio: 2, 4, 8 ..."))
    hr_size: int = dataclasses.field(
        default=128,
        metadata=_flag(
            "side of the square HR image (folder/celeba); minimum HR side (paired)", minimum=1
        ),
    )
    patches_per_image: int = dataclasses.field(
        default=0,
        metadata=_flag(
            "folder source: N random hr_size patches per photo at native resolution instead "
            "of one resized centre crop",
            minimum=0,
        ),
    )
    split_ratios: tuple[float, float, float] = dataclasses.field(
        default=(0.9, 0.05, 0.05),
        metadata=_flag("train,validation,test fractions for the folder and paired sources"),
    )
    num_shards: int | None = dataclasses.field(
        default=None,
        metadata=_flag("shards per split (default: about --examples_per_shard each)", minimum=1),
    )
    examples_per_shard: int = dataclasses.field(
        default=1000,
        metadata=_flag("examples per shard, when --num_shards is not given", minimum=1),
    )
    alpha: str = dataclasses.field(
        default="white",
        metadata=_flag(
            "transparent pixels: composite on white, or reject the image",
            choices=imaging.ALPHA_POLICIES,
        ),
    )
    max_pixels: int = dataclasses.field(
        default=imaging.DEFAULT_MAX_PIXELS,
        metadata=_flag("reject images with more pixels (decompression-bomb guard)", minimum=1),
    )
    overwrite: bool = dataclasses.field(
        default=False,
        metadata=_flag(
            "replace a dataset already in --output_dir (only once the new one is complete)"
        ),
    )
    beam_args: tuple[str, ...] = ()
