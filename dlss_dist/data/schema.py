"""The LR/HR example spec and TFRecord framing: one source of truth for writer and readers.

The Beam job (``beam_jobs/``) writes examples with :func:`serialize_example`, each framed by
:func:`tfrecord_frame`; the ``tf.data`` pipeline, evaluation and TFDS read them with
:func:`decode_example` or ``tfds.builder_from_directory`` (both go through :func:`features`),
and `dlss_dist.data.verify` reads the frames back with :func:`frame_length` and
:func:`frame_data`.
"""

from __future__ import annotations

import functools
import json
import posixpath
import struct
from typing import TYPE_CHECKING

import numpy as np

from dlss_dist import imaging

if TYPE_CHECKING:
    import tensorflow as tf
    import tensorflow_datasets as tfds

MANIFEST_FILE = "manifest.json"
REJECTS_FILE = "rejects.jsonl"
SPLITS = ("train", "validation", "test")
# "<name>-<split>.tfrecord-00000-of-00004", TFDS's default file name template.
SHARD_SUFFIX = "tfrecord"


# The features.json TFDS writes for ``features()``, spelled out so the Beam launcher can write
# it without importing TensorFlow (tests/test_preprocess_cases.py checks the two agree).
_IMAGE_JSON = {
    "image": {
        "dtype": "uint8",
        "encodingFormat": "png",
        "shape": {"dimensions": ["-1", "-1", "3"]},
    },
    "pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
}
FEATURES_JSON = {
    "featuresDict": {
        "features": {
            "hr": _IMAGE_JSON,
            "key": {
                "pythonClassName": "tensorflow_datasets.core.features.text_feature.Text",
                "text": {},
            },
            "lr": _IMAGE_JSON,
        }
    },
    "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
}


@functools.lru_cache(maxsize=1)
def features() -> tfds.features.FeaturesDict:
    """The TFDS feature spec of one example.

    Returns:
      ``{"lr": Image((None, None, 3), png), "hr": Image((None, None, 3), png),
      "key": Text()}``; ``key`` is the stable id of the example (the input path
      relative to the input root, plus ``#pN`` for the N-th patch of a photo).
    """
    import tensorflow_datasets as tfds  # imported lazily: Beam workers never need TF

    return tfds.features.FeaturesDict(
        {
            "lr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "hr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "key": tfds.features.Text(),
        }
    )


# A TFRecord frame: length (uint64 LE), masked CRC32C of the length (uint32 LE), data,
# masked CRC32C of the data (uint32 LE).
FRAME_HEADER_BYTES = 12
FRAME_FOOTER_BYTES = 4


@functools.lru_cache(maxsize=1)
def _crc32c():
    import crcmod.predefined  # installed by apache-beam[tfrecord]; a C extension

    return crcmod.predefined.mkPredefinedCrcFun("crc-32c")


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of `data` (the value stored in a frame)."""
    crc = _crc32c()(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data.

    Written without TensorFlow (Beam workers would pay seconds to import it).
    """
    length = struct.pack("<Q", len(record))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + record
        + struct.pack("<I", masked_crc32c(record))
    )


def frame_length(header: bytes) -> int | None:
    """The data length a frame's `FRAME_HEADER_BYTES` header holds, or None if the length's
    CRC does not match (the rest of the file cannot be located)."""
    length_bytes = header[:8]
    (length_crc,) = struct.unpack("<I", header[8:FRAME_HEADER_BYTES])
    if masked_crc32c(length_bytes) != length_crc:
        return None
    return struct.unpack("<Q", length_bytes)[0]


def frame_data(body: bytes) -> bytes | None:
    """A frame's data from its body (data + `FRAME_FOOTER_BYTES` CRC), or None if the data's
    CRC does not match."""
    data = body[:-FRAME_FOOTER_BYTES]
    (data_crc,) = struct.unpack("<I", body[-FRAME_FOOTER_BYTES:])
    return data if masked_crc32c(data) == data_crc else None


def _png_bytes(image) -> bytes:
    if isinstance(image, bytes):
        return image
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"images must be HxWx3 uint8, got {image.shape} {image.dtype}")
    return imaging.encode_png(image)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def serialize_example(*, lr, hr, key: str) -> bytes:
    """Serialises one example as a ``tf.train.Example`` proto.

    The proto is what ``features().serialize_example(...)`` makes (a test checks that
    they parse to the same proto), encoded here without TensorFlow so Beam workers do
    not pay seconds of TF import each; map entries are in sorted key order, so the
    bytes are deterministic.

    Args:
      lr: the low-resolution image, ``hxwx3`` uint8 array or PNG bytes.
      hr: the high-resolution image, ``Hxwx3`` uint8 array or PNG bytes.
      key: the example's stable id.

    Returns:
      The serialised proto, ready for a TFRecord file.
    """
    values = {"hr": _png_bytes(hr), "key": key.encode("utf-8"), "lr": _png_bytes(lr)}
    entries = b""
    for name in sorted(values):
        # Feature{bytes_list: BytesList{value: [v]}} in Features.feature[name].
        feature = _length_delimited(1, _length_delimited(1, values[name]))
        entry = _length_delimited(1, name.encode()) + _length_delimited(2, feature)
        entries += _length_delimited(1, entry)
    return _length_delimited(1, entries)


def decode_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses and decodes one serialised example (works in graph mode / ``tf.data``).

    Returns:
      ``{"lr": uint8[h, w, 3], "hr": uint8[H, W, 3], "key": string[]}``.
    """
    return features().deserialize_example(serialized)


class ManifestError(ValueError):
    """``manifest.json`` is not valid JSON or not a manifest written by dlss-preprocess; the
    message names the file and what to do."""


def _manifest_error(path: str, data_dir: str, what: str) -> ManifestError:
    return ManifestError(
        f"{path} {what}, so the dataset cannot be read or checked. Re-create the dataset "
        f"with dlss-preprocess (or restore {MANIFEST_FILE} from a copy; dlss-verify "
        f"--data={data_dir} then checks every file against it)"
    )


def read_manifest(data_dir: str) -> dict:
    """Reads ``<data_dir>/manifest.json`` written by ``dlss-preprocess``.

    Raises:
      FileNotFoundError: naming ``data_dir`` when it holds no dlss dataset.
      ManifestError: the file is not valid JSON, or lacks the dataset's ``name`` or a
        ``splits`` object with at least one split (e.g. ``{}``): nothing could be checked.
    """
    import tensorflow as tf

    path = posixpath.join(data_dir, MANIFEST_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{data_dir} is not a dlss dataset: {MANIFEST_FILE} is missing "
            "(create one with dlss-preprocess --output_dir=...)"
        )
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        where = (
            f" ({error.msg} at line {error.lineno} column {error.colno})"
            if isinstance(error, json.JSONDecodeError)
            else ""
        )
        raise _manifest_error(path, data_dir, f"is not valid JSON{where}") from None
    if not isinstance(manifest, dict):
        raise _manifest_error(path, data_dir, "is not a JSON object")
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise _manifest_error(path, data_dir, "lists no splits (no 'splits' object)")
    if not all(isinstance(info, dict) for info in splits.values()):
        raise _manifest_error(path, data_dir, "has a split that is not a JSON object")
    if not isinstance(manifest.get("name"), str) or not manifest["name"]:
        raise _manifest_error(path, data_dir, "has no dataset 'name' (the shard prefix)")
    return manifest


def split_has_examples(manifest: dict, split: str) -> bool:
    """Whether the manifest lists shards for `split` (whether the files exist is another
    question: see dlss_dist.data.verify)."""
    info = manifest.get("splits", {}).get(split)
    return bool(info and info.get("num_shards"))


def shard_pattern(data_dir: str, name: str, split: str) -> str:
    """The glob matching every shard of ``split`` of dataset ``name``."""
    return posixpath.join(data_dir, f"{name}-{split}.{SHARD_SUFFIX}-*-of-*")


def shard_path(data_dir: str, name: str, split: str, shard: int, num_shards: int) -> str:
    """The path of one shard, in TFDS's default file name template."""
    return posixpath.join(
        data_dir, f"{name}-{split}.{SHARD_SUFFIX}-{shard:05d}-of-{num_shards:05d}"
    )


def tfrecord_files(data_dir: str, split: str) -> list[str]:
    """Sorted shard paths of one split (``[]`` when the split has no examples).

    Raises:
      FileNotFoundError: when ``data_dir`` is not a dlss dataset.
    """
    import tensorflow as tf

    manifest = read_manifest(data_dir)
    if not split_has_examples(manifest, split):
        return []
    return sorted(tf.io.gfile.glob(shard_pattern(data_dir, manifest["name"], split)))
