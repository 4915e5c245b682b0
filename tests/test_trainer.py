"""The per-replica step in process: loss scaling under mixed precision, EMA."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dlss_dist.models import discriminators, generators
from dlss_dist.training import trainer as trainer_lib
from dlss_dist.training.trainer import Trainer


def _networks(policy: str):
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        generator = generators.srresnet_generator(scale=2, num_filters=8, num_blocks=1)
        discriminator = discriminators.dcgan_discriminator(
            conv_filters=8, kernel=3, num_pooling_stages=2
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return generator, discriminator


def _batch() -> tuple[tf.Tensor, tf.Tensor]:
    lr = tf.random.stateless_uniform([2, 8, 8, 3], seed=[1, 2], minval=-1.0, maxval=1.0)
    hr = tf.random.stateless_uniform([2, 16, 16, 3], seed=[3, 4], minval=-1.0, maxval=1.0)
    return lr, hr


def _trainer(generator, discriminator, optimizers, **kwargs) -> Trainer:
    for optimizer, model in zip(optimizers, (generator, discriminator), strict=True):
        optimizer.build(model.trainable_variables)
    return Trainer(
        generator=generator,
        discriminator=discriminator,
        generator_optimizer=optimizers[0],
        discriminator_optimizer=optimizers[1],
        global_batch_size=2,
        **kwargs,
    )


def _weight_change(step_name: str, *, mixed_precision: bool) -> np.ndarray:
    """Generator weight change (flattened) after one step with plain SGD(1.0)."""
    generator, discriminator = _networks("mixed_float16" if mixed_precision else "float32")
    optimizers = [keras.optimizers.SGD(learning_rate=1.0) for _ in range(2)]
    if mixed_precision:
        optimizers = [keras.optimizers.LossScaleOptimizer(o) for o in optimizers]
    trainer = _trainer(
        generator,
        discriminator,
        optimizers,
        mixed_precision=mixed_precision,
        adversarial_weight=1.0,
    )
    before = np.concatenate([w.ravel() for w in generator.get_weights()])
    getattr(trainer, step_name)(*_batch())
    return np.concatenate([w.ravel() for w in generator.get_weights()]) - before


@pytest.mark.parametrize("step_name", ["pixel_step", "gan_step"])
def test_mixed_precision_updates_match_float32(step_name):
    # LossScaleOptimizer divides gradients by the loss scale, so the step must have
    # multiplied the loss by it inside the tape; otherwise updates shrink 32768-fold.
    reference = _weight_change(step_name, mixed_precision=False)
    mixed = _weight_change(step_name, mixed_precision=True)
    assert np.abs(reference).max() > 1e-4
    np.testing.assert_allclose(mixed, reference, atol=0.02 * np.abs(reference).max())


def test_ema_tracks_the_generator():
    generator, discriminator = _networks("float32")
    ema = generators.srresnet_generator(scale=2, num_filters=8, num_blocks=1)
    ema.set_weights(generator.get_weights())
    optimizers = [keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2)]
    trainer = _trainer(generator, discriminator, optimizers, ema_generator=ema, ema_decay=0.5)
    start = [w.copy() for w in generator.get_weights()]
    trainer.pixel_step(*_batch())
    for e, s, w in zip(ema.get_weights(), start, generator.get_weights(), strict=True):
        np.testing.assert_allclose(e, 0.5 * s + 0.5 * w, rtol=1e-5, atol=1e-7)


def _flat(model) -> np.ndarray:
    return np.concatenate([w.ravel() for w in model.get_weights()])


def _plain_trainer(**kwargs):
    generator, discriminator = _networks("float32")
    optimizers = [keras.optimizers.SGD(learning_rate=0.1) for _ in range(2)]
    return _trainer(generator, discriminator, optimizers, **kwargs)


def test_pixel_step_trains_the_generator_only():
    trainer = _plain_trainer()
    g_before, d_before = _flat(trainer.generator), _flat(trainer.discriminator)
    metrics = trainer.pixel_step(*_batch())
    assert np.abs(_flat(trainer.generator) - g_before).max() > 0
    np.testing.assert_array_equal(_flat(trainer.discriminator), d_before)
    assert float(metrics["d_loss"]) == 0.0 and float(metrics["adversarial"]) == 0.0


def test_gan_step_updates_discriminator_then_generator():
    trainer = _plain_trainer()
    order = []
    for name, optimizer in (
        ("discriminator", trainer.discriminator_optimizer),
        ("generator", trainer.generator_optimizer),
    ):
        apply = optimizer.apply_gradients

        def recording(pairs, _apply=apply, _name=name):
            order.append(_name)
            return _apply(pairs)

        optimizer.apply_gradients = recording
    g_before, d_before = _flat(trainer.generator), _flat(trainer.discriminator)
    trainer.gan_step(*_batch())
    assert order == ["discriminator", "generator"]
    assert np.abs(_flat(trainer.generator) - g_before).max() > 0
    assert np.abs(_flat(trainer.discriminator) - d_before).max() > 0


@pytest.mark.slow
def test_train_runs_warmup_then_gan_steps_and_counts_them():
    # 3 steps from step 0 with warmup_steps=2: two pixel steps (D untouched), then one GAN step.
    trainer = _plain_trainer(warmup_steps=2, time_input=False)
    dataset = tf.data.Dataset.from_tensors(_batch()).repeat()
    iterator = iter(tf.distribute.get_strategy().experimental_distribute_dataset(dataset))
    d_before = _flat(trainer.discriminator)
    metrics = trainer.train(iterator, 2)
    assert int(trainer.global_step.numpy()) == 2
    assert metrics["d_loss"] == 0.0
    np.testing.assert_array_equal(_flat(trainer.discriminator), d_before)
    metrics = trainer.train(iterator, 1)
    assert int(trainer.global_step.numpy()) == 3
    assert metrics["d_loss"] > 0.0
    assert np.abs(_flat(trainer.discriminator) - d_before).max() > 0


def test_trainer_refuses_a_negative_warmup():
    with pytest.raises(ValueError, match="warmup_steps must be an integer >= 0"):
        _plain_trainer(warmup_steps=-1)


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"pixel_loss": "l2"}, "`Trainer.pixel_loss` must be one of 'mse', 'l1', 'charbonnier'"),
        ({"adversarial_loss": "wgan"}, "`Trainer.adversarial_loss` must be one of"),
    ],
)
def test_trainer_refuses_an_unknown_loss_before_any_step(setting, message):
    with pytest.raises(ValueError, match=message):
        _plain_trainer(**setting)


def test_batch_psnr_of_an_exact_match_is_finite():
    """A saturated patch whose SR clips to the same white is an exact match: the training
    PSNR metric must stay finite, or the controller stops the run as if a loss diverged."""
    hr = tf.ones([2, 8, 8, 3])
    sr = tf.concat([tf.fill([1, 8, 8, 3], 1.2), tf.fill([1, 8, 8, 3], 0.0)], axis=0)
    psnr = trainer_lib.batch_psnr(hr, sr).numpy()
    assert psnr[0] == trainer_lib.MAX_PSNR
    assert 5.0 < psnr[1] < 7.0  # [0, 1] scale: MSE 0.25 -> 6.02 dB
