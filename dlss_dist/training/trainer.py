"""The inner loop: per-replica GAN steps and `Trainer.train(iterator, num_steps)`.

The controller (controller.py) owns the outer loop: when to train how many steps, and the
periodic actions between chunks. This module owns what happens inside a chunk: one step on
one replica's batch, compiled `num_steps` at a time over the distributed iterator. Losses are
per example and scaled once with `tf.nn.compute_average_loss` to the global batch, so
summing the replicas' values (`strategy.reduce(SUM)`) gives the global mean whatever the
replica count.
"""

from __future__ import annotations

import gin
import keras
import tensorflow as tf

from dlss_dist.models import losses
from dlss_dist.models.layers import check_choice

METRICS = (
    "g_loss",
    "d_loss",
    "pixel",
    "adversarial",
    "perceptual",
    "d_real",
    "d_fake",
    "psnr",
)


# The PSNR of an exact match, e.g. a saturated sky patch whose SR clips to the same white:
# a finite cap, so the metric never trips the controller's non-finite check.
MAX_PSNR = 100.0


def batch_psnr(hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
    """Per-example PSNR in dB of [-1, 1] images, measured on [0, 1] after clipping; at most
    MAX_PSNR."""
    hr01 = (tf.cast(hr, tf.float32) + 1.0) / 2.0
    sr01 = tf.clip_by_value((tf.cast(sr, tf.float32) + 1.0) / 2.0, 0.0, 1.0)
    return tf.minimum(tf.image.psnr(hr01, sr01, max_val=1.0), MAX_PSNR)


def build_optimizer(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, *, mixed_precision: bool
) -> keras.optimizers.Optimizer:
    """Builds `optimizer`'s slots for `model` now, inside the caller's strategy scope.

    Building before the first `strategy.run` avoids TF creating slot variables inside a
    replica function, which fails with a placeholder error. Under mixed precision the
    optimizer is wrapped for dynamic loss scaling.
    """
    if mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


@gin.configurable
def make_optimizer(
    learning_rate: float = 1e-4,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    decay_steps: int = 0,
    decay_rate: float = 0.5,
) -> keras.optimizers.Optimizer:
    """Adam, optionally with a staircase step decay of the learning rate.

    Bind it per network with gin scopes: `generator/make_optimizer.learning_rate = 1e-4`.

    Args:
      learning_rate: initial learning rate.
      beta_1: Adam's first-moment decay.
      beta_2: Adam's second-moment decay.
      decay_steps: multiply the learning rate by `decay_rate` every this many steps
        (0: constant).
      decay_rate: the factor of each decay.
    """
    if learning_rate <= 0:
        raise ValueError(f"make_optimizer.learning_rate must be > 0, got {learning_rate}.")
    schedule = learning_rate
    if decay_steps:
        schedule = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=decay_steps, decay_rate=decay_rate, staircase=True
        )
    return keras.optimizers.Adam(learning_rate=schedule, beta_1=beta_1, beta_2=beta_2)


@gin.configurable(
    denylist=[
        "generator",
        "discriminator",
        "generator_optimizer",
        "discriminator_optimizer",
        "global_batch_size",
        "ema_generator",
        "ema_decay",
        "mixed_precision",
        "warmup_steps",
        "jit_compile",
        "time_input",
    ]
)
class Trainer:
    """GAN training: pixel-loss warm-up steps, then adversarial steps (D updated before G).

    `train(iterator, num_steps)` runs `num_steps` steps over a distributed iterator and
    advances `global_step`; `pixel_step` and `gan_step` are the per-replica bodies.
    """

    def __init__(
        self,
        *,
        generator: keras.Model,
        discriminator: keras.Model,
        generator_optimizer: keras.optimizers.Optimizer,
        discriminator_optimizer: keras.optimizers.Optimizer,
        global_batch_size: int,
        ema_generator: keras.Model | None = None,
        ema_decay: float | None = None,
        mixed_precision: bool = False,
        warmup_steps: int = 0,
        jit_compile: bool = False,
        time_input: bool = True,
        pixel_loss: str = "mse",
        adversarial_loss: str = "bce",
        pixel_weight: float = 1.0,
        adversarial_weight: float = 1e-3,
        perceptual_loss: losses.PerceptualLoss | None = None,
        perceptual_weight: float = 0.0,
    ):
        """Creates the step. Call inside `strategy.scope()`.

        Args:
          generator: LR -> SR network, images in [-1, 1].
          discriminator: image -> logits [N].
          generator_optimizer: built (see `build_optimizer`).
          discriminator_optimizer: built (see `build_optimizer`).
          global_batch_size: examples per step over all replicas (loss scaling).
          ema_generator: a copy of `generator` that tracks its exponential moving average.
          ema_decay: the EMA decay per step (None exactly when there is no EMA generator).
          mixed_precision: optimizers are LossScaleOptimizers; scale losses.
          warmup_steps: the first this many global steps are `pixel_step`s.
          jit_compile: compile the replica step with XLA.
          time_input: measure in-graph how long each chunk waited for data (must be False
            under op determinism, which forbids tf.timestamp).
          pixel_loss: 'mse' (seed), 'l1' or 'charbonnier'.
          adversarial_loss: 'bce' (seed), 'ragan' or 'hinge'.
          pixel_weight: weight of the pixel loss in the generator loss.
          adversarial_weight: weight of the adversarial loss in the generator loss.
          perceptual_loss: optional VGG feature loss (weights from a user file).
          perceptual_weight: its weight; must be > 0 exactly when it is given.
        """
        if global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}.")
        # Checked here, not only where the losses are traced: a typo then fails before any
        # data is read, with the binding's name instead of a traced call stack.
        check_choice("Trainer.pixel_loss", pixel_loss, losses.PIXEL_LOSSES)
        check_choice("Trainer.adversarial_loss", adversarial_loss, losses.ADVERSARIAL_LOSSES)
        if pixel_weight < 0 or adversarial_weight < 0 or perceptual_weight < 0:
            raise ValueError("Trainer loss weights must be >= 0.")
        if (perceptual_loss is None) != (perceptual_weight == 0):
            raise ValueError(
                "Trainer.perceptual_weight must be > 0 exactly when Trainer.perceptual_loss "
                f"is set (got weight {perceptual_weight})."
            )
        if (ema_generator is None) != (ema_decay is None):
            raise ValueError("Give ema_generator and ema_decay together, or neither.")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}.")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}.")
        self.strategy = tf.distribute.get_strategy()
        self.global_step = tf.Variable(
            0,
            dtype=tf.int64,
            trainable=False,
            name="global_step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        self.warmup_steps = warmup_steps
        self._time_input = time_input
        self._train_functions = {
            "pixel": self._compile(self.pixel_step, jit_compile, time_input),
            "gan": self._compile(self.gan_step, jit_compile, time_input),
        }
        self.generator = generator
        self.discriminator = discriminator
        self.generator_optimizer = generator_optimizer
        self.discriminator_optimizer = discriminator_optimizer
        self.ema_generator = ema_generator
        self._global_batch_size = global_batch_size
        self._ema_decay = ema_decay
        self._mixed_precision = mixed_precision
        self._pixel_loss = pixel_loss
        self._adversarial_loss = adversarial_loss
        self._pixel_weight = pixel_weight
        self._adversarial_weight = adversarial_weight
        self._perceptual_loss = perceptual_loss
        self._perceptual_weight = perceptual_weight

    def train(self, iterator, num_steps: int) -> dict[str, float]:
        """Runs `num_steps` global steps from a distributed iterator; advances `global_step`.

        Steps before `warmup_steps` are pixel steps, later ones GAN steps (a call that
        crosses the boundary runs both kinds in order).

        Returns:
          The global means over the steps of every name in METRICS, plus
          "data_wait_seconds" (time spent waiting for input) when input timing is on.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        step = int(self.global_step.numpy())
        pixel_steps = min(num_steps, max(0, self.warmup_steps - step))
        totals = dict.fromkeys(METRICS, 0.0)
        data_wait = 0.0
        for phase, count in (("pixel", pixel_steps), ("gan", num_steps - pixel_steps)):
            if count:
                means, wait = self._train_functions[phase](iterator, tf.constant(count))
                for name, value in means.items():
                    totals[name] += float(value) * count
                data_wait += float(wait)
        metrics = {name: total / num_steps for name, total in totals.items()}
        if self._time_input:
            metrics["data_wait_seconds"] = data_wait
        return metrics

    def _compile(self, replica_step, jit_compile: bool, time_input: bool):
        """`num_steps` replica steps per call, with optional in-graph data-wait timing."""
        strategy = self.strategy
        step_fn = tf.function(replica_step, jit_compile=True) if jit_compile else replica_step

        @tf.function
        def train_steps(iterator, num_steps):
            totals = {name: tf.constant(0.0) for name in METRICS}
            data_wait = tf.constant(0.0, tf.float64)
            for _ in tf.range(num_steps):
                if time_input:
                    start = tf.timestamp()
                    with tf.control_dependencies([start]):
                        lr, hr = next(iterator)
                    with tf.control_dependencies(strategy.experimental_local_results(hr)):
                        data_wait += tf.timestamp() - start
                else:
                    lr, hr = next(iterator)
                per_replica = strategy.run(step_fn, args=(lr, hr))
                # Reassign (not mutate) so AutoGraph carries the dict through the loop.
                totals = {
                    name: total
                    + strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[name], axis=None)
                    for name, total in totals.items()
                }
            self.global_step.assign_add(tf.cast(num_steps, tf.int64))
            steps = tf.cast(num_steps, tf.float32)
            return {name: value / steps for name, value in totals.items()}, data_wait

        return train_steps

    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(
            tf.cast(per_example, tf.float32), global_batch_size=self._global_batch_size
        )

    def _regularization(self, model: keras.Model) -> tf.Tensor:
        if not model.losses:
            return tf.constant(0.0)
        return tf.nn.scale_regularization_loss(tf.add_n(model.losses))

    def _scaled(self, optimizer, loss: tf.Tensor) -> tf.Tensor:
        """The loss to differentiate: multiplied by the dynamic loss scale under mixed
        precision (call inside the tape, so the product is recorded)."""
        return optimizer.scale_loss(loss) if self._mixed_precision else loss

    def _apply(self, optimizer, tape, scaled_loss, model) -> None:
        variables = model.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        # LossScaleOptimizer unscales and skips non-finite steps itself.
        optimizer.apply_gradients(zip(gradients, variables, strict=True))

    def _generator_content_loss(self, hr, sr) -> tuple[tf.Tensor, tf.Tensor]:
        pixel = losses.pixel_loss(hr, sr, kind=self._pixel_loss)
        if self._perceptual_loss is None:
            return pixel, tf.zeros_like(pixel)
        return pixel, tf.cast(self._perceptual_loss(hr, sr), tf.float32)

    def pixel_step(self, lr: tf.Tensor, hr: tf.Tensor) -> dict[str, tf.Tensor]:
        """Warm-up step: the generator learns the pixel (+ perceptual) loss alone."""
        with tf.GradientTape() as generator_tape:
            sr = tf.cast(self.generator(lr, training=True), tf.float32)
            pixel, perceptual = self._generator_content_loss(hr, sr)
            g_per_example = self._pixel_weight * pixel + self._perceptual_weight * perceptual
            g_loss = self._average(g_per_example) + self._regularization(self.generator)
            g_scaled = self._scaled(self.generator_optimizer, g_loss)
        self._apply(self.generator_optimizer, generator_tape, g_scaled, self.generator)
        self._update_ema()
        zero = tf.constant(0.0)
        return {
            "g_loss": g_loss,
            "d_loss": zero,
            "pixel": self._average(pixel),
            "adversarial": zero,
            "perceptual": self._average(perceptual),
            "d_real": zero,
            "d_fake": zero,
            "psnr": self._average(batch_psnr(hr, sr)),
        }

    def gan_step(self, lr: tf.Tensor, hr: tf.Tensor) -> dict[str, tf.Tensor]:
        """Adversarial step: both losses from one forward pass, D applied before G."""
        with tf.GradientTape() as generator_tape, tf.GradientTape() as discriminator_tape:
            sr = tf.cast(self.generator(lr, training=True), tf.float32)
            real_logits = tf.cast(self.discriminator(hr, training=True), tf.float32)
            fake_logits = tf.cast(self.discriminator(sr, training=True), tf.float32)
            d_per_example = losses.discriminator_loss(
                real_logits, fake_logits, kind=self._adversarial_loss
            )
            d_loss = self._average(d_per_example) + self._regularization(self.discriminator)
            pixel, perceptual = self._generator_content_loss(hr, sr)
            adversarial = losses.generator_adversarial_loss(
                real_logits, fake_logits, kind=self._adversarial_loss
            )
            g_per_example = (
                self._pixel_weight * pixel
                + self._adversarial_weight * adversarial
                + self._perceptual_weight * perceptual
            )
            g_loss = self._average(g_per_example) + self._regularization(self.generator)
            d_scaled = self._scaled(self.discriminator_optimizer, d_loss)
            g_scaled = self._scaled(self.generator_optimizer, g_loss)
        self._apply(self.discriminator_optimizer, discriminator_tape, d_scaled, self.discriminator)
        self._apply(self.generator_optimizer, generator_tape, g_scaled, self.generator)
        self._update_ema()
        return {
            "g_loss": g_loss,
            "d_loss": d_loss,
            "pixel": self._average(pixel),
            "adversarial": self._average(adversarial),
            "perceptual": self._average(perceptual),
            "d_real": self._average(losses.logits_mean(tf.sigmoid(real_logits))),
            "d_fake": self._average(losses.logits_mean(tf.sigmoid(fake_logits))),
            "psnr": self._average(batch_psnr(hr, sr)),
        }

    def _update_ema(self) -> None:
        """ema = decay * ema + (1 - decay) * weights, once per step on every device.

        Keras variables are mirrored with aggregation NONE, which forbids assigning them in
        a replica context; the update therefore runs in cross-replica context through
        `merge_call`, where `extended.update` hands each device its own components.
        """
        if self.ema_generator is None:
            return
        decay = self._ema_decay
        pairs = [
            (ema.value, weight.value)
            for ema, weight in zip(self.ema_generator.weights, self.generator.weights, strict=True)
        ]

        def assign(ema, weight):
            return ema.assign(decay * ema + (1.0 - decay) * tf.cast(weight, ema.dtype))

        def merge_fn(strategy):
            for ema, weight in pairs:
                strategy.extended.update(ema, assign, args=(weight,), group=False)

        tf.distribute.get_replica_context().merge_call(merge_fn)
