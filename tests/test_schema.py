"""dlss_dist.data.schema: the TF-free serializer equals TFDS's, and the reader helpers."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import load_photo

from dlss_dist import imaging
from dlss_dist.data import schema


def _example():
    hr = load_photo("astronaut")[:32, :32]
    return imaging.degrade_bicubic(hr, 2), hr


def test_serialize_matches_tfds_serializer():
    lr, hr = _example()
    ours = schema.serialize_example(lr=lr, hr=hr, key="dir/ü.jpg")
    theirs = schema.features().serialize_example(
        {"lr": imaging.encode_png(lr), "hr": imaging.encode_png(hr), "key": "dir/ü.jpg"}
    )
    assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(theirs)
    # arrays and PNG bytes give the same, deterministic bytes
    assert ours == schema.serialize_example(
        lr=imaging.encode_png(lr), hr=imaging.encode_png(hr), key="dir/ü.jpg"
    )


def test_decode_example_in_graph_mode():
    lr, hr = _example()
    serialized = schema.serialize_example(lr=lr, hr=hr, key="a/b.png")
    dataset = tf.data.Dataset.from_tensors(serialized).map(schema.decode_example)
    (decoded,) = list(dataset)
    assert decoded["lr"].dtype == tf.uint8 and decoded["hr"].dtype == tf.uint8
    np.testing.assert_array_equal(decoded["lr"].numpy(), lr)
    np.testing.assert_array_equal(decoded["hr"].numpy(), hr)
    assert decoded["key"].numpy() == b"a/b.png"


def test_serialize_rejects_bad_arrays():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        schema.serialize_example(lr=np.zeros((4, 4), np.uint8), hr=b"", key="k")


def test_read_manifest_and_tfrecord_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        schema.read_manifest(str(tmp_path))
    manifest = {"name": "demo", "splits": {"train": {"num_shards": 2}, "test": {"num_shards": 0}}}
    (tmp_path / schema.MANIFEST_FILE).write_text(json.dumps(manifest))
    for shard in (1, 0):
        (tmp_path / f"demo-train.tfrecord-0000{shard}-of-00002").write_bytes(b"")
    assert schema.read_manifest(str(tmp_path))["name"] == "demo"
    assert schema.tfrecord_files(str(tmp_path), "train") == [
        schema.shard_path(str(tmp_path), "demo", "train", shard, 2) for shard in (0, 1)
    ]
    assert schema.tfrecord_files(str(tmp_path), "test") == []
    assert schema.tfrecord_files(str(tmp_path), "validation") == []
