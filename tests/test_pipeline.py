"""The tf.data input function: aligned crops, deterministic order, resume, sharding, checks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from dlss_dist import imaging
from dlss_dist.data import pipeline

SCALE = 2


@pytest.fixture
def dataset(train_dataset):
    return train_dataset


def _input_fn(dataset, **overrides):
    kwargs = dict(global_batch_size=4, scale=SCALE, hr_patch_size=16, shuffle_buffer=8)
    kwargs.update(overrides)
    return pipeline.make_input_fn(dataset, **kwargs)


def _batches(input_fn, count, *, pipelines=1, pipeline_id=0, replicas=1):
    context = tf.distribute.InputContext(pipelines, pipeline_id, replicas)
    return [(lr.numpy(), hr.numpy()) for lr, hr in input_fn(context).take(count)]


def test_random_paired_crop_keeps_lr_and_hr_aligned():
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    hr = imaging.upscale_nearest(lr, 4)  # every HR 4x4 block is one LR pixel
    for index in range(20):
        lr_crop, hr_crop = pipeline.random_paired_crop(
            tf.constant(lr), tf.constant(hr), scale=4, hr_patch_size=16, seed=[index, 7]
        )
        lr_crop, hr_crop = pipeline.random_dihedral(lr_crop, hr_crop, seed=[index, 3])
        assert lr_crop.shape == (4, 4, 3) and hr_crop.shape == (16, 16, 3)
        np.testing.assert_array_equal(imaging.upscale_nearest(lr_crop.numpy(), 4), hr_crop)


def test_crop_refuses_examples_that_do_not_match_the_scale():
    lr = tf.zeros([8, 8, 3], tf.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not 2x its LR size"):
        pipeline.random_paired_crop(
            lr, tf.zeros([15, 16, 3], tf.uint8), scale=2, hr_patch_size=8, seed=[0, 0]
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than the 32px HR crop"):
        pipeline.random_paired_crop(
            lr, tf.zeros([16, 16, 3], tf.uint8), scale=2, hr_patch_size=32, seed=[0, 0]
        )


def test_batches_are_float_in_range_and_lr_matches_hr(dataset):
    (lr, hr), *_ = _batches(_input_fn(dataset, augment=False), 1)
    assert lr.shape == (4, 8, 8, 3) and hr.shape == (4, 16, 16, 3)
    assert lr.dtype == np.float32 and lr.min() >= -1.0 and lr.max() <= 1.0
    # The crop keeps the degradation: LR is (close to) the bicubic reduction of HR.
    for lr_image, hr_image in zip(lr, hr, strict=True):
        hr_uint8 = np.round((hr_image + 1) * 127.5).astype(np.uint8)
        lr_uint8 = np.round((lr_image + 1) * 127.5).astype(np.int16)
        interior = slice(2, -2)
        error = np.abs(imaging.degrade_bicubic(hr_uint8, SCALE).astype(np.int16) - lr_uint8)
        assert error[interior, interior].mean() < 2.0


def test_order_is_deterministic_and_resume_continues_exactly(dataset):
    straight = _batches(_input_fn(dataset), 12)
    again = _batches(_input_fn(dataset), 12)
    resumed = _batches(_input_fn(dataset, start_step=7), 5)
    for a, b in zip(straight, again, strict=True):
        np.testing.assert_array_equal(a[1], b[1])
    # Step 7 onwards, across the epoch boundary (the split has fewer than 48 examples).
    for a, b in zip(straight[7:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    other_seed = _batches(_input_fn(dataset, seed=1), 1)
    assert not np.array_equal(straight[0][1], other_seed[0][1])


def test_epochs_differ_and_cover_the_split(dataset):
    input_fn = _input_fn(dataset, augment=False, hr_patch_size=32, global_batch_size=1)
    manifest_count = sum(pipeline.schema.read_manifest(dataset)["splits"]["train"]["shard_lengths"])
    batches = _batches(input_fn, 2 * manifest_count)
    first = [hr.tobytes() for _, hr in batches[:manifest_count]]
    second = [hr.tobytes() for _, hr in batches[manifest_count:]]
    assert len(set(first)) == manifest_count  # every example once per epoch
    assert sorted(first) == sorted(second)
    assert first != second  # ...in a new order


@pytest.mark.parametrize("pipelines", [2, 4], ids=["by_file", "by_record"])
def test_input_pipelines_partition_each_epoch(dataset, pipelines):
    # 3 shard files: 2 pipelines split the files, 4 pipelines split the records.
    lengths = pipeline.schema.read_manifest(dataset)["splits"]["train"]["shard_lengths"]
    total = sum(lengths)
    parts = []
    for pipeline_id in range(pipelines):
        if pipelines <= len(lengths):
            epoch_size = sum(lengths[pipeline_id::pipelines])
        else:
            epoch_size = len(range(pipeline_id, total, pipelines))
        input_fn = _input_fn(dataset, augment=False, hr_patch_size=32, global_batch_size=pipelines)
        batches = _batches(
            input_fn, epoch_size, pipelines=pipelines, pipeline_id=pipeline_id, replicas=pipelines
        )
        parts.append({hr.tobytes() for _, hr in batches})
        assert len(parts[-1]) == epoch_size
    assert len(set().union(*parts)) == total == sum(len(part) for part in parts)


def test_incompatible_datasets_are_refused(dataset):
    with pytest.raises(ValueError, match="scale 2 but the config upscales x4"):
        _input_fn(dataset, scale=4, hr_patch_size=32)
    with pytest.raises(ValueError, match="expects 'nearest'"):
        _input_fn(dataset, degradation="nearest")
    _input_fn(dataset, degradation=None)  # None accepts any degradation
    with pytest.raises(ValueError, match="larger than the dataset's images"):
        _input_fn(dataset, hr_patch_size=64)
    with pytest.raises(ValueError, match="not divisible by scale"):
        _input_fn(dataset, hr_patch_size=15)
    with pytest.raises(ValueError, match="no examples in split 'nope'"):
        _input_fn(dataset, split="nope")
    with pytest.raises(FileNotFoundError, match="not a dlss dataset"):
        _input_fn(str(dataset) + "_missing")
