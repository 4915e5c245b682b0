"""The dataset's accounting: ``rejects.jsonl``, ``manifest.json`` and TFDS's metadata files.

Memory stays bounded whatever the number of inputs: rejects are written by their own sink
in files of about ``per_file`` records (sorted by key within each file, the files in a
fixed order), the counts come from Beam combiners, and the final step only receives one
small dict per shard or rejects file, which it concatenates by streaming.
"""

from __future__ import annotations

import json
import posixpath
import uuid

import apache_beam as beam
from absl import logging
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.images_to_tfrecords import shards
from beam_jobs.images_to_tfrecords.sources import UNASSIGNED_SPLIT
from dlss_dist.data import schema

DATASET_INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"
METADATA_FILE = "metadata.json"
_COPY_CHUNK = 1 << 20


def _create(path: str, mime_type: str = "text/plain"):
    return FileSystems.create(
        path, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED
    )


def write_text(path: str, text: str) -> None:
    with _create(path) as f:
        f.write(text.encode("utf-8"))


class _AssignRejectsFile(beam.DoFn):
    def __init__(self, per_file: int):
        self._per_file = per_file

    def process(self, record, total):
        num_files = shards.default_num_shards(total, self._per_file)
        line = json.dumps(record, sort_keys=True) + "\n"
        index = shards.shard_for_key(record["key"], num_files)
        yield (index, num_files), ((record["key"], record["reason"]), line)


class _WriteRejectsFile(beam.DoFn):
    def __init__(self, output_dir: str):
        self._output_dir = output_dir
        self._held = Metrics.distribution("dlss_preprocess", "records_held_per_group")

    def process(self, element):
        (index, num_files), lines = element
        lines = sorted(lines)
        self._held.update(len(lines))
        # A unique name per attempt: only the attempt Beam commits passes its path on.
        path = posixpath.join(
            self._output_dir,
            shards.TMP_DIR,
            f"rejects-{index:05d}-of-{num_files:05d}.{uuid.uuid4().hex}",
        )
        with _create(path) as f:
            for _, line in lines:
                f.write(line.encode("utf-8"))
        yield {"index": index, "path": path, "count": len(lines)}


class WriteRejects(beam.PTransform):
    """Rejects (dicts) → temporary files of about ``per_file`` lines, sorted by key in each.

    The files go to the staging folder's ``_tmp/`` and are deleted with it.

    Output: one ``{"index", "path", "count"}`` per file, for :class:`WriteManifest`.
    """

    def __init__(self, output_dir: str, per_file: int):
        super().__init__()
        self._output_dir = output_dir
        self._per_file = per_file

    def expand(self, rejects):
        total = rejects | "CountRejects" >> beam.combiners.Count.Globally()
        return (
            rejects
            | "AssignFile"
            >> beam.ParDo(_AssignRejectsFile(self._per_file), total=beam.pvalue.AsSingleton(total))
            | "GroupByFile" >> beam.GroupByKey()
            | "WriteFile" >> beam.ParDo(_WriteRejectsFile(self._output_dir))
        )


def _concatenate(parts: list[str], path: str) -> None:
    """Streams ``parts`` into ``path`` in order (never more than a chunk in memory)."""
    with _create(path) as out:
        for part in parts:
            with FileSystems.open(part, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                while chunk := f.read(_COPY_CHUNK):
                    out.write(chunk)


class WriteManifest(beam.DoFn):
    """Runs once, after every shard and rejects file is written.

    Writes ``rejects.jsonl`` (the rejects files, concatenated), ``manifest.json``, and an
    empty file for any shard that hashing left without examples (TFDS expects every
    shard file to exist). Splits without examples get ``num_shards`` 0 and a line in
    the manifest's ``warnings``; they are left out of the TFDS metadata (TFDS cannot
    describe an empty split). Raises if read != written + rejected for any split, which
    would mean an input was lost.
    """

    def __init__(self, output_dir: str, name: str, manifest_base: dict):
        self._output_dir = output_dir
        self._name = name
        self._manifest_base = manifest_base

    def process(
        self, _, shard_infos, rejects_files, read_counts, written_counts, rejected_counts, reasons
    ):
        shards_by_split: dict[str, dict[int, dict]] = {}
        for info in shard_infos:
            shards_by_split.setdefault(info["split"], {})[info["shard"]] = info
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
                    shards.write_tfrecord_file(path, [])
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
                    "rejected": sum(rejected_counts.values()),
                    "examples": sum(s["examples"] for s in splits_manifest.values()),
                },
                "rejected_by_reason": dict(sorted(reasons.items())),
                "warnings": warnings,
            }
        )
        parts = [f["path"] for f in sorted(rejects_files, key=lambda f: f["index"])]
        _concatenate(parts, posixpath.join(self._output_dir, schema.REJECTS_FILE))
        write_text(
            posixpath.join(self._output_dir, schema.MANIFEST_FILE),
            json.dumps(manifest, indent=2, sort_keys=True) + "\n",
        )
        for warning in warnings:
            logging.info("%s", warning)
        yield manifest


def _count(pcoll, label: str, key):
    return (
        pcoll
        | f"{label}Key" >> beam.Map(key)
        | f"Count{label}" >> beam.combiners.Count.PerElement()
    )


class WriteAccounting(beam.PTransform):
    """Rejects sink + counts + the manifest step; returns the manifest (one element)."""

    def __init__(self, output_dir: str, name: str, manifest_base: dict, per_file: int):
        super().__init__()
        self._output_dir = output_dir
        self._name = name
        self._manifest_base = manifest_base
        self._per_file = per_file

    def expand(self, inputs):
        items, written, rejects, shard_infos = inputs
        rejects_files = rejects | "WriteRejects" >> WriteRejects(self._output_dir, self._per_file)
        side = beam.pvalue
        return (
            items.pipeline
            | "Finalize" >> beam.Create([None])
            | "WriteManifest"
            >> beam.ParDo(
                WriteManifest(self._output_dir, self._name, self._manifest_base),
                shard_infos=side.AsList(shard_infos),
                rejects_files=side.AsList(rejects_files),
                read_counts=side.AsDict(_count(items, "Read", lambda item: item.split)),
                written_counts=side.AsDict(_count(written, "Written", lambda split: split)),
                rejected_counts=side.AsDict(_count(rejects, "Rejected", lambda r: r["split"])),
                reasons=side.AsDict(_count(rejects, "Reason", lambda r: r["reason"])),
            )
        )


def tfds_metadata(manifest: dict) -> dict[str, str]:
    """The text of ``dataset_info.json``, ``features.json`` and ``metadata.json``.

    What ``tfds.folder_dataset.write_metadata`` writes for our feature spec and the
    non-empty splits (a test compares the two), made without importing TensorFlow so the
    launcher starts in a fraction of the time. Shard lengths come from the manifest.
    """
    splits = [
        {
            "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
            "name": split,
            "numBytes": str(info["num_bytes"]),
            "shardLengths": [str(n) for n in info["shard_lengths"]],
        }
        for split, info in sorted(manifest["splits"].items())
        if info["examples"]
    ]
    info = {
        "description": (
            f"LR/HR pairs for x{manifest['scale']} super-resolution made by dlss-preprocess "
            f"from a {manifest['source']} source (degradation: {manifest['degradation']})."
        ),
        "fileFormat": "tfrecord",
        "name": manifest["name"],
        "splits": splits,
        "version": "1.0.0",
    }
    metadata = {k: manifest[k] for k in ("scale", "hr_size", "degradation", "source")}
    return {
        DATASET_INFO_FILE: json.dumps(info, indent=2, sort_keys=True),
        FEATURES_FILE: json.dumps(schema.FEATURES_JSON, indent=4, sort_keys=True),
        METADATA_FILE: json.dumps(metadata),
    }
