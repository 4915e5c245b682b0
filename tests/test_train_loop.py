"""train_loop in process: every shipped config trains, settings are refused up front naming
their binding, a model directory is protected (lock, total_steps, architecture)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import time

import gin
import numpy as np
import pytest
import tensorflow as tf
import training_helpers as th

from dlss_dist import checkpoints, config, models, run_lock
from dlss_dist import model_dir as model_dir_lib
from dlss_dist.training import loop

GIN_DIR = config.packaged_configs_dir()

# Each shipped config shrunk to seconds on a CPU and to the test dataset (x2, 32 px HR).
SHRINK = {
    "base.gin": [
        "srresnet_generator.num_filters = 8",
        "srresnet_generator.num_blocks = 1",
        "srgan_discriminator.num_filters = 8",
        "srgan_discriminator.num_stages = 2",
        "srgan_discriminator.dense_units = 16",
    ],
    "demo.gin": [
        "srresnet_generator.num_filters = 8",
        "srresnet_generator.num_blocks = 1",
        "srgan_discriminator.num_filters = 8",
        "srgan_discriminator.num_stages = 2",
        "srgan_discriminator.dense_units = 16",
    ],
    "tiny_test.gin": [],
    "dcgan_folder_128_256.gin": [
        "dcgan_generator.input_dimensions = (8, 8, 3)",
        "dcgan_generator.output_dimensions = (16, 16, 3)",
        "dcgan_generator.conv_filters = 8",
        "dcgan_generator.kernel = (3, 3)",
        "dcgan_discriminator.conv_filters = 8",
        "dcgan_discriminator.kernel = (3, 3)",
    ],
    # Online degradation: the whole 32 px HR image, so LR is 16 px after two stages.
    "realworld_x4.gin": [
        "srresnet_generator.num_filters = 8",
        "srresnet_generator.num_blocks = 1",
        "srgan_discriminator.num_filters = 8",
        "srgan_discriminator.num_stages = 2",
        "srgan_discriminator.dense_units = 16",
        "HR_CROP = 32",
    ],
    "realworld_x4_bicubic_baseline.gin": [
        "srresnet_generator.num_filters = 8",
        "srresnet_generator.num_blocks = 1",
        "srgan_discriminator.num_filters = 8",
        "srgan_discriminator.num_stages = 2",
        "srgan_discriminator.dense_units = 16",
    ],
    "realworld_x4_gan.gin": [
        "srresnet_generator.num_filters = 8",
        "srresnet_generator.num_blocks = 1",
        "unet_discriminator.num_filters = 8",
        "HR_CROP = 32",
    ],
    "realworld_x4_oracle.gin": [
        "srresnet_generator.num_filters = 8",
        "srresnet_generator.num_blocks = 1",
        "srgan_discriminator.num_filters = 8",
        "srgan_discriminator.num_stages = 2",
        "srgan_discriminator.dense_units = 16",
        "HR_CROP = 32",
    ],
    "realworld_x4_gpu.gin": [
        "srresnet_generator.num_filters = 8",
        "srresnet_generator.num_blocks = 1",
        "unet_discriminator.num_filters = 8",
        "HR_CROP = 32",
        "train_loop.mixed_precision = False",
    ],
    "sr_dcgan_celeba_32_128.gin": [
        "sr_dcgan_generator.num_filters = 8",
        "sr_dcgan_generator.num_residual_units = 1",
        "sr_dcgan_discriminator.num_filters = 8",
        "sr_dcgan_discriminator.num_strided_blocks = 2",
    ],
}
COMMON = [
    "SCALE = 2",
    "HR_CROP = 16",
    "GLOBAL_BATCH_SIZE = 2",
    "distribute.num_cpu_devices = 1",
    "make_input_fn.shuffle_buffer = 8",
    "train_loop.total_steps = 2",
    "train_loop.warmup_steps = 1",  # one pixel step, then one GAN step
    "train_loop.steps_per_loop = 1",
    "train_loop.validation_examples = 2",
    "train_loop.num_samples = 1",
]


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _train(model_dir, data_dir, **overrides):
    return loop.train_loop(
        strategy=tf.distribute.get_strategy(),
        model_dir=str(model_dir),
        data_dir=data_dir,
        **overrides,
    )


def test_every_shipped_config_is_shrunk_here():
    assert sorted(SHRINK) == sorted(os.path.basename(p) for p in glob.glob(f"{GIN_DIR}/*.gin"))


@pytest.mark.slow
@pytest.mark.parametrize("gin_file", sorted(SHRINK))
def test_every_shipped_config_trains_through_train_loop(
    gin_file, train_dataset, tmp_path, clean_gin, random_vgg16_checkpoint
):
    path = os.path.join(GIN_DIR, gin_file)
    with open(path) as f:
        perceptual = "@PerceptualLoss()" in f.read()
    # The real VGG16 weights are fetched on demand; a random checkpoint of their layout keeps
    # this test offline and fast.
    weights = [f"PerceptualLoss.weights_path = '{random_vgg16_checkpoint}'"] if perceptual else []
    config.parse_config([path], COMMON + SHRINK[gin_file] + weights)
    metrics = _train(tmp_path / "model", train_dataset)
    assert np.isfinite(metrics["g_loss"]) and metrics["d_loss"] > 0  # the last step was GAN
    paths = model_dir_lib.ModelDir(str(tmp_path / "model"))
    assert model_dir_lib.checkpoint_step(paths.latest_checkpoint()) == 2
    assert model_dir_lib.best_export(paths.export_root) == os.path.join(paths.export_root, "2")
    # The operative config carries the files' imports: a fresh process can restore it.
    with open(paths.operative_config) as f:
        assert f.read().startswith("import dlss_dist")
    assert not os.path.exists(run_lock.lock_path(paths.root))  # released


@pytest.mark.parametrize(
    ("binding", "value", "message"),
    [
        ("num_samples", -1, "train_loop.num_samples must be >= 0, got -1"),
        ("warmup_steps", -5, "train_loop.warmup_steps must be >= 0, got -5"),
        ("checkpoint_every_steps", 0, "train_loop.checkpoint_every_steps must be >= 1"),
        ("summary_every_steps", -1, "train_loop.summary_every_steps must be >= 1"),
        ("steps_per_loop", 0, "train_loop.steps_per_loop must be >= 1"),
        ("sample_every_steps", -1, "train_loop.sample_every_steps must be >= 0"),
        ("export_every_steps", -10, "train_loop.export_every_steps must be >= 0"),
        ("keep_checkpoints", 0, "train_loop.keep_checkpoints must be >= 1"),
        ("keep_exports", 0, "train_loop.keep_exports must be >= 1"),
        ("validation_examples", 0, "train_loop.validation_examples must be >= 1"),
        ("total_steps", 2.5, "train_loop.total_steps must be an integer, got 2.5"),
        ("ema_decay", 1.0, "train_loop.ema_decay must be a number in"),
        ("global_batch_size", 0, "train_loop.global_batch_size must be >= 1"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(binding, value, message, tmp_path):
    settings = {"total_steps": 4, "global_batch_size": 2, binding: value}
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        _train(tmp_path / "model", str(tmp_path / "no_data"), **settings)
    assert not os.path.exists(tmp_path / "model")


def test_a_model_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "model").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        _train(tmp_path / "model", str(tmp_path), total_steps=1, global_batch_size=1)


TRAINED_BINDINGS = ["train_loop.total_steps = 4", "train_loop.sample_every_steps = 0"]


@pytest.fixture(scope="module")
def trained_once(train_dataset, tmp_path_factory):
    """A tiny run trained to step 4, once for the module (tests get a copy)."""
    gin.clear_config()
    config.parse_config([th.TINY_GIN], TRAINED_BINDINGS)
    model_dir = tmp_path_factory.mktemp("trained") / "model"
    try:
        _train(model_dir, train_dataset)
    finally:
        gin.clear_config()
    return str(model_dir)


@pytest.fixture
def trained_model_dir(trained_once, tmp_path):
    """A copy of that run (the protected directory of the tests below), with its config
    parsed, as after training it."""
    model_dir = str(tmp_path / "trained" / "model")
    shutil.copytree(trained_once, model_dir)
    gin.clear_config()
    config.parse_config([th.TINY_GIN], TRAINED_BINDINGS)
    yield model_dir
    gin.clear_config()


@pytest.mark.slow
def test_total_steps_below_the_newest_checkpoint_is_refused(trained_model_dir, train_dataset):
    operative = model_dir_lib.ModelDir(trained_model_dir).operative_config

    def snapshot():
        with open(operative) as f:
            return f.read(), os.path.getmtime(operative)

    before = snapshot()
    with pytest.raises(
        ValueError, match=r"total_steps = 3 is below the newest checkpoint's step 4"
    ):
        _train(trained_model_dir, train_dataset, total_steps=3)
    # Nothing rewritten.
    assert snapshot() == before


@pytest.mark.slow
def test_an_architecture_change_is_named_not_dumped(trained_model_dir, train_dataset):
    with gin.unlock_config():
        gin.bind_parameter("srresnet_generator.num_filters", 16)
    with pytest.raises(loop.ArchitectureMismatchError, match="different architecture") as raised:
        _train(trained_model_dir, train_dataset, total_steps=8)
    assert len(str(raised.value)) < 1000
    assert model_dir_lib.checkpoint_step(model_dir_lib.resolve_checkpoint(trained_model_dir)) == 4
    assert not os.path.exists(run_lock.lock_path(trained_model_dir))


@pytest.mark.slow
def test_a_live_run_elsewhere_refuses_a_second_one(trained_model_dir, train_dataset):
    other = {
        "tool": "dlss-train",
        "owner": "alice",
        "host": "trainer-pod-7",
        "pid": 31337,
        "token": "theirs",
        "started": time.time(),
        "heartbeat": time.time(),
    }
    lock = run_lock.lock_path(trained_model_dir)
    with open(lock, "w") as f:
        json.dump(other, f)
    try:
        with pytest.raises(run_lock.LockHeldError, match="alice on host trainer-pod-7, pid 31337"):
            _train(trained_model_dir, train_dataset, total_steps=8)
        # Read-only tools are not blocked: the generator restores while the lock is held.
        generator, scale = checkpoints.load_generator(trained_model_dir)
        assert scale == 2
    finally:
        os.remove(lock)


@pytest.mark.slow
def test_a_dead_runs_lock_is_taken_over_and_training_resumes(trained_model_dir, train_dataset):
    stale = {
        "tool": "dlss-train",
        "owner": "alice",
        "host": "old-pod",
        "pid": 1,
        "token": "old",
        "started": time.time() - 7200,
        "heartbeat": time.time() - 3600,
    }
    with open(run_lock.lock_path(trained_model_dir), "w") as f:
        json.dump(stale, f)
    _train(trained_model_dir, train_dataset, total_steps=6)
    latest = model_dir_lib.resolve_checkpoint(trained_model_dir)
    assert model_dir_lib.checkpoint_step(latest) == 6


@pytest.mark.slow
def test_train_cli_reports_a_bad_setting_in_one_line(tmp_path, train_dataset):
    result = th.run_train(str(tmp_path / "model"), train_dataset, "train_loop.warmup_steps = -1")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == "dlss-train: error: train_loop.warmup_steps must be >= 0, got -1."
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_train_cli_refuses_an_unused_macro_in_one_line(tmp_path, train_dataset, in_process):
    # Issue 19 case 12 through the tool (the other gin checks: test_config.py): exit 1.
    model_dir = tmp_path / "model"
    result = in_process(
        "train",
        f"--gin_file={th.TINY_GIN}",
        f"--model_dir={model_dir}",
        f"--data={train_dataset}",
        "--gin_param=HR_SIZE = 64",
    )
    message = "gin macro HR_SIZE is set (--gin_param: HR_SIZE = 64) but nothing uses it"
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dlss-train: error: {message}"), last
    assert "Traceback" not in result.stderr
    assert not model_dir.exists()


@pytest.mark.slow
def test_train_cli_refuses_a_locked_model_dir(trained_model_dir, train_dataset):
    with run_lock.RunLock(trained_model_dir, "dlss-train"):
        result = th.run_train(trained_model_dir, train_dataset, "train_loop.total_steps = 8")
    assert result.returncode == 1
    assert "is in use by dlss-train (user" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_dlss_eval_scores_an_untrained_generator_exactly_as_bicubic(tmp_path, in_process):
    # The generator's skip and the evaluation baseline are one function, so an untrained
    # SRResNet (last conv zero) and the bicubic baseline agree to the last bit.
    from conftest import photo_crops, save_image

    from dlss_dist import export
    from dlss_dist.models import generators

    generator = generators.srresnet_generator(2, num_filters=8, num_blocks=1)
    model = export.export_generator(generator, str(tmp_path / "export" / "1"), scale=2)
    for i, crop in enumerate(photo_crops(3, 46, 38, seed=5)):
        save_image(tmp_path / "hr" / f"{i}.png", crop)
    result = in_process(
        "evaluate",
        f"--model={model}",
        f"--data={tmp_path / 'hr'}",
        f"--output_dir={tmp_path / 'eval'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "eval" / "metrics.json") as f:
        summary = json.load(f)
    assert summary["num_images"] == 3
    assert summary["metrics"]["model"] == summary["metrics"]["bicubic"]
    assert summary["metrics"]["bicubic"]["psnr_rgb"] > summary["metrics"]["nearest"]["psnr_rgb"]


def _train_with_a_pixel_limit(tmp_path, data_dir: str, limit: int) -> str:
    """A 2-step tiny run with train_loop.max_input_pixels = `limit`; returns its model dir."""
    config.parse_config(
        [th.TINY_GIN],
        [
            "train_loop.total_steps = 2",
            "train_loop.sample_every_steps = 0",
            f"train_loop.max_input_pixels = {limit}",
        ],
    )
    model_dir = str(tmp_path / "model")
    _train(model_dir, data_dir)
    return model_dir


@pytest.mark.slow
def test_dlss_export_uses_the_runs_max_input_pixels(train_dataset, tmp_path, clean_gin, in_process):
    # One home for the limit: train_loop.max_input_pixels, read back from the run's
    # operative config by dlss-export (its flag only overrides).
    model_dir = _train_with_a_pixel_limit(tmp_path, train_dataset, 5000)
    result = in_process(
        "export",
        f"--model={model_dir}",
        f"--export_dir={tmp_path / 'serving'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = tf.saved_model.load(str(tmp_path / "serving" / "2"))
    assert int(loaded.max_input_pixels.numpy()) == 5000


@pytest.mark.slow
def test_init_generator_from_starts_a_new_run_from_another_runs_generator(
    trained_model_dir, train_dataset, tmp_path, clean_gin
):
    """Fine-tuning (the GAN phase from a PSNR model): the new run's first steps start from
    the source's EMA generator; a resumed run ignores the flag and continues its own."""
    # 4 steps at a negligible learning rate (Adam moves each weight by ~1e-12 per step): the
    # weights stay the initial ones.
    config.parse_config(
        [th.TINY_GIN],
        [
            "train_loop.total_steps = 4",
            "train_loop.sample_every_steps = 0",
            "generator/make_optimizer.learning_rate = 1e-12",
        ],
    )
    model_dir = tmp_path / "finetune"
    loop.train_loop(
        strategy=tf.distribute.get_strategy(),
        model_dir=str(model_dir),
        data_dir=train_dataset,
        init_generator_from=trained_model_dir,
    )

    def weights(checkpoint_dir, attribute):
        generator = models.build_generator()
        checkpoint = model_dir_lib.ModelDir(checkpoint_dir).latest_checkpoint()
        tf.train.Checkpoint(**{attribute: generator}).read(checkpoint).expect_partial()
        return generator.get_weights()

    source = weights(trained_model_dir, "ema_generator")
    for attribute in ("generator", "ema_generator"):
        tuned = weights(str(model_dir), attribute)
        for expected, actual in zip(source, tuned, strict=True):
            np.testing.assert_allclose(actual, expected, atol=1e-6, err_msg=attribute)


def test_init_generator_from_a_missing_run_is_refused_before_anything_is_written(
    train_dataset, tmp_path, clean_gin
):
    config.parse_config([th.TINY_GIN], ["train_loop.total_steps = 2"])
    with pytest.raises(ValueError, match="--init_generator_from=.*nowhere.*training model dir"):
        _train(tmp_path / "model", train_dataset, init_generator_from=str(tmp_path / "nowhere"))
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_export_and_evaluation_use_what_training_recorded_not_a_later_gin_binding(
    train_dataset, tmp_path, clean_gin
):
    """Data facts travel as values: train_loop decides the scale, the degradation and the
    exports' pixel limit once and records them in the model directory; a gin binding changed
    afterwards (in the process, or in the directory's operative config) changes nothing."""
    from dlss_dist.serving import convert, tensorflow_models

    model_dir = _train_with_a_pixel_limit(tmp_path, train_dataset, 5000)
    paths = model_dir_lib.ModelDir(model_dir)
    with open(paths.training_facts) as f:
        assert json.load(f) == {
            "scale": 2,
            "max_input_pixels": 5000,
            "degradation": "bicubic_matlab_antialias",
            "degradation_spec": None,
        }

    # After training: another limit bound in this process and written into the operative config.
    with gin.unlock_config():
        gin.bind_parameter("train_loop.max_input_pixels", 8888)
    with open(paths.operative_config) as f:
        text = f.read()
    assert "train_loop.max_input_pixels = 5000" in text
    with open(paths.operative_config, "w") as f:
        f.write(
            text.replace("train_loop.max_input_pixels = 5000", "train_loop.max_input_pixels = 7777")
        )

    found = convert.checkpoint_generator(convert.resolve_checkpoint(model_dir))  # dlss-export
    assert (found.scale, found.max_input_pixels) == (2, 5000)
    runtime = tensorflow_models.CheckpointRuntime(model_dir)  # dlss-eval/upscale on the dir
    assert (runtime.scale, runtime.max_input_pixels) == (2, 5000)


@pytest.mark.slow
def test_online_degradation_is_decided_once_and_recorded(train_dataset, tmp_path, clean_gin):
    config.parse_config(
        [th.TINY_GIN],
        [
            "import dlss_dist.degradations",
            "train_loop.online_degradation = @RealWorldDegradation()",
            "RealWorldDegradation.scale = %SCALE",
            "train_loop.total_steps = 1",
            "train_loop.warmup_steps = 1",
            "train_loop.sample_every_steps = 0",
            "train_loop.validation_examples = 1",
        ],
    )
    model_dir = str(tmp_path / "model")
    _train(model_dir, train_dataset)
    with open(model_dir_lib.ModelDir(model_dir).training_facts) as f:
        facts = json.load(f)
    assert facts["degradation"] == "online:RealWorldDegradation"
    assert facts["degradation_spec"]["scale"] == 2


def test_an_old_model_directory_reads_its_limit_from_its_operative_config(tmp_path):
    """A directory written before training_facts.json: the limit its run's gin wrote."""
    paths = model_dir_lib.ModelDir(str(tmp_path))
    with open(paths.operative_config, "w") as f:
        f.write("train_loop.keep_exports = 3\ntrain_loop.max_input_pixels = 1234\n")
    facts = model_dir_lib.read_training_facts(str(tmp_path), scale=4)
    assert (facts.scale, facts.max_input_pixels, facts.degradation) == (4, 1234, None)
