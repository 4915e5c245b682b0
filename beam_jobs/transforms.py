"""Beam DoFns and PTransforms of the images → LR/HR TFRecords job.

Read → decode/validate → (pair) → crop/degrade → encode, with every input that cannot
become an example sent to a tagged ``rejects`` output instead of being dropped, then
written as exactly sharded, byte-deterministic TFRecord files plus TFDS metadata,
``manifest.json`` and ``rejects.jsonl`` (see :class:`WriteDatasetMetadata`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import posixpath
import struct
import uuid
from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from absl import logging
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from dlss_dist import imaging
from dlss_dist.data import schema

REJECTS_TAG = "rejects"
WRITTEN_TAG = "written"
UNASSIGNED_SPLIT = "unassigned"  # CelebA files that the partition file does not list
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CELEBA_IMAGES = "img_align_celeba"
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_SPLITS = {"0": "train", "1": "validation", "2": "test"}
TMP_DIR = "_tmp"  # under output_dir; removed when the job finishes


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
    """What turns one input into examples (all of it goes into manifest.json)."""

    source: str  # "folder" | "paired" | "celeba"
    scale: int
    hr_size: int
    patches_per_image: int = 0  # folder only: 0 = one centre crop resized to hr_size
    alpha: str = "white"
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS


class SourceItem(NamedTuple):
    """One input: a file (or an LR/HR pair) with its stable key and split.

    ``reject_reason``/``reject_message`` are set when the input is already known to be
    unusable while listing (e.g. an LR file without its HR file).
    """

    key: str
    split: str
    hr_path: str | None
    lr_path: str | None = None
    reject_reason: str | None = None
    reject_message: str | None = None


def stable_fraction(text: str, salt: str) -> float:
    """A number in [0, 1) that depends only on ``text`` and ``salt`` (not on the process)."""
    digest = hashlib.sha256(f"{salt}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_for_key(key: str, split_ratios: tuple[float, float, float]) -> str:
    """Assigns train/validation/test from a stable hash of ``key``.

    ``split_ratios`` need not be normalised; a zero ratio means the split gets nothing.
    """
    total = sum(split_ratios)
    point = stable_fraction(key, "split") * total
    cumulative = 0.0
    for name, ratio in zip(("train", "validation", "test"), split_ratios, strict=True):
        cumulative += ratio
        if point < cumulative:
            return name
    return "test" if split_ratios[2] > 0 else ("validation" if split_ratios[1] > 0 else "train")


def shard_for_key(key: str, num_shards: int) -> int:
    """The shard of an example (a hash independent of the split hash)."""
    digest = hashlib.sha256(f"shard:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def default_num_shards(num_examples: int, examples_per_shard: int) -> int:
    """About ``examples_per_shard`` examples per shard, at least one shard."""
    return max(1, math.ceil(num_examples / examples_per_shard))


def normalize_root(path: str) -> str:
    """Strips trailing separators so relative keys are computed consistently."""
    return path.rstrip("/") if len(path) > 1 else path


def relative_key(path: str, root: str) -> str:
    """``path`` relative to ``root`` with forward slashes: the example's stable id."""
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path} is not under {root}")
    return path[len(prefix) :].replace("\\", "/")


def is_image_name(relative: str) -> bool:
    """True for a visible file with an image extension (hidden files are skipped)."""
    parts = relative.split("/")
    if any(part.startswith(".") for part in parts):
        return False
    return relative.lower().endswith(IMAGE_EXTENSIONS)


class _KeyImageFiles(beam.DoFn):
    """Turns matched file metadata into ``(key, path)``, counting files that are skipped."""

    def __init__(self, root: str, key_prefix: str = ""):
        self._root = root
        self._key_prefix = key_prefix
        self._listed = Metrics.counter("dlss_preprocess", "files_listed")
        self._ignored = Metrics.counter("dlss_preprocess", "files_ignored_not_image")

    def process(self, metadata):
        key = relative_key(metadata.path, self._root)
        if not is_image_name(key):
            self._ignored.inc()
            return
        self._listed.inc()
        yield self._key_prefix + key, metadata.path


class ListImageFiles(beam.PTransform):
    """Every image file under ``root`` (recursively) as ``(key, path)``.

    ``key`` is the path relative to ``root`` (with ``key_prefix`` in front). Files
    without an image extension and hidden files are counted and skipped.
    """

    def __init__(self, root: str, key_prefix: str = "", recursive: bool = True):
        super().__init__()
        self._root = normalize_root(root)
        self._key_prefix = key_prefix
        self._recursive = recursive

    def expand(self, pbegin):
        pattern = posixpath.join(self._root, "**" if self._recursive else "*")
        return (
            pbegin
            | "Pattern" >> beam.Create([pattern])
            | "Match" >> fileio.MatchAll()
            | "Key" >> beam.ParDo(_KeyImageFiles(self._root, self._key_prefix))
        )


class _PairFiles(beam.DoFn):
    """Joins LR and HR files by relative path; a file without its partner is rejected."""

    def __init__(self, split_ratios):
        self._split_ratios = tuple(split_ratios)

    def process(self, element):
        key, grouped = element
        lr_paths = sorted(grouped["lr"])
        hr_paths = sorted(grouped["hr"])
        split = split_for_key(key, self._split_ratios)
        lr_path = lr_paths[0] if lr_paths else None
        hr_path = hr_paths[0] if hr_paths else None
        if hr_path is None:
            yield SourceItem(
                key, split, None, lr_path, "missing_hr", "LR file has no HR file with that path"
            )
        elif lr_path is None:
            yield SourceItem(
                key, split, hr_path, None, "missing_lr", "HR file has no LR file with that path"
            )
        else:
            yield SourceItem(key, split, hr_path, lr_path)


def _parse_partition_line(line: str):
    """``"000001.jpg 0"`` → ``("img_align_celeba/000001.jpg", "train")``."""
    fields = line.split()
    if not fields:
        return
    if len(fields) != 2 or fields[1] not in CELEBA_SPLITS:
        raise ValueError(f"bad line in {CELEBA_PARTITION}: {line!r} (expected '<file>.jpg 0|1|2')")
    yield f"{CELEBA_IMAGES}/{fields[0]}", CELEBA_SPLITS[fields[1]]


class _JoinPartition(beam.DoFn):
    """Joins CelebA files with the partition file's split of each."""

    def process(self, element):
        key, grouped = element
        paths = sorted(grouped["file"])
        splits = sorted(set(grouped["partition"]))
        if len(splits) > 1:
            raise ValueError(f"{CELEBA_PARTITION} puts {key} in several splits: {splits}")
        if not splits:
            yield SourceItem(
                key,
                UNASSIGNED_SPLIT,
                paths[0],
                None,
                "unlisted",
                f"the file is not listed in {CELEBA_PARTITION}",
            )
        elif not paths:
            yield SourceItem(
                key, splits[0], None, None, "missing_file", f"listed in {CELEBA_PARTITION}"
            )
        else:
            yield SourceItem(key, splits[0], paths[0])


class ReadFolder(beam.PTransform):
    """``--source=folder``: every image under ``input_dir``, split by a hash of its key."""

    def __init__(self, input_dir: str, split_ratios):
        super().__init__()
        self._input_dir = input_dir
        self._split_ratios = tuple(split_ratios)

    def expand(self, pbegin):
        ratios = self._split_ratios
        return (
            pbegin
            | "ListImages" >> ListImageFiles(self._input_dir)
            | "AssignSplit"
            >> beam.MapTuple(lambda key, path: SourceItem(key, split_for_key(key, ratios), path))
        )


class ReadPaired(beam.PTransform):
    """``--source=paired``: LR and HR folders matched by relative path."""

    def __init__(self, lr_dir: str, hr_dir: str, split_ratios):
        super().__init__()
        self._lr_dir = lr_dir
        self._hr_dir = hr_dir
        self._split_ratios = tuple(split_ratios)

    def expand(self, pbegin):
        lr = pbegin | "ListLR" >> ListImageFiles(self._lr_dir)
        hr = pbegin | "ListHR" >> ListImageFiles(self._hr_dir)
        return (
            {"lr": lr, "hr": hr}
            | "JoinByPath" >> beam.CoGroupByKey()
            | "Pair" >> beam.ParDo(_PairFiles(self._split_ratios))
        )


class ReadCelebA(beam.PTransform):
    """``--source=celeba``: ``img_align_celeba/*.jpg`` split by ``list_eval_partition.txt``."""

    def __init__(self, celeba_dir: str):
        super().__init__()
        self._celeba_dir = normalize_root(celeba_dir)

    def expand(self, pbegin):
        files = pbegin | "ListImages" >> ListImageFiles(
            posixpath.join(self._celeba_dir, CELEBA_IMAGES),
            key_prefix=f"{CELEBA_IMAGES}/",
            recursive=False,
        )
        partition = (
            pbegin
            | "ReadPartition"
            >> beam.io.ReadFromText(posixpath.join(self._celeba_dir, CELEBA_PARTITION))
            | "ParsePartition" >> beam.FlatMap(_parse_partition_line)
        )
        return (
            {"file": files, "partition": partition}
            | "JoinPartition" >> beam.CoGroupByKey()
            | "Split" >> beam.ParDo(_JoinPartition())
        )


def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as f:
        return f.read()


def make_hr(image: np.ndarray, config: ExampleConfig) -> np.ndarray:
    """The centre square crop resized to ``hr_size`` (``folder`` and ``celeba`` sources).

    Raises:
      ImageRejected("too_small"): when the square is smaller than ``hr_size``.
    """
    square = imaging.center_crop_square(image)
    side = square.shape[0]
    if side < config.hr_size:
        height, width = image.shape[:2]
        raise imaging.ImageRejected(
            "too_small",
            f"{width}x{height}: the centre square ({side}px) is smaller than "
            f"--hr_size={config.hr_size}",
        )
    return imaging.imresize(square, config.hr_size, config.hr_size)


def make_patches(image: np.ndarray, key: str, config: ExampleConfig) -> list[np.ndarray]:
    """``patches_per_image`` HR crops of ``hr_size`` at native resolution.

    Positions come from a generator seeded by a hash of ``key``, so reruns give the same
    patches.
    """
    height, width = image.shape[:2]
    if min(height, width) < config.hr_size:
        raise imaging.ImageRejected(
            "too_small", f"{width}x{height} is smaller than --hr_size={config.hr_size}"
        )
    seed = int(stable_fraction(key, "patches") * 2**63)
    rng = np.random.default_rng(seed)
    patches = []
    for _ in range(config.patches_per_image):
        top = int(rng.integers(0, height - config.hr_size + 1))
        left = int(rng.integers(0, width - config.hr_size + 1))
        patches.append(image[top : top + config.hr_size, left : left + config.hr_size])
    return patches


def make_pair(hr: np.ndarray, lr: np.ndarray, config: ExampleConfig) -> None:
    """Validates a given LR/HR pair (``paired`` source).

    Raises:
      ImageRejected: ``scale_mismatch`` unless HR is exactly ``scale`` times LR in
        both dimensions; ``too_small`` when HR is smaller than ``hr_size``.
    """
    hr_height, hr_width = hr.shape[:2]
    lr_height, lr_width = lr.shape[:2]
    if (
        hr_height % lr_height
        or hr_width % lr_width
        or hr_height // lr_height != hr_width // lr_width
        or hr_height // lr_height != config.scale
    ):
        raise imaging.ImageRejected(
            "scale_mismatch",
            f"HR {hr_width}x{hr_height} is not {config.scale}x LR {lr_width}x{lr_height} in "
            "both dimensions",
        )
    if min(hr_height, hr_width) < config.hr_size:
        raise imaging.ImageRejected(
            "too_small", f"HR {hr_width}x{hr_height} is smaller than --hr_size={config.hr_size}"
        )


def examples_for_item(item: SourceItem, config: ExampleConfig) -> list[tuple[str, bytes]]:
    """All ``(key, serialized_example)`` of one input (the per-image work of the job).

    Raises:
      ImageRejected: when the input cannot become an example.
    """
    decode = {"alpha": config.alpha, "max_pixels": config.max_pixels}
    image = imaging.decode_image(_read_bytes(item.hr_path), **decode)
    if config.source == "paired":
        try:
            lr = imaging.decode_image(_read_bytes(item.lr_path), **decode)
        except imaging.ImageRejected as e:
            raise imaging.ImageRejected(e.reason, f"LR file: {e}") from e
        make_pair(image, lr, config)
        return [(item.key, schema.serialize_example(lr=lr, hr=image, key=item.key))]
    if config.patches_per_image:
        out = []
        for index, hr in enumerate(make_patches(image, item.key, config)):
            key = f"{item.key}#p{index}"
            lr = imaging.degrade_bicubic(hr, config.scale)
            out.append((key, schema.serialize_example(lr=lr, hr=hr, key=key)))
        return out
    hr = make_hr(image, config)
    lr = imaging.degrade_bicubic(hr, config.scale)
    return [(item.key, schema.serialize_example(lr=lr, hr=hr, key=item.key))]


def reject_record(item: SourceItem, reason: str, message: str) -> dict:
    """One line of rejects.jsonl."""
    path = item.hr_path or item.lr_path
    return {
        "key": item.key,
        "split": item.split,
        "reason": reason,
        "message": message,
        "path": path,
    }


class MakeExamples(beam.DoFn):
    """Decode → validate → crop → degrade → encode.

    Main output: ``(split, key, serialized_example)``. Tagged outputs: ``rejects``
    (dicts for rejects.jsonl) and ``written`` (the split of each input that produced
    examples, to prove read = written + rejected).
    """

    def __init__(self, config: ExampleConfig):
        self._config = config
        self._read = Metrics.counter("dlss_preprocess", "inputs_read")
        self._written = Metrics.counter("dlss_preprocess", "inputs_written")
        self._examples = Metrics.counter("dlss_preprocess", "examples_written")
        self._rejected = Metrics.counter("dlss_preprocess", "inputs_rejected")

    def process(self, item: SourceItem):
        self._read.inc()
        if item.reject_reason:
            self._rejected.inc()
            Metrics.counter("dlss_preprocess", f"rejected_{item.reject_reason}").inc()
            yield beam.pvalue.TaggedOutput(
                REJECTS_TAG, reject_record(item, item.reject_reason, item.reject_message or "")
            )
            return
        try:
            examples = examples_for_item(item, self._config)
        except imaging.ImageRejected as e:
            self._rejected.inc()
            Metrics.counter("dlss_preprocess", f"rejected_{e.reason}").inc()
            yield beam.pvalue.TaggedOutput(REJECTS_TAG, reject_record(item, e.reason, str(e)))
            return
        self._written.inc()
        self._examples.inc(len(examples))
        yield beam.pvalue.TaggedOutput(WRITTEN_TAG, item.split)
        for key, serialized in examples:
            yield item.split, key, serialized


class _AssignShard(beam.DoFn):
    def __init__(self, num_shards: int | None, examples_per_shard: int):
        self._num_shards = num_shards
        self._examples_per_shard = examples_per_shard

    def process(self, element, counts):
        split, key, serialized = element
        num_shards = self._num_shards or default_num_shards(counts[split], self._examples_per_shard)
        yield (split, shard_for_key(key, num_shards), num_shards), (key, serialized)


@functools.lru_cache(maxsize=1)
def _crc32c():
    import crcmod.predefined  # installed by apache-beam[tfrecord]; a C extension

    return crcmod.predefined.mkPredefinedCrcFun("crc-32c")


def _masked_crc32c(data: bytes) -> bytes:
    crc = _crc32c()(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord_frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(record))
    return length + _masked_crc32c(length) + record + _masked_crc32c(record)


def write_tfrecord_file(path: str, records: Iterable[bytes]) -> int:
    """Writes records to ``path`` (any Beam filesystem) in TFRecord format; returns bytes."""
    num_bytes = 0
    with FileSystems.create(
        path, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
    ) as f:
        for record in records:
            framed = tfrecord_frame(record)
            f.write(framed)
            num_bytes += len(framed)
    return num_bytes


class _WriteShard(beam.DoFn):
    """Writes one shard sorted by key: to a temporary name, then renamed into place."""

    def __init__(self, output_dir: str, name: str):
        self._output_dir = output_dir
        self._name = name
        self._bytes = Metrics.counter("dlss_preprocess", "bytes_written")

    def process(self, element):
        (split, shard, num_shards), records = element
        records = sorted(records)
        final = schema.shard_path(self._output_dir, self._name, split, shard, num_shards)
        # A unique temporary name: a retried or speculative bundle never clobbers a file
        # another attempt is still writing, and the rename makes the last one win whole.
        tmp = posixpath.join(
            self._output_dir, TMP_DIR, f"{posixpath.basename(final)}.{uuid.uuid4().hex}"
        )
        num_bytes = write_tfrecord_file(tmp, (serialized for _, serialized in records))
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([tmp], [final])
        self._bytes.inc(num_bytes)
        yield {
            "split": split,
            "shard": shard,
            "num_shards": num_shards,
            "num_examples": len(records),
            "num_bytes": num_bytes,
        }


class WriteShards(beam.PTransform):
    """Writes ``(split, key, serialized)`` as ``<name>-<split>.tfrecord-SSSSS-of-NNNNN``.

    The shard of an example is a stable hash of its key, each shard is sorted by key, so
    the files are byte-identical whatever the runner, worker count or bundle split.
    ``num_shards`` (same for every split) or about ``examples_per_shard`` per shard.
    Output: one dict per written shard (split, shard, num_shards, num_examples, num_bytes).
    """

    def __init__(
        self, output_dir: str, name: str, num_shards: int | None, examples_per_shard: int = 1000
    ):
        super().__init__()
        self._output_dir = output_dir
        self._name = name
        self._num_shards = num_shards
        self._examples_per_shard = examples_per_shard

    def expand(self, examples):
        counts = (
            examples
            | "SplitOf" >> beam.Map(lambda example: example[0])
            | "CountPerSplit" >> beam.combiners.Count.PerElement()
        )
        return (
            examples
            | "AssignShard"
            >> beam.ParDo(
                _AssignShard(self._num_shards, self._examples_per_shard),
                counts=beam.pvalue.AsDict(counts),
            )
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self._output_dir, self._name))
        )


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(
        path, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED
    ) as f:
        f.write(text.encode("utf-8"))


class WriteManifest(beam.DoFn):
    """Runs once, after every shard is written: ``manifest.json`` and ``rejects.jsonl``.

    Also writes an empty file for any shard that hashing left without examples (TFDS
    expects every shard file to exist). Splits without examples get ``num_shards`` 0
    and a line in the manifest's ``warnings``; the launcher leaves them out of the TFDS
    metadata (TFDS cannot describe an empty split). Raises if read != written + rejected
    for any split, which would mean an input was lost.
    """

    def __init__(self, output_dir: str, name: str, manifest_base: dict):
        self._output_dir = output_dir
        self._name = name
        self._manifest_base = manifest_base

    def process(self, _, shards, rejects, read_counts, written_counts):
        shards_by_split: dict[str, dict[int, dict]] = {}
        for info in shards:
            shards_by_split.setdefault(info["split"], {})[info["shard"]] = info
        rejects = sorted(rejects, key=lambda r: (r["key"], r["reason"]))
        rejected_counts: dict[str, int] = {}
        by_reason: dict[str, int] = {}
        for record in rejects:
            rejected_counts[record["split"]] = rejected_counts.get(record["split"], 0) + 1
            by_reason[record["reason"]] = by_reason.get(record["reason"], 0) + 1

        splits_manifest = {}
        warnings = []
        for split in schema.SPLITS:
            written_shards = shards_by_split.get(split, {})
            num_shards = next(iter(written_shards.values()))["num_shards"] if written_shards else 0
            lengths = []
            num_bytes = 0
            for shard in range(num_shards):
                info = written_shards.get(shard)
                if info is None:
                    path = schema.shard_path(self._output_dir, self._name, split, shard, num_shards)
                    write_tfrecord_file(path, [])
                    lengths.append(0)
                else:
                    lengths.append(info["num_examples"])
                    num_bytes += info["num_bytes"]
            read = read_counts.get(split, 0)
            written = written_counts.get(split, 0)
            rejected = rejected_counts.get(split, 0)
            if read != written + rejected:
                raise RuntimeError(
                    f"split {split}: read {read} != written {written} + rejected {rejected}"
                )
            splits_manifest[split] = {
                "read": read,
                "written": written,
                "rejected": rejected,
                "examples": sum(lengths),
                "num_shards": num_shards,
                "shard_lengths": lengths,
                "num_bytes": num_bytes,
            }
            if not sum(lengths):
                warnings.append(
                    f"split '{split}' has no examples ({read} inputs read, {rejected} rejected); "
                    "it is left out of dataset_info.json"
                )
        unassigned_read = read_counts.get(UNASSIGNED_SPLIT, 0)
        unassigned_rejected = rejected_counts.get(UNASSIGNED_SPLIT, 0)
        if unassigned_read != unassigned_rejected:
            raise RuntimeError(f"{unassigned_read - unassigned_rejected} unassigned inputs lost")
        manifest = dict(self._manifest_base)
        manifest.update(
            {
                "splits": splits_manifest,
                "unassigned": {"read": unassigned_read, "rejected": unassigned_rejected},
                "totals": {
                    "read": sum(read_counts.values()),
                    "written": sum(written_counts.values()),
                    "rejected": len(rejects),
                    "examples": sum(s["examples"] for s in splits_manifest.values()),
                },
                "rejected_by_reason": dict(sorted(by_reason.items())),
                "warnings": warnings,
            }
        )
        _write_text(
            posixpath.join(self._output_dir, schema.REJECTS_FILE),
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects),
        )
        _write_text(
            posixpath.join(self._output_dir, schema.MANIFEST_FILE),
            json.dumps(manifest, indent=2, sort_keys=True) + "\n",
        )
        for warning in warnings:
            logging.warning("%s", warning)
        yield manifest


def build_dataset(
    items,
    *,
    config: ExampleConfig,
    output_dir: str,
    name: str,
    num_shards: int | None,
    manifest_base: dict,
    examples_per_shard: int = 1000,
):
    """Adds the steps after listing (examples, shards, metadata); returns the manifest."""
    pipeline = items.pipeline
    items = items | "Distribute" >> beam.Reshuffle()
    read_counts = (
        items
        | "ReadSplit" >> beam.Map(lambda item: item.split)
        | "CountRead" >> beam.combiners.Count.PerElement()
    )
    results = items | "DecodeDegradeEncode" >> beam.ParDo(MakeExamples(config)).with_outputs(
        REJECTS_TAG, WRITTEN_TAG, main="examples"
    )
    written_counts = results[WRITTEN_TAG] | "CountWritten" >> beam.combiners.Count.PerElement()
    shards = results.examples | "WriteShards" >> WriteShards(
        output_dir, name, num_shards, examples_per_shard
    )
    return (
        pipeline
        | "Finalize" >> beam.Create([None])
        | "WriteManifest"
        >> beam.ParDo(
            WriteManifest(output_dir, name, manifest_base),
            shards=beam.pvalue.AsList(shards),
            rejects=beam.pvalue.AsList(results[REJECTS_TAG]),
            read_counts=beam.pvalue.AsDict(read_counts),
            written_counts=beam.pvalue.AsDict(written_counts),
        )
    )
