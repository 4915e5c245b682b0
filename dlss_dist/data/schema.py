"""The LR/HR example spec: the single source of truth for the writer and the reader.

The Beam job (``beam_jobs/``) writes examples with :func:`serialize_example`; the
``tf.data`` pipeline, evaluation and TFDS read them with :func:`decode_example` or
``tfds.builder_from_directory``. Both go through :func:`features`.
"""

from __future__ import annotations

import functools
import json
import posixpath

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

MANIFEST_FILE = "manifest.json"
REJECTS_FILE = "rejects.jsonl"
SPLITS = ("train", "validation", "test")
# "<name>-<split>.tfrecord-00000-of-00004", TFDS's default file name template.
SHARD_SUFFIX = "tfrecord"


@functools.lru_cache(maxsize=1)
def features() -> tfds.features.FeaturesDict:
    """The TFDS feature spec of one example.

    Returns:
      ``{"lr": Image((None, None, 3), png), "hr": Image((None, None, 3), png),
      "key": Text()}``; ``key`` is the stable id of the example (the input path
      relative to the input root, plus ``#pN`` for the N-th patch of a photo).
    """
    return tfds.features.FeaturesDict(
        {
            "lr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "hr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "key": tfds.features.Text(),
        }
    )


def _png_bytes(image) -> bytes:
    if isinstance(image, bytes):
        return image
    from dlss_dist import imaging  # keeps this module importable without PIL users

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"images must be HxWx3 uint8, got {image.shape} {image.dtype}")
    return imaging.encode_png(image)


def serialize_example(*, lr, hr, key: str) -> bytes:
    """Serialises one example as a ``tf.train.Example`` proto.

    Args:
      lr: the low-resolution image, ``hxwx3`` uint8 array or PNG bytes.
      hr: the high-resolution image, ``Hxwx3`` uint8 array or PNG bytes.
      key: the example's stable id.

    Returns:
      The serialised proto, ready for a TFRecord file.
    """
    # PNG-encode with PIL rather than letting TFDS run a TF graph per image: it is
    # faster in a Beam worker and the bytes are deterministic.
    return features().serialize_example({"lr": _png_bytes(lr), "hr": _png_bytes(hr), "key": key})


def decode_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses and decodes one serialised example (works in graph mode / ``tf.data``).

    Returns:
      ``{"lr": uint8[h, w, 3], "hr": uint8[H, W, 3], "key": string[]}``.
    """
    return features().deserialize_example(serialized)


def read_manifest(data_dir: str) -> dict:
    """Reads ``<data_dir>/manifest.json`` written by ``dlss-preprocess``.

    Raises:
      FileNotFoundError: naming ``data_dir`` when it holds no dlss dataset.
    """
    path = posixpath.join(data_dir, MANIFEST_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{data_dir} is not a dlss dataset: {MANIFEST_FILE} is missing "
            "(create one with dlss-preprocess --output_dir=...)"
        )
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)


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
    manifest = read_manifest(data_dir)
    split_info = manifest.get("splits", {}).get(split)
    if not split_info or not split_info.get("num_shards"):
        return []
    return sorted(tf.io.gfile.glob(shard_pattern(data_dir, manifest["name"], split)))
