"""``dlss-preprocess``: images → sharded LR/HR TFRecords that TFDS loads.

Sources:
  --source=folder --input_dir=D            every image under D; split by a hash of its path
  --source=paired --lr_dir=A --hr_dir=B    LR/HR files matched by relative path
  --source=celeba --celeba_dir=D           D/img_align_celeba/*.jpg + D/list_eval_partition.txt

Every option this module does not know is a Beam pipeline option (``--runner``,
``--direct_num_workers``, ``--direct_running_mode``, Dataflow's ``--project`` ...).

Example:
  dlss-preprocess --source=celeba --celeba_dir=/data/celeba --output_dir=/data/celeba_sr \
      --scale=4 --hr_size=128 --direct_num_workers=2 --direct_running_mode=multi_processing
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import sys
import time

import apache_beam as beam
from absl import logging
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import transforms
from dlss_dist import imaging

SOURCES = ("folder", "paired", "celeba")
DEGRADATION_PAIRED = "paired_external"  # LR files come from the user, not from imaging.py
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Files a dataset in output_dir consists of (removed by --overwrite).
_DATASET_FILES = (
    "manifest.json",
    "rejects.jsonl",
    "dataset_info.json",
    "features.json",
    "metadata.json",
)


class PreflightError(ValueError):
    """A problem with the job's arguments or inputs, found before any work is done."""


def _split_ratios(text: str) -> tuple[float, float, float]:
    try:
        ratios = tuple(float(x) for x in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--split_ratios must be 3 numbers: {text!r}") from e
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise argparse.ArgumentTypeError(
            f"--split_ratios must be 3 non-negative numbers with a positive sum "
            f"(train,validation,test), got {text!r}"
        )
    return ratios


def build_parser() -> argparse.ArgumentParser:
    """The job's own options (everything else goes to Beam's PipelineOptions)."""
    parser = argparse.ArgumentParser(
        prog="dlss-preprocess",
        description="Turn images into sharded LR/HR TFRecords (a TFDS dataset).",
        epilog="Any other --option is passed to Beam (e.g. --runner, --direct_num_workers).",
    )
    parser.add_argument("--source", choices=SOURCES, required=True)
    parser.add_argument("--input_dir", help="folder source: the root searched recursively")
    parser.add_argument("--lr_dir", help="paired source: low-resolution images")
    parser.add_argument("--hr_dir", help="paired source: high-resolution images (same paths)")
    parser.add_argument(
        "--celeba_dir", help="celeba source: holds img_align_celeba/ and list_eval_partition.txt"
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--name",
        default="dlss_sr",
        help="dataset name, the prefix of the shard files (default dlss_sr)",
    )
    parser.add_argument("--scale", type=int, default=4, help="HR/LR ratio, a power of 2")
    parser.add_argument(
        "--hr_size",
        type=int,
        default=128,
        help="side of the square HR image (folder/celeba); minimum HR side (paired)",
    )
    parser.add_argument(
        "--patches_per_image",
        type=int,
        default=0,
        help="folder source: take N random hr_size patches per photo at "
        "native resolution instead of one resized centre crop",
    )
    parser.add_argument(
        "--split_ratios",
        type=_split_ratios,
        default=(0.9, 0.05, 0.05),
        help="train,validation,test fractions for folder/paired sources",
    )
    parser.add_argument(
        "--num_shards",
        type=int,
        default=None,
        help="shards per split (default: about --examples_per_shard each)",
    )
    parser.add_argument("--examples_per_shard", type=int, default=1000)
    parser.add_argument(
        "--alpha",
        choices=imaging.ALPHA_POLICIES,
        default="white",
        help="transparent pixels: composite on white, or reject the image",
    )
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=imaging.DEFAULT_MAX_PIXELS,
        help="reject images with more pixels (decompression-bomb guard)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a dataset already in --output_dir"
    )
    return parser


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Splits ``argv`` into the job's options and Beam's pipeline options."""
    return build_parser().parse_known_args(argv)


def _is_local(path: str) -> bool:
    return "://" not in path


def _normalize_dir(path: str) -> str:
    return os.path.abspath(path) if _is_local(path) else transforms.normalize_root(path)


def _has_images(root: str, recursive: bool = True) -> bool:
    pattern = posixpath.join(root, "**" if recursive else "*")
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # noqa: BLE001 - Beam raises BeamIOError for a missing directory
        return False
    return any(
        transforms.is_image_name(transforms.relative_key(m.path, root))
        for m in result.metadata_list
    )


def _existing_dataset_files(output_dir: str) -> list[str]:
    if not FileSystems.exists(output_dir):
        return []
    found = [posixpath.join(output_dir, n) for n in _DATASET_FILES]
    found = [p for p in found if FileSystems.exists(p)]
    try:
        matched = FileSystems.match([posixpath.join(output_dir, "*.tfrecord-*-of-*")])[0]
        found += [m.path for m in matched.metadata_list]
    except Exception:  # noqa: BLE001 - nothing matched
        pass
    return sorted(found)


def preflight(args: argparse.Namespace) -> None:
    """Checks arguments and inputs before any work; raises PreflightError saying what to fix.

    Also normalises the directory arguments in place and, with ``--overwrite``, deletes
    the dataset files already in ``--output_dir``.
    """
    try:
        imaging.check_scale(args.scale)
    except ValueError as e:
        raise PreflightError(f"--scale: {e}") from e
    if args.hr_size < args.scale or args.hr_size % args.scale:
        raise PreflightError(
            f"--hr_size={args.hr_size} must be a positive multiple of --scale={args.scale} "
            f"(e.g. {max(1, round(args.hr_size / args.scale)) * args.scale})"
        )
    if not _NAME_RE.match(args.name):
        raise PreflightError(f"--name={args.name!r} must match {_NAME_RE.pattern}")
    if args.num_shards is not None and args.num_shards < 1:
        raise PreflightError(f"--num_shards must be >= 1, got {args.num_shards}")
    if args.examples_per_shard < 1:
        raise PreflightError(f"--examples_per_shard must be >= 1, got {args.examples_per_shard}")
    if args.max_pixels < 1:
        raise PreflightError(f"--max_pixels must be >= 1, got {args.max_pixels}")
    if args.patches_per_image < 0:
        raise PreflightError(f"--patches_per_image must be >= 0, got {args.patches_per_image}")
    if args.patches_per_image and args.source != "folder":
        raise PreflightError("--patches_per_image only applies to --source=folder")

    needed = {"folder": ("input_dir",), "paired": ("lr_dir", "hr_dir"), "celeba": ("celeba_dir",)}
    for source, flags in needed.items():
        for flag in flags:
            value = getattr(args, flag)
            if source == args.source and not value:
                raise PreflightError(f"--source={source} needs --{flag}")
            if source != args.source and value:
                raise PreflightError(f"--{flag} is only used with --source={source}")
    for flag in ("input_dir", "lr_dir", "hr_dir", "celeba_dir"):
        if getattr(args, flag):
            setattr(args, flag, _normalize_dir(getattr(args, flag)))
    args.output_dir = _normalize_dir(args.output_dir)

    if args.source == "celeba":
        images = posixpath.join(args.celeba_dir, transforms.CELEBA_IMAGES)
        if not _has_images(images, recursive=False):
            raise PreflightError(
                f"no images in {images}: --celeba_dir must hold the aligned CelebA images in "
                f"{transforms.CELEBA_IMAGES}/ (img_align_celeba.zip, extracted)"
            )
        partition = posixpath.join(args.celeba_dir, transforms.CELEBA_PARTITION)
        if not FileSystems.exists(partition):
            raise PreflightError(
                f"{partition} is missing: CelebA's splits come from "
                f"{transforms.CELEBA_PARTITION} (Eval/ in the CelebA release); put it there"
            )
    else:
        for flag in ("input_dir",) if args.source == "folder" else ("lr_dir", "hr_dir"):
            root = getattr(args, flag)
            if not FileSystems.exists(root):
                raise PreflightError(f"--{flag}={root} does not exist")
            if not _has_images(root):
                raise PreflightError(
                    f"--{flag}={root} holds no image files "
                    f"({', '.join(transforms.IMAGE_EXTENSIONS)})"
                )

    existing = _existing_dataset_files(args.output_dir)
    if existing and not args.overwrite:
        raise PreflightError(
            f"--output_dir={args.output_dir} already holds a dataset ({len(existing)} files, "
            f"e.g. {posixpath.basename(existing[0])}); pass --overwrite to replace it or "
            "choose another directory"
        )
    if existing:
        logging.info("--overwrite: deleting %d files of the old dataset", len(existing))
        FileSystems.delete(existing)


def manifest_base(args: argparse.Namespace) -> dict:
    """The manifest's fixed part: name, source, scale, hr_size, degradation, parameters."""
    parameters = {k: v for k, v in sorted(vars(args).items())}
    parameters["split_ratios"] = list(args.split_ratios)
    return {
        "name": args.name,
        "source": args.source,
        "scale": args.scale,
        "hr_size": args.hr_size,
        "degradation": (DEGRADATION_PAIRED if args.source == "paired" else imaging.DEGRADATION),
        "parameters": parameters,
        "created_unix": None,  # filled in by run_job; kept out of the byte-compared shards
    }


def build_pipeline(pipeline: beam.Pipeline, args: argparse.Namespace, base: dict):
    """Adds the whole job to ``pipeline`` (arguments already checked by preflight)."""
    if args.source == "folder":
        items = pipeline | "ReadFolder" >> transforms.ReadFolder(args.input_dir, args.split_ratios)
    elif args.source == "paired":
        items = pipeline | "ReadPaired" >> transforms.ReadPaired(
            args.lr_dir, args.hr_dir, args.split_ratios
        )
    else:
        items = pipeline | "ReadCelebA" >> transforms.ReadCelebA(args.celeba_dir)
    config = transforms.ExampleConfig(
        source=args.source,
        scale=args.scale,
        hr_size=args.hr_size,
        patches_per_image=args.patches_per_image,
        alpha=args.alpha,
        max_pixels=args.max_pixels,
    )
    return transforms.build_dataset(
        items,
        config=config,
        output_dir=args.output_dir,
        name=args.name,
        num_shards=args.num_shards,
        manifest_base=base,
        examples_per_shard=args.examples_per_shard,
    )


def write_tfds_metadata(output_dir: str, manifest: dict) -> None:
    """Writes ``dataset_info.json``/``features.json`` for the non-empty splits.

    Shard lengths come from the manifest (counted while writing), so nothing is re-read.
    """
    import tensorflow_datasets as tfds

    from dlss_dist.data import schema

    split_infos = [
        tfds.core.SplitInfo(
            name=split, shard_lengths=info["shard_lengths"], num_bytes=info["num_bytes"]
        )
        for split, info in manifest["splits"].items()
        if info["examples"]
    ]
    tfds.folder_dataset.write_metadata(
        data_dir=output_dir,
        features=schema.features(),
        split_infos=split_infos,
        check_data=False,
        description=(
            f"LR/HR pairs for x{manifest['scale']} super-resolution made by dlss-preprocess "
            f"from a {manifest['source']} source (degradation: {manifest['degradation']})."
        ),
        metadata=tfds.core.MetadataDict(
            scale=manifest["scale"],
            hr_size=manifest["hr_size"],
            degradation=manifest["degradation"],
            source=manifest["source"],
        ),
    )


def beam_options(beam_args: list[str]) -> PipelineOptions:
    """Beam's options; without ``--runner`` the in-process FnApiRunner.

    Beam's DirectRunner would first try to download the Prism runner binary, which
    fails offline and is not what the job is tested on; the FnApiRunner is what it
    falls back to, and it honours ``--direct_num_workers`` and
    ``--direct_running_mode``.
    """
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args = [*beam_args, "--runner=FnApiRunner"]
    return PipelineOptions(beam_args)


def run_job(argv: list[str]) -> dict:
    """Runs the job to completion and returns the manifest it wrote.

    Raises:
      PreflightError: bad arguments or inputs (nothing was written).
      RuntimeError: the job ran but wrote no example at all.
    """
    args, beam_args = parse_args(argv)
    preflight(args)
    base = manifest_base(args)
    base["created_unix"] = int(time.time())
    logging.info(
        "dlss-preprocess %s -> %s; Beam options: %s", args.source, args.output_dir, beam_args
    )
    with beam.Pipeline(options=beam_options(beam_args)) as pipeline:
        build_pipeline(pipeline, args, base)
    tmp_dir = posixpath.join(args.output_dir, transforms.TMP_DIR)
    if FileSystems.exists(tmp_dir):
        FileSystems.delete([tmp_dir])
    with FileSystems.open(posixpath.join(args.output_dir, "manifest.json")) as f:
        manifest = json.load(f)
    if not manifest["totals"]["examples"]:
        raise RuntimeError(
            f"no example was written: all {manifest['totals']['read']} inputs were rejected; "
            f"see {posixpath.join(args.output_dir, 'rejects.jsonl')}"
        )
    write_tfds_metadata(args.output_dir, manifest)
    logging.info("Wrote %s", {s: v["examples"] for s, v in manifest["splits"].items()})
    return manifest


def run(argv: list[str] | None = None) -> None:
    """Console entry point: exits 0 on success, 2 on a pre-flight error, 1 otherwise."""
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    try:
        manifest = run_job(argv)
    except PreflightError as e:
        print(f"dlss-preprocess: error: {e}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as e:
        print(f"dlss-preprocess: error: {e}", file=sys.stderr)
        sys.exit(1)
    summary = {
        "output_dir": manifest["parameters"]["output_dir"],
        "splits": {s: v["examples"] for s, v in manifest["splits"].items()},
        "rejected_by_reason": manifest["rejected_by_reason"],
        "warnings": manifest["warnings"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    run()
