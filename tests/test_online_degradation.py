"""Online real-world degradation in the tf.data pipeline: alignment, determinism, resume."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import plain_resize_degradation

from dlss_dist import degradations
from dlss_dist.data import pipeline, schema
from dlss_dist.evaluation import metrics

SCALE = 2  # the session dataset's


def _input_fn(dataset, online=None, **overrides):
    kwargs = dict(
        global_batch_size=4,
        scale=SCALE,
        hr_patch_size=16,
        shuffle_buffer=8,
        online_degradation=online or degradations.RealWorldDegradation(scale=SCALE),
    )
    kwargs.update(overrides)
    return pipeline.make_input_fn(dataset, **kwargs)


def _batches(input_fn, count, *, replicas=1):
    context = tf.distribute.InputContext(1, 0, replicas)
    return [(lr.numpy(), hr.numpy()) for lr, hr in input_fn(context).take(count)]


def _uint8(batch: np.ndarray) -> np.ndarray:
    return np.round((batch + 1) * 127.5).astype(np.uint8)


def test_lr_is_made_from_its_own_hr_window(train_dataset):
    degrade = plain_resize_degradation(SCALE)
    ((lr, hr),) = _batches(_input_fn(train_dataset, degrade, hr_patch_size=32), 1)
    assert lr.shape == (4, 16, 16, 3) and hr.shape == (4, 32, 32, 3)

    def error(lr_images, hr_images):
        """Mean luma error of each LR against the closest plain resize of its HR."""
        errors = []
        for lr_image, hr_image in zip(lr_images, hr_images, strict=True):
            hr_float = tf.constant(hr_image / 255.0, tf.float32)
            errors.append(
                min(
                    np.abs(
                        metrics.rgb_to_y(lr_image)
                        - metrics.rgb_to_y(degradations.resize(hr_float, 16, 16, m).numpy() * 255)
                    ).mean()
                    for m in degradations.RESIZE_METHODS
                )
            )
        return np.mean(errors)

    lr, hr = _uint8(lr), _uint8(hr)
    aligned = error(lr, hr)
    assert aligned < 3.0
    # Against another example's HR, or its own HR moved by one LR pixel, it is far off.
    assert aligned < 0.5 * error(lr, np.roll(hr, 1, axis=0))
    assert aligned < 0.5 * error(lr, np.roll(hr, SCALE, axis=2))


def test_online_lr_differs_from_the_stored_bicubic_lr(train_dataset):
    whole = dict(hr_patch_size=32, augment=False)  # whole patches: the same HR in both
    stored = pipeline.make_input_fn(
        train_dataset, global_batch_size=4, scale=SCALE, shuffle_buffer=8, **whole
    )
    ((stored_lr, stored_hr),) = _batches(stored, 1)
    ((online_lr, online_hr),) = _batches(_input_fn(train_dataset, **whole), 1)
    np.testing.assert_array_equal(stored_hr, online_hr)
    assert np.abs(stored_lr - online_lr).mean() > 0.01


@pytest.mark.slow
def test_deterministic_and_resume_is_exact(train_dataset):
    straight = _batches(_input_fn(train_dataset), 15)
    again = _batches(_input_fn(train_dataset), 15)
    resumed = _batches(_input_fn(train_dataset, start_step=11), 4)  # 48 examples: epoch 1
    for a, b in zip(straight, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(straight[11:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    other = _batches(_input_fn(train_dataset, seed=3), 1)
    assert not np.array_equal(straight[0][0], other[0][0])


@pytest.mark.slow
def test_one_replica_equals_two_replicas(train_dataset):
    # Two replicas of one pipeline take consecutive per-replica batches of the same stream.
    one = _batches(_input_fn(train_dataset), 3)
    two = _batches(_input_fn(train_dataset), 6, replicas=2)
    for step, (lr, hr) in enumerate(one):
        np.testing.assert_array_equal(lr, np.concatenate([two[2 * step][0], two[2 * step + 1][0]]))
        np.testing.assert_array_equal(hr, np.concatenate([two[2 * step][1], two[2 * step + 1][1]]))


def test_each_epoch_sees_new_lr_for_the_same_hr(train_dataset):
    count = sum(schema.read_manifest(train_dataset)["splits"]["train"]["shard_lengths"])
    input_fn = _input_fn(train_dataset, hr_patch_size=32, global_batch_size=1, augment=False)
    batches = _batches(input_fn, 2 * count)
    first = {hr.tobytes(): lr for lr, hr in batches[:count]}
    second = {hr.tobytes(): lr for lr, hr in batches[count:]}
    assert first.keys() == second.keys()  # whole patches: the same HR each epoch
    assert all(not np.array_equal(first[k], second[k]) for k in first)


def test_online_configs_are_checked_against_the_dataset(train_dataset):
    with pytest.raises(ValueError, match="bind RealWorldDegradation.scale = %SCALE"):
        _input_fn(train_dataset, degradations.RealWorldDegradation(scale=4))
    with pytest.raises(ValueError, match="larger than the dataset's images"):
        _input_fn(train_dataset, hr_patch_size=64)
    # HR-only: a x2 dataset can feed x4 online training, whatever its stored LR is.
    assert pipeline.supported_degradations(schema.read_manifest(train_dataset))[1] == "online"
    x4 = _input_fn(
        train_dataset,
        degradations.RealWorldDegradation(scale=4),
        scale=4,
        hr_patch_size=32,
        degradation="not-the-stored-one",
    )
    ((lr, hr),) = _batches(x4, 1)
    assert lr.shape == (4, 8, 8, 3) and hr.shape == (4, 32, 32, 3)


@pytest.mark.parametrize("name", ["realworld_x4.gin", "realworld_x4_gpu.gin"])
def test_real_world_configs_build_their_degradation(name):
    import gin

    from dlss_dist import config

    gin.clear_config()
    try:
        config.parse_config([name])
        degrade = gin.query_parameter("train_loop.online_degradation").scoped_configurable_fn()
        assert degrade.scale == gin.query_parameter("%SCALE") == 4
        lr = degrade(tf.zeros([64, 64, 3], tf.uint8), [0, 1])
        assert lr.shape == (16, 16, 3)
    finally:
        gin.clear_config()


def test_validation_examples_are_degraded_the_same_way_every_time(train_dataset):
    stored = pipeline.load_examples(train_dataset, "train", 3)
    degrade = degradations.RealWorldDegradation(scale=4)  # x4 from the x2 dataset's HR
    first = pipeline.degrade_examples(stored, degrade, scale=4)
    again = pipeline.degrade_examples(stored, degrade, scale=4)
    for (lr, hr), (lr_again, hr_again), (_, stored_hr) in zip(first, again, stored, strict=True):
        assert lr.dtype == np.uint8 and lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3)
        assert hr.shape[0] % 4 == 0 and hr.shape[1] % 4 == 0
        np.testing.assert_array_equal(hr, stored_hr[: hr.shape[0], : hr.shape[1]])
        np.testing.assert_array_equal(lr, lr_again)
        np.testing.assert_array_equal(hr, hr_again)
    # One seed per position: the same HR at two positions is degraded differently.
    (lr_0, _), (lr_1, _) = pipeline.degrade_examples([stored[0]] * 2, degrade, scale=4)
    assert not np.array_equal(lr_0, lr_1)
