"""Damaged datasets are named and, if asked, survived: verify, training input, evaluation."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess

import gin
import pytest
import tensorflow as tf
from training_helpers import train_command, train_env

from dlss_dist import export
from dlss_dist.data import pipeline, schema, verify
from dlss_dist.evaluation import evaluate
from dlss_dist.models.generators import srresnet_generator


def shards(data_dir: str, split: str = "train") -> list[str]:
    return schema.tfrecord_files(data_dir, split)


def flip_a_byte(path: str) -> None:
    """Flips a byte inside the second record's data (its CRCs then disagree)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    (first,) = struct.unpack("<Q", data[:8])
    data[12 + first + 4 + 12 + 20] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)


def keep_first_record(path: str) -> None:
    """Cuts a shard cleanly after its first record: valid TFRecords, too few of them."""
    with open(path, "rb") as f:
        data = f.read()
    (first,) = struct.unpack("<Q", data[:8])
    with open(path, "wb") as f:
        f.write(data[: 12 + first + 4])


@pytest.fixture
def dataset(train_dataset, tmp_path) -> str:
    copy = str(tmp_path / "dataset")
    shutil.copytree(train_dataset, copy)
    return copy


@pytest.fixture
def bind_input(request):
    gin.clear_config()
    gin.bind_parameter("make_input_fn.hr_patch_size", 16)
    yield
    gin.clear_config()


def count_records(input_fn, steps: int) -> int:
    dataset = input_fn(tf.distribute.InputContext())
    return sum(int(lr.shape[0]) for lr, _ in dataset.take(steps))


def test_a_whole_dataset_verifies(dataset):
    report = verify.verify_dataset(dataset)
    assert report["ok"] and not report["damage"]
    assert report["splits"]["train"]["readable"] == report["splits"]["train"]["expected"] > 0


def test_every_kind_of_damage_is_listed(dataset):
    files = shards(dataset)
    flip_a_byte(files[0])
    keep_first_record(files[1])
    os.remove(files[2])
    stray = schema.shard_path(dataset, "dlss_sr", "train", 7, 9)
    shutil.copy(shards(dataset, "validation")[0], stray)
    damage = "\n".join(verify.verify_dataset(dataset)["damage"])
    assert f"{files[0]}: corrupted record 1 at offset" in damage
    assert f"{files[1]}: 1 readable records, manifest says" in damage
    assert f"{files[2]}: missing" in damage
    assert f"{stray}: not listed in manifest.json" in damage


def test_verify_cli(dataset, in_process):
    whole = in_process("verify", f"--data={dataset}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "match manifest.json" in whole.stdout
    flip_a_byte(shards(dataset)[0])
    damaged = in_process("verify", f"--data={dataset}")
    assert damaged.returncode == 1
    assert f"DAMAGED {shards(dataset)[0]}: corrupted record 1" in damaged.stdout
    assert damaged.stderr.strip().splitlines()[-1].startswith("dlss-verify: error: ")
    as_json = in_process("verify", f"--data={dataset}", "--json")
    assert json.loads(as_json.stdout)["ok"] is False


def test_a_short_shard_stops_training_input_naming_the_file(dataset, bind_input):
    keep_first_record(shards(dataset)[1])
    with pytest.raises(verify.DatasetDamagedError, match=r"tfrecord-00001-of-00003: 1 readable"):
        pipeline.make_input_fn(dataset, scale=2, global_batch_size=2)
    with pytest.raises(verify.DatasetDamagedError, match="skip_damaged_records.enabled = True"):
        pipeline.make_input_fn(dataset, scale=2, global_batch_size=2)


def test_skipping_damaged_records_is_opt_in_and_counted(dataset, bind_input, caplog):
    files = shards(dataset)
    manifest = schema.read_manifest(dataset)
    expected = manifest["splits"]["train"]["shard_lengths"]
    flip_a_byte(files[0])
    keep_first_record(files[1])
    gin.bind_parameter("skip_damaged_records.enabled", True)
    _, lengths = pipeline.readable_shards(dataset, manifest, "train", skip_damaged=True)
    # File 0: only the record before the flipped one is reachable; file 1: one record left.
    assert lengths == [1, 1, expected[2]]
    input_fn = pipeline.make_input_fn(dataset, scale=2, global_batch_size=2)
    assert f"Skipping {sum(expected) - sum(lengths)} of {sum(expected)} records" in caplog.text
    # Two epochs of the readable records go through without an error.
    assert count_records(input_fn, sum(lengths)) == 2 * sum(lengths)
    assert len(pipeline.load_examples(dataset, "train", 100)) == sum(lengths)


@pytest.mark.slow
def test_a_flipped_byte_stops_dlss_train_naming_the_file(dataset, tmp_path):
    flip_a_byte(shards(dataset)[0])
    result = subprocess.run(
        train_command(str(tmp_path / "model"), dataset),
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dlss-train: error: the dataset {dataset} is damaged: ")
    assert f"{shards(dataset)[0]}: corrupted record 1" in last and "Fix: re-create" in last


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    generator = srresnet_generator(2, num_filters=8, num_blocks=1)
    path = str(tmp_path_factory.mktemp("export") / "1")
    return export.export_generator(generator, path, scale=2, max_input_pixels=200 * 200)


def test_evaluation_names_the_damage_or_skips_it(dataset, model, tmp_path):
    flip_a_byte(shards(dataset)[0])
    with pytest.raises(verify.DatasetDamagedError, match="corrupted record 1"):
        evaluate.evaluate(model=model, data=dataset, output_dir=str(tmp_path), split="train")
    summary = evaluate.evaluate(
        model=model,
        data=dataset,
        output_dir=str(tmp_path),
        split="train",
        skip_damaged_records=True,
    )
    assert [s["reason"] for s in summary["skipped"]] == ["damaged"]
    assert summary["num_images"] > 0


# Issue 19 cases 11, 17, 18, 19: what training and evaluation say is what dlss-verify says.


def test_a_split_whose_only_shard_is_missing_names_the_file(dataset, model, bind_input, tmp_path):
    # Case 17: train said "no examples", eval "'test' has no examples (splits with ...)".
    for path in shards(dataset, "train"):
        os.remove(path)
    expected = schema.shard_path(dataset, "dlss_sr", "train", 0, 3)
    with pytest.raises(verify.DatasetDamagedError) as raised:
        pipeline.make_input_fn(dataset, scale=2, global_batch_size=2)
    message = str(raised.value)
    assert f"{expected}: missing" in message and f"dlss-verify --data={dataset}" in message
    with pytest.raises(verify.DatasetDamagedError, match=f"{expected}: missing"):
        evaluate.evaluate(model=model, data=dataset, output_dir=str(tmp_path), split="train")
    assert f"{expected}: missing" in "\n".join(verify.verify_dataset(dataset)["damage"])


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("{", "is not valid JSON (Expecting property name enclosed in double quotes at line 1"),
        ("{}", "lists no splits"),
        ('{"name": "dlss_sr", "scale": 2}', "lists no splits"),
        ('{"name": "dlss_sr", "splits": {}}', "lists no splits"),
        ("[1, 2]", "is not a JSON object"),
    ],
)
def test_a_bad_manifest_is_named_by_verify_training_and_eval(
    dataset, model, bind_input, tmp_path, content, what
):
    # Cases 11 and 18: `{}` verified as whole; invalid JSON said "Expecting property name…".
    path = os.path.join(dataset, schema.MANIFEST_FILE)
    with open(path, "w") as f:
        f.write(content)
    expected = f"{path} {what}"
    for attempt in (
        lambda: verify.verify_dataset(dataset),
        lambda: pipeline.make_input_fn(dataset, scale=2, global_batch_size=2),
        lambda: evaluate.evaluate(model=model, data=dataset, output_dir=str(tmp_path)),
    ):
        with pytest.raises(schema.ManifestError) as raised:
            attempt()
        assert str(raised.value).startswith(expected), raised.value
        assert "dlss-preprocess" in str(raised.value)


def test_an_unreadable_shard_is_named_as_dlss_verify_names_it(dataset, bind_input):
    # Case 19: training said "Graph execution error ... MultiDeviceIteratorGetNextFromShard".
    # A folder in the shard's place is unreadable even for root (chmod 000 is not).
    path = shards(dataset)[1]
    os.remove(path)
    os.mkdir(path)
    (line,) = verify.verify_dataset(dataset)["damage"]
    assert line == f"{path}: cannot be read (Is a directory)"
    with pytest.raises(verify.DatasetDamagedError) as raised:
        pipeline.make_input_fn(dataset, scale=2, global_batch_size=2)
    assert line in str(raised.value) and f"dlss-verify --data={dataset}" in str(raised.value)


def test_a_read_error_during_training_becomes_what_verify_says(dataset):
    # Case 19, mid-run: the file became unreadable after the start-up checks.
    path = shards(dataset)[0]
    os.remove(path)
    os.mkdir(path)
    seen = tf.errors.FailedPreconditionError(
        None, None, f"Graph execution error: {path}; Is a directory [MultiDeviceIteratorGetNext]"
    )
    explained = verify.read_error(dataset, seen)
    assert isinstance(explained, verify.DatasetDamagedError)
    assert f"{path}: cannot be read (Is a directory)" in str(explained)
    assert "MultiDeviceIterator" not in str(explained)
    unrelated = tf.errors.FailedPreconditionError(
        None, None, "/elsewhere/checkpoint: Is a directory"
    )
    assert verify.read_error(dataset, unrelated) is None
