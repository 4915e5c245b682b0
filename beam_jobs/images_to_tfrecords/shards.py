"""Exactly sharded, byte-deterministic TFRecord files.

Why we frame TFRecords ourselves instead of using ``beam.io.WriteToTFRecord``: the
dataset is a TFDS dataset, whose readers need the shard of every example fixed and its
length recorded (``dataset_info.json``), and we promise the same bytes whatever the
runner, worker count or bundle split. ``WriteToTFRecord`` picks shards by bundle and
write order and cannot name files in TFDS's template, and ``tf.io.TFRecordWriter``
would import TensorFlow (seconds of start-up) in every Beam worker. The format is
four fields per record, framed by `dlss_dist.data.schema.tfrecord_frame` (the one
implementation, which `dlss_dist.data.verify` checks against).
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import uuid
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from dlss_dist.data import schema

TMP_DIR = "_tmp"  # under the staging folder: shards being written


def shard_for_key(key: str, num_shards: int) -> int:
    """The shard of an example (a hash independent of the split hash)."""
    digest = hashlib.sha256(f"shard:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def default_num_shards(num_examples: int, examples_per_shard: int) -> int:
    """About ``examples_per_shard`` examples per shard, at least one shard."""
    return max(1, math.ceil(num_examples / examples_per_shard))


def write_tfrecord_file(path: str, records: Iterable[bytes]) -> int:
    """Writes records to ``path`` (any Beam filesystem) in TFRecord format; returns bytes."""
    num_bytes = 0
    with FileSystems.create(
        path, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
    ) as f:
        for record in records:
            framed = schema.tfrecord_frame(record)
            f.write(framed)
            num_bytes += len(framed)
    return num_bytes


def write_atomically(directory: str, final: str, write) -> int:
    """Calls ``write(tmp_path)`` on a unique temporary name, then renames it to ``final``.

    A retried or speculative bundle never clobbers a file another attempt is still
    writing, and the rename makes the last one win whole.
    """
    tmp = posixpath.join(directory, TMP_DIR, f"{posixpath.basename(final)}.{uuid.uuid4().hex}")
    result = write(tmp)
    if FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([tmp], [final])
    return result


class _AssignShard(beam.DoFn):
    def __init__(self, num_shards: int | None, examples_per_shard: int):
        self._num_shards = num_shards
        self._examples_per_shard = examples_per_shard

    def process(self, element, counts):
        split, key, serialized = element
        num_shards = self._num_shards or default_num_shards(counts[split], self._examples_per_shard)
        yield (split, shard_for_key(key, num_shards), num_shards), (key, serialized)


class _WriteShard(beam.DoFn):
    """Writes one shard sorted by key (the only place a shard's records are held)."""

    def __init__(self, output_dir: str, name: str):
        self._output_dir = output_dir
        self._name = name
        self._bytes = Metrics.counter("dlss_preprocess", "bytes_written")
        self._held = Metrics.distribution("dlss_preprocess", "records_held_per_group")

    def process(self, element):
        (split, shard, num_shards), records = element
        records = sorted(records)
        self._held.update(len(records))
        final = schema.shard_path(self._output_dir, self._name, split, shard, num_shards)
        num_bytes = write_atomically(
            self._output_dir,
            final,
            lambda tmp: write_tfrecord_file(tmp, (serialized for _, serialized in records)),
        )
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

    The shard of an example is a stable hash of its key and each shard is sorted by key,
    so the files are byte-identical whatever the runner, worker count or bundle split.
    ``num_shards`` (same for every split) or about ``examples_per_shard`` per shard.
    Output: one small dict per written shard (split, shard, num_shards, num_examples,
    num_bytes); shards that hashing left empty are written by the manifest step.
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
