r"""Training-step benchmark: this project's GAN step versus a seed-style Keras loop, with and
without XLA, and fed from TFRecords versus from memory.

  .venv/bin/python bench/train_step.py [--output=bench/results/train_step.json]

Every variant trains its own copy of the same networks (same builders, same seed, so the
same initial weights) on the same data, and all are measured in one run, interleaved round
by round (the order rotates each round) so machine noise hits them alike. Tables report
medians over rounds; ratios are medians of the per-round ratios.

Variants:
- `ours_memory`: `Trainer.gan_step` through the loop's compiled multi-step function
  (`Trainer.train`, `--steps` steps per call) under a one-device strategy, fed by
  `distribute_datasets_from_function` over `Dataset.from_tensors(batch).repeat()`.
- `ours_tfrecord`: the same, fed by `pipeline.make_input_fn` over real TFRecords (decode,
  random crop, flips), as `train_loop` does.
- `keras_seed`: the seeds' loop, `generator.predict_on_batch(lr)`, then
  `discriminator.train_on_batch` on real and on fake, then `combined.train_on_batch` on a
  generator + frozen discriminator model compiled with `[mse, binary_crossentropy]` and loss
  weights `[1, 1e-3]`: the same losses and weights as `Trainer`'s defaults. Keras 3 traces a
  model's train function at its first `train_on_batch` with the `trainable` flags of that
  moment, so `discriminator.trainable` is toggled around the calls (freezing it once before
  compiling, as Keras 2 code did, silently stops the discriminator from ever training).
- `ours_*_jit` / `keras_seed_jit`: the same with XLA (`train_loop.jit_compile=True`,
  `Model.compile(jit_compile=True)`); a model XLA cannot compile is reported, not hidden.

The dataset is made with the Beam job from scikit-image's bundled photographs (no download)
unless `--data` names an existing one (`--data_dir` is its old name).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import tempfile
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "bench/results/train_step.json", "Where the JSON results go.")
flags.DEFINE_integer("steps", 5, "Timed training steps per variant per round.")
flags.DEFINE_integer("warmup_steps", 2, "Untimed steps per variant after tracing.")
flags.DEFINE_integer("rounds", 5, "Interleaved measurement rounds (medians are over these).")
flags.DEFINE_integer("batch_size", 16, "Global batch size (images per step).")
flags.DEFINE_integer("hr_size", 64, "HR training crop side, pixels.")
flags.DEFINE_integer("scale", 4, "Super-resolution factor.")
flags.DEFINE_integer("generator_filters", 32, "srresnet_generator num_filters.")
flags.DEFINE_integer("generator_blocks", 4, "srresnet_generator num_blocks.")
flags.DEFINE_integer("discriminator_filters", 32, "srgan_discriminator num_filters.")
flags.DEFINE_integer("discriminator_stages", 3, "srgan_discriminator num_stages.")
flags.DEFINE_integer("discriminator_dense", 256, "srgan_discriminator dense_units.")
flags.DEFINE_enum("strategy", "one_device", ["one_device", "mirrored"], "Our step's strategy.")
flags.DEFINE_bool("jit", True, "Also measure the XLA (jit_compile=True) variants.")
flags.DEFINE_string("data", None, "An existing dlss dataset (default: make one).")
flags.DEFINE_alias("data_dir", "data")  # the old name, as dlss-train's
flags.DEFINE_integer("seed", 0, "Weight initialisation seed (identical for every variant).")
flags.DEFINE_multi_string(
    "config",
    [],
    "Shipped gin configs to measure with and without XLA (train_loop.jit_compile), each with "
    "its own networks, crop and batch; --gin_param shrinks them. Skips the other variants.",
)
flags.DEFINE_multi_string("gin_param", [], "Bindings applied after each --config.")

LEARNING_RATE = 1e-4
BETA_1 = 0.9
PIXEL_WEIGHT = 1.0
ADVERSARIAL_WEIGHT = 1e-3
# The aims.
AIM_SPEEDUP = 1.3
AIM_INPUT_RATIO = 1.05


def make_dataset(workdir: str) -> str:
    """Writes scikit-image's photographs as PNGs and runs the Beam job over them."""
    import numpy as np
    from skimage import data

    from beam_jobs import images_to_tfrecords
    from dlss_dist import imaging

    photos = os.path.join(workdir, "photos")
    os.makedirs(photos)
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera"):
        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        with open(os.path.join(photos, f"{name}.png"), "wb") as f:
            f.write(imaging.encode_png(image[..., :3].astype(np.uint8)))
    # Stored images are 1.5x the crop, so the random crop really moves.
    stored = -(-FLAGS.hr_size * 3 // 2 // FLAGS.scale) * FLAGS.scale
    output = os.path.join(workdir, "dataset")
    images_to_tfrecords.run_job(
        images_to_tfrecords.JobOptions(
            source="folder",
            inputs={"input_dir": photos},
            output_dir=output,
            scale=FLAGS.scale,
            hr_size=stored,
            patches_per_image=24,
            num_shards=4,
        )
    )
    return output


def build_networks():
    """The generator and discriminator every variant trains (same seed: same weights)."""
    import keras

    from dlss_dist.models import srgan_discriminator, srresnet_generator

    keras.utils.set_random_seed(FLAGS.seed)
    generator = srresnet_generator(
        FLAGS.scale, num_filters=FLAGS.generator_filters, num_blocks=FLAGS.generator_blocks
    )
    discriminator = srgan_discriminator(
        num_filters=FLAGS.discriminator_filters,
        num_stages=FLAGS.discriminator_stages,
        dense_units=FLAGS.discriminator_dense,
    )
    return generator, discriminator


def make_ours(strategy, input_fn, *, jit_compile: bool):
    """Our step as `train_loop` builds it; returns `run(num_steps) -> data_wait_seconds`."""

    from dlss_dist.training import trainer as trainer_lib

    with strategy.scope():
        generator, discriminator = build_networks()
        optimizers = [
            trainer_lib.build_optimizer(
                model,
                trainer_lib.make_optimizer(learning_rate=LEARNING_RATE, beta_1=BETA_1),
                mixed_precision=False,
            )
            for model in (generator, discriminator)
        ]
        trainer = trainer_lib.Trainer(
            generator=generator,
            discriminator=discriminator,
            generator_optimizer=optimizers[0],
            discriminator_optimizer=optimizers[1],
            global_batch_size=FLAGS.batch_size,
            pixel_loss="mse",
            adversarial_loss="bce",
            pixel_weight=PIXEL_WEIGHT,
            adversarial_weight=ADVERSARIAL_WEIGHT,
            jit_compile=jit_compile,
            time_input=True,
        )
    iterator = iter(strategy.distribute_datasets_from_function(input_fn))

    def run(num_steps: int) -> float:
        # Trainer.train returns Python floats, so it has waited for the steps.
        return trainer.train(iterator, num_steps)["data_wait_seconds"]

    return run


def make_keras_seed(lr, hr, *, jit_compile: bool):
    """The seeds' train_on_batch loop; returns `run(num_steps)` and what XLA compiled."""
    import keras
    import numpy as np

    generator, discriminator = build_networks()
    bce = keras.losses.BinaryCrossentropy(from_logits=True)  # the networks return logits
    lr_input = keras.Input(shape=(None, None, 3), name="lr")
    sr = generator(lr_input)
    combined = keras.Model(lr_input, [sr, discriminator(sr)], name="combined")
    real = np.ones([len(lr)], np.float32)
    fake = np.zeros([len(lr)], np.float32)

    def compile_models(discriminator_jit: bool, combined_jit: bool) -> None:
        discriminator.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1),
            loss=bce,
            jit_compile=discriminator_jit,
        )
        combined.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1),
            loss=["mse", bce],
            loss_weights=[PIXEL_WEIGHT, ADVERSARIAL_WEIGHT],
            jit_compile=combined_jit,
        )

    def run(num_steps: int) -> None:
        for _ in range(num_steps):
            sr_batch = generator.predict_on_batch(lr)
            discriminator.trainable = True
            discriminator.train_on_batch(hr, real)
            discriminator.train_on_batch(sr_batch, fake)
            discriminator.trainable = False
            combined.train_on_batch(lr, [hr, real])

    # The first call traces; with XLA, find out which model compiles on this device.
    compiled = {"discriminator": jit_compile, "combined": jit_compile}
    errors = {}
    compile_models(jit_compile, jit_compile)
    if jit_compile:
        for name, model, batch in (
            ("discriminator", discriminator, (hr, real)),
            ("combined", combined, (lr, [hr, real])),
        ):
            model.trainable = True
            discriminator.trainable = name == "discriminator"
            try:
                model.train_on_batch(*batch)
            except Exception as error:  # XLA reports many error types
                errors[name] = _first_line(error)
                compiled[name] = False
        if errors:
            compile_models(compiled["discriminator"], compiled["combined"])
    _check_seed_semantics(generator, discriminator, combined, run, lr, hr, real)
    return run, compiled, errors


def _check_seed_semantics(generator, discriminator, combined, run, lr, hr, real) -> None:
    """Fails loudly if the baseline does not train D in its step and G (only) in combined."""
    import numpy as np

    run(1)  # traces every function with the trainable flags run() uses

    def changed(before, model):
        return any(
            not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)
        )

    d_before, g_before = discriminator.get_weights(), generator.get_weights()
    discriminator.trainable = True
    discriminator.train_on_batch(hr, real)
    if not changed(d_before, discriminator):
        raise RuntimeError("keras_seed: discriminator.train_on_batch did not train D.")
    d_before = discriminator.get_weights()
    discriminator.trainable = False
    combined.train_on_batch(lr, [hr, real])
    if changed(d_before, discriminator) or not changed(g_before, generator):
        raise RuntimeError("keras_seed: combined.train_on_batch must train G with D frozen.")


def _first_line(error: Exception) -> str:
    """A one-line reason; for XLA, the op it has no kernel for."""
    text = str(error)
    match = re.search(r"No registered '(\w+)' OpKernel for (\w+)", text)
    if match:
        return f"XLA has no {match.group(2)} kernel for {match.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def measure(variants: dict, rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step, one value per round; the variant order rotates every round."""
    names = list(variants)
    seconds = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            variants[name](steps)
            seconds[name].append((time.perf_counter() - start) / steps)
        logging.info(
            "Round %d/%d: %s",
            round_index + 1,
            rounds,
            ", ".join(f"{name} {1000 * seconds[name][-1]:.0f} ms/step" for name in names),
        )
    return seconds


def paired_ratio(seconds, numerator: str, denominator: str) -> float | None:
    """Median over rounds of numerator/denominator step time (same-round pairs)."""
    if numerator not in seconds or denominator not in seconds:
        return None
    pairs = zip(seconds[numerator], seconds[denominator], strict=True)
    return round(statistics.median(a / b for a, b in pairs), 3)


def run_benchmark(workdir: str) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from dlss_dist.data import pipeline

    data_dir = FLAGS.data or make_dataset(workdir)
    record_input_fn = pipeline.make_input_fn(
        data_dir,
        global_batch_size=FLAGS.batch_size,
        scale=FLAGS.scale,
        hr_patch_size=FLAGS.hr_size,
    )
    # One real batch from the same pipeline: the in-memory variants all train on it.
    first = next(iter(record_input_fn(tf.distribute.InputContext())))
    lr, hr = (np.asarray(t) for t in first)

    def memory_input_fn(context):
        del context
        return tf.data.Dataset.from_tensors((lr, hr)).repeat()

    if FLAGS.strategy == "one_device":
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    else:
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])

    variants, data_wait, status = {}, {}, {}

    def add_ours(name, input_fn, jit_compile):
        logging.info("Building and tracing %s.", name)
        try:
            run = make_ours(strategy, input_fn, jit_compile=jit_compile)
            run(FLAGS.warmup_steps)
        except Exception as error:  # XLA reports many error types
            status[name] = f"failed: {_first_line(error)}"
            logging.warning("%s: %s", name, status[name])
            return
        status[name] = "ok"
        data_wait[name] = []

        def timed(num_steps):
            data_wait[name].append(run(num_steps) / num_steps)

        variants[name] = timed

    def add_keras(name, jit_compile):
        logging.info("Building and tracing %s.", name)
        run, compiled, errors = make_keras_seed(lr, hr, jit_compile=jit_compile)
        run(FLAGS.warmup_steps)
        status[name] = "ok"
        if jit_compile:
            status[name] = ", ".join(
                f"{model} {'XLA' if ok else 'no XLA (' + errors[model] + ')'}"
                for model, ok in compiled.items()
            )
        variants[name] = run

    add_ours("ours_memory", memory_input_fn, False)
    add_ours("ours_tfrecord", record_input_fn, False)
    add_keras("keras_seed", False)
    if FLAGS.jit:
        add_ours("ours_memory_jit", memory_input_fn, True)
        add_keras("keras_seed_jit", True)

    load_before = os.getloadavg()
    seconds = measure(variants, FLAGS.rounds, FLAGS.steps)
    load_after = os.getloadavg()

    rows = []
    for name in status:
        row = {"variant": name, "status": status[name]}
        if name in seconds:
            median = statistics.median(seconds[name])
            row.update(
                ms_per_step_median=round(1000 * median, 1),
                images_per_second=round(FLAGS.batch_size / median, 2),
                ms_per_step_all=[round(1000 * s, 1) for s in seconds[name]],
            )
        if data_wait.get(name):
            row["data_wait_ms_per_step_median"] = round(
                1000 * statistics.median(data_wait[name]), 2
            )
        rows.append(row)
    speedup = paired_ratio(seconds, "keras_seed", "ours_memory")
    speedup_jit = paired_ratio(seconds, "keras_seed_jit", "ours_memory_jit")
    # Our step without XLA against the seed loop's best (XLA where Keras manages it).
    speedup_best = paired_ratio(seconds, "keras_seed_jit", "ours_memory")
    input_ratio = paired_ratio(seconds, "ours_tfrecord", "ours_memory")
    return {
        "config": {
            "generator": (
                f"srresnet_generator(scale={FLAGS.scale}, num_filters={FLAGS.generator_filters}, "
                f"num_blocks={FLAGS.generator_blocks})"
            ),
            "discriminator": (
                f"srgan_discriminator(num_filters={FLAGS.discriminator_filters}, "
                f"num_stages={FLAGS.discriminator_stages}, "
                f"dense_units={FLAGS.discriminator_dense})"
            ),
            "batch_size": FLAGS.batch_size,
            "hr_size": FLAGS.hr_size,
            "lr_size": FLAGS.hr_size // FLAGS.scale,
            "strategy": FLAGS.strategy,
            "steps_per_round": FLAGS.steps,
            "warmup_steps": FLAGS.warmup_steps,
            "rounds": FLAGS.rounds,
            "losses": f"mse x {PIXEL_WEIGHT} + bce x {ADVERSARIAL_WEIGHT}; D: bce real + bce fake",
            "optimizers": f"Adam(learning_rate={LEARNING_RATE}, beta_1={BETA_1}) for G and D",
            "data_dir": data_dir if FLAGS.data else "made from scikit-image photographs",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "rows": rows,
        "ratios": {
            "speedup_vs_keras_seed": speedup,
            "speedup_vs_keras_seed_jit": speedup_jit,
            "speedup_ours_no_xla_vs_keras_seed_jit": speedup_best,
            "input_ratio_tfrecord_vs_memory": input_ratio,
        },
        "aims": {
            f"speedup >= {AIM_SPEEDUP}": None if speedup is None else speedup >= AIM_SPEEDUP,
            f"input ratio <= {AIM_INPUT_RATIO}": (
                None if input_ratio is None else input_ratio <= AIM_INPUT_RATIO
            ),
        },
    }


def markdown(results: dict) -> str:
    """The results as a markdown table plus the ratios."""
    lines = [
        "| variant | ms/step (median) | images/s | data wait ms/step | status |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['variant']} | {row.get('ms_per_step_median', '-')} | "
            f"{row.get('images_per_second', '-')} | "
            f"{row.get('data_wait_ms_per_step_median', '-')} | {row['status']} |"
        )
    lines.append("")
    for name, value in results["ratios"].items():
        lines.append(f"- {name}: {value if value is not None else 'n/a'}")
    for name, met in results["aims"].items():
        lines.append(f"- aim {name}: {'met' if met else 'not met' if met is False else 'n/a'}")
    machine = results["machine"]
    lines.append(
        f"- machine: {machine['cpus']} CPUs, shared (load average "
        f"{machine['load_average_before'][0]} -> {machine['load_average_after'][0]}); "
        f"TF {machine['tensorflow']}, Keras {machine['keras']}"
    )
    return "\n".join(lines)


def config_variant(gin_file: str, *, jit_compile: bool):
    """A config's own networks, losses and batch through `Trainer.train`, fed from memory.

    Returns (`run(num_steps)`, description of the shape trained).
    """
    import gin
    import tensorflow as tf

    from dlss_dist import config
    from dlss_dist.training import loop

    gin.clear_config()
    config.parse_config([gin_file], FLAGS.gin_param)
    scale = gin.query_parameter("%SCALE")
    crop = gin.query_parameter("%HR_CROP")
    batch = gin.query_parameter("%GLOBAL_BATCH_SIZE")
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    tf.keras.utils.set_random_seed(FLAGS.seed)
    trainer, _ = loop.build_trainer(
        strategy,
        global_batch_size=batch,
        ema_decay=None,
        mixed_precision=False,
        warmup_steps=0,
        jit_compile=jit_compile,
        time_input=False,
    )
    lr = tf.random.stateless_uniform([batch, crop // scale, crop // scale, 3], [1, 2], -1.0, 1.0)
    hr = tf.random.stateless_uniform([batch, crop, crop, 3], [3, 4], -1.0, 1.0)
    dataset_fn = lambda context: tf.data.Dataset.from_tensors((lr, hr)).repeat()  # noqa: E731
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

    def run(num_steps: int) -> None:
        trainer.train(iterator, num_steps)

    return run, f"batch {batch}, HR crop {crop}, x{scale}"


def run_configs() -> dict:
    """Each --config with and without XLA, interleaved per config; ratio no-XLA / XLA time."""
    rows = []
    for gin_file in FLAGS.config:
        name = os.path.basename(gin_file)
        variants, status, shape = {}, {}, ""
        for jit in (False, True):
            label = f"{name} {'XLA' if jit else 'no XLA'}"
            logging.info("Building and tracing %s.", label)
            try:
                run, shape = config_variant(gin_file, jit_compile=jit)
                run(FLAGS.warmup_steps)
            except Exception as error:  # XLA reports many error types
                status[label] = f"failed: {_first_line(error)}"
                logging.warning("%s: %s", label, status[label])
                continue
            status[label] = "ok"
            variants[label] = run
        # One untimed round of --steps first: the first multi-step call after tracing was
        # seen to take 100x longer than the later ones (one-time set-up inside TF).
        for run in variants.values():
            run(FLAGS.steps)
        seconds = measure(variants, FLAGS.rounds, FLAGS.steps)
        off, on = f"{name} no XLA", f"{name} XLA"
        rows.append(
            {
                "config": name,
                "shape": shape,
                "ms_per_step_no_xla": _median_ms(seconds.get(off)),
                "ms_per_step_xla": _median_ms(seconds.get(on)),
                "speedup_xla": paired_ratio(seconds, off, on),
                "status": {"no_xla": status.get(off), "xla": status.get(on)},
                "seconds": seconds,
            }
        )
    return {
        "command": "bench/train_step.py " + " ".join(f"--config={c}" for c in FLAGS.config),
        "gin_params": FLAGS.gin_param,
        "steps": FLAGS.steps,
        "rounds": FLAGS.rounds,
        "rows": rows,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def _median_ms(values) -> float | None:
    return round(1000 * statistics.median(values), 1) if values else None


def configs_markdown(results: dict) -> str:
    lines = [
        "| config | trained shape | ms/step, no XLA | ms/step, XLA | XLA speedup (paired median) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['config']} | {row['shape']} | {row['ms_per_step_no_xla']} | "
            f"{row['ms_per_step_xla']} | {row['speedup_xla']} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.config:
        results = run_configs()
        if os.path.dirname(FLAGS.output):
            os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=2)
        print(configs_markdown(results))
        return
    for name in ("steps", "warmup_steps", "rounds", "batch_size"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be >= 1.")
    if FLAGS.hr_size % FLAGS.scale:
        raise app.UsageError(f"--hr_size={FLAGS.hr_size} is not divisible by --scale.")
    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as workdir:
        results = run_benchmark(workdir)
    if os.path.dirname(FLAGS.output):
        os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)
    logging.info("Wrote %s.", FLAGS.output)
    print(markdown(results))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
