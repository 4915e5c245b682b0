"""Checks a dataset's shard files against its manifest: CRCs, record counts, sizes.

The Beam job frames every example as a TFRecord (length, masked CRC32C of the length, data,
masked CRC32C of the data) and records in ``manifest.json``, per split, the shard count,
the examples per shard (``shard_lengths``) and the total bytes (``num_bytes``). This module
reads the files back frame by frame and lists every difference, so that a damaged dataset
is named (file, offset, what) instead of failing deep inside tf.data with
``DataLossError: corrupted record at N``.

`scan_shard` reads past a record whose data CRC is wrong (its length is still trusted), so
it counts every readable record. TensorFlow's reader cannot: it stops a file at its first
bad record, so `ShardReport.reachable` (records before the first damage) is what training
can read when asked to skip damaged records.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from dlss_dist import files
from dlss_dist.data import schema

FIX = (
    "re-create the dataset with dlss-preprocess (or restore the file from a copy); to train "
    "or evaluate on the readable records anyway, bind skip_damaged_records.enabled = True "
    "(dlss-train --gin_param) or pass --skip_damaged_records (dlss-eval)"
)

# TensorFlow's errors for a shard that cannot be opened or read at all (as opposed to the
# DataLossError of a damaged record): named the same way as damage, file by file.
_UNREADABLE = (
    tf.errors.PermissionDeniedError,
    tf.errors.NotFoundError,
    tf.errors.FailedPreconditionError,
    tf.errors.UnavailableError,
)


def _check_hint(data_dir: str) -> str:
    return f"dlss-verify --data={data_dir} lists every problem"


class DatasetDamagedError(ValueError):
    """A dataset's files do not match its manifest; the message names each file and problem."""


@dataclasses.dataclass
class ShardReport:
    """What one shard file holds.

    Attributes:
      path: the file.
      expected: records the manifest lists for it (None: the file is not in the manifest).
      records: records whose CRCs are correct.
      reachable: records before the first damage (what TensorFlow's reader gets).
      problems: human-readable damage, e.g. ``corrupted record 3 at offset 8107``.
      missing: the file does not exist.
      unreadable: the file exists but cannot be opened or read.
    """

    path: str
    expected: int | None
    records: int = 0
    reachable: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    missing: bool = False
    unreadable: bool = False  # exists but cannot be opened or read (permissions, a folder)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing and self.records == self.expected

    def describe(self) -> str:
        """One line: the file and everything wrong with it."""
        if self.missing:
            return f"{self.path}: missing (the manifest lists {self.expected} records)"
        details = list(self.problems)
        if self.expected is None:
            details.append("not listed in manifest.json (a file from another run?)")
        elif self.records != self.expected and not self.unreadable:
            details.append(f"{self.records} readable records, manifest says {self.expected}")
        return f"{self.path}: " + "; ".join(details)


def scan_shard(path: str, expected: int | None = None, chunk: int = 1 << 20) -> ShardReport:
    """Reads one TFRecord file frame by frame, checking both CRCs of every record."""
    report = ShardReport(path=path, expected=expected)
    if not tf.io.gfile.exists(path):
        report.missing = True
        return report
    try:
        return _scan_frames(path, report, chunk)
    except (tf.errors.OpError, OSError) as error:
        reason = str(getattr(error, "message", None) or getattr(error, "strerror", None) or error)
        if reason.startswith(path):  # TensorFlow's "<path>; Permission denied"
            reason = reason[len(path) :].lstrip(";: ")
        report.problems.append(f"cannot be read ({reason})")
        report.unreadable = True
        return report


def _scan_frames(path: str, report: ShardReport, chunk: int) -> ShardReport:
    damaged = False
    with tf.io.gfile.GFile(path, "rb") as f:
        offset, index = 0, 0
        while True:
            header = f.read(schema.FRAME_HEADER_BYTES)
            if not header:
                break
            if len(header) < schema.FRAME_HEADER_BYTES:
                report.problems.append(f"truncated record {index} at offset {offset} (cut short)")
                break
            length = schema.frame_length(header)
            if length is None:
                report.problems.append(
                    f"corrupted length of record {index} at offset {offset}: the rest of the "
                    "file cannot be read"
                )
                break
            remaining, parts = length + schema.FRAME_FOOTER_BYTES, []
            while remaining:
                part = f.read(min(remaining, chunk))
                if not part:
                    break
                parts.append(part)
                remaining -= len(part)
            if remaining:
                report.problems.append(f"truncated record {index} at offset {offset} (cut short)")
                break
            if schema.frame_data(b"".join(parts)) is None:
                report.problems.append(f"corrupted record {index} at offset {offset}")
                damaged = True
            else:
                report.records += 1
                if not damaged:
                    report.reachable += 1
            offset += schema.FRAME_HEADER_BYTES + length + schema.FRAME_FOOTER_BYTES
            index += 1
    return report


def split_files(
    data_dir: str, manifest: dict, split: str
) -> tuple[list[str], list[int], list[str]]:
    """(expected shard paths, their manifest lengths, files present that the manifest lacks)."""
    info = manifest.get("splits", {}).get(split) or {}
    num_shards = int(info.get("num_shards") or 0)
    lengths = list(info.get("shard_lengths") or [0] * num_shards)
    expected = [
        schema.shard_path(data_dir, manifest["name"], split, shard, num_shards)
        for shard in range(num_shards)
    ]
    present = tf.io.gfile.glob(schema.shard_pattern(data_dir, manifest["name"], split))
    extra = sorted(set(present) - set(expected))
    return expected, lengths, extra


def scan_split(data_dir: str, split: str, manifest: dict | None = None) -> list[ShardReport]:
    """Scans every shard of `split` (the manifest's and any stray ones)."""
    manifest = manifest or schema.read_manifest(data_dir)
    expected, lengths, extra = split_files(data_dir, manifest, split)
    reports = [scan_shard(path, length) for path, length in zip(expected, lengths, strict=False)]
    return reports + [scan_shard(path) for path in extra]


def verify_dataset(data_dir: str) -> dict:
    """Checks every split of a dataset; returns a JSON-able report.

    Returns:
      ``{"data_dir", "ok": bool, "splits": {split: {"expected": N, "readable": N,
      "files": K}}, "damage": ["<file>: <problems>", ...]}``.
    """
    manifest = schema.read_manifest(data_dir)
    result = {"data_dir": data_dir, "ok": True, "splits": {}, "damage": []}
    for split, info in sorted(manifest.get("splits", {}).items()):
        reports = scan_split(data_dir, split, manifest)
        result["splits"][split] = {
            "expected": int(info.get("examples", sum(info.get("shard_lengths") or []))),
            "readable": sum(r.records for r in reports),
            "files": len(reports),
        }
        bad = [r.describe() for r in reports if not r.ok]
        total = sum(r.expected or 0 for r in reports)
        if result["splits"][split]["expected"] != total:
            bad.append(
                f"split {split}: the manifest's examples ({result['splits'][split]['expected']})"
                f" differ from its shard_lengths ({total})"
            )
        result["damage"] += bad
    result["ok"] = not result["damage"]
    return result


def check_split_sizes(data_dir: str, manifest: dict, split: str) -> None:
    """Cheap pre-flight check (file sizes only) that a split is whole; on a mismatch the
    split is scanned and the error names each damaged file.

    Raises:
      DatasetDamagedError: a shard is missing, extra, or not the size the manifest implies.
    """
    expected, _, extra = split_files(data_dir, manifest, split)
    info = manifest["splits"][split]
    missing = [path for path in expected if not tf.io.gfile.exists(path)]
    size = sum(tf.io.gfile.stat(path).length for path in expected if path not in missing)
    wanted = info.get("num_bytes")
    if (
        not missing
        and not extra
        and (wanted is None or size == wanted)
        and all(_opens(path) for path in expected if not files.is_remote(path))
    ):
        return
    raise_damage(data_dir, split, manifest)


def _opens(path: str) -> bool:
    """Whether the file can be opened and read (its first byte): permissions, a folder in a
    shard's place. Local files only: on an object store an open per shard would cost a round
    trip each at every start; there a read error is explained when tf.data meets it
    (`read_error`)."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            f.read(1)
    except (tf.errors.OpError, OSError):
        return False
    return True


def raise_damage(data_dir: str, split: str, manifest: dict | None = None) -> None:
    """Scans `split` and raises DatasetDamagedError naming every damaged file and the fix."""
    reports = scan_split(data_dir, split, manifest)
    bad = [r.describe() for r in reports if not r.ok]
    if not bad:
        bad = ["the shard files match the manifest, but TensorFlow could not read them"]
    raise DatasetDamagedError(
        f"split {split!r} of {data_dir} is damaged: "
        + " | ".join(bad)
        + f" ({_check_hint(data_dir)}). Fix: {FIX}"
    )


def damage_error(data_dir: str, cause: Exception) -> DatasetDamagedError:
    """The error to raise when TensorFlow reported damage (DataLossError) in `data_dir`:
    every damaged file of every split, found by a scan, and the fix."""
    report = verify_dataset(data_dir)
    found = " | ".join(report["damage"]) or f"TensorFlow reported: {cause}"
    return DatasetDamagedError(
        f"the dataset {data_dir} is damaged: {found} ({_check_hint(data_dir)}). Fix: {FIX}"
    )


def read_error(data_dir: str, error: BaseException) -> DatasetDamagedError | None:
    """What to raise instead of `error`, a TensorFlow error seen while reading `data_dir`
    through tf.data (whose message names an iterator op, not the file): a damaged record,
    or a shard that cannot be opened or read, becomes what dlss-verify says about the
    dataset. None when `error` is not about reading the dataset."""
    if isinstance(error, tf.errors.DataLossError):
        return damage_error(data_dir, error)
    if isinstance(error, _UNREADABLE) and data_dir.rstrip("/") in str(error):
        return damage_error(data_dir, error)
    return None
