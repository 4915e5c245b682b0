"""Training behaviour: configs build, loss falls, replicas agree, restarts are exact."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess

import gin
import numpy as np
import pytest
import tensorflow as tf
import training_helpers as th

from dlss_dist import config, distribute, models
from dlss_dist.model_dir import ModelDir
from dlss_dist.training import loop
from dlss_dist.training.controller import NonFiniteLossError

GIN_FILES = sorted(glob.glob(os.path.join(config.packaged_configs_dir(), "*.gin")))


@pytest.fixture
def dataset(train_dataset):
    return train_dataset


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _bound(parameter: str):
    """A binding's value, with a macro (`%NAME`) resolved."""
    value = gin.query_parameter(parameter)
    if isinstance(value, gin.config.ConfigurableReference):
        value = value.scoped_configurable_fn()
    return value


@pytest.mark.parametrize("gin_file", GIN_FILES, ids=os.path.basename)
def test_every_gin_file_parses_and_builds_its_models(gin_file, clean_gin):
    config.parse_config([gin_file])
    generator = models.build_generator()
    discriminator = models.build_discriminator()
    scale = gin.query_parameter("%SCALE")
    size = gin.query_parameter("%HR_CROP")
    lr = tf.zeros([1, size // scale, size // scale, 3])
    assert generator(lr).shape == (1, size, size, 3)
    # One logit per image (SRGAN-style) or per pixel (U-Net): both are what the losses take.
    assert discriminator(tf.zeros([1, size, size, 3])).shape in ((1,), (1, size, size, 1))
    # The loop's and the input pipeline's required bindings are all given, and agree.
    # (query_parameter raises for an unbound parameter.)
    assert _bound("train_loop.total_steps") >= 1
    batch = _bound("train_loop.global_batch_size")
    assert batch >= 1  # train_loop passes it to the input pipeline: one value
    # The scale is the generator's (checked above); train_loop passes it to the pipeline.
    assert _bound("make_input_fn.hr_patch_size") == size


def test_unknown_gin_binding_is_an_error(clean_gin):
    with pytest.raises(ValueError, match="no_such_parameter"):
        config.parse_config([th.TINY_GIN], ["train_loop.no_such_parameter = 1"])


def test_missing_gin_file_is_a_clear_error(clean_gin):
    with pytest.raises(FileNotFoundError, match="nope.gin"):
        config.parse_config(["nope.gin"])


def test_tf_config_from_indexed_job_environment():
    environ = {"DLSS_WORKER_HOSTS": "a-0.w:2222, a-1.w:2222", "JOB_COMPLETION_INDEX": "1"}
    assert distribute.tf_config_from_environment(environ) == {
        "cluster": {"worker": ["a-0.w:2222", "a-1.w:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    explicit = {"TF_CONFIG": json.dumps({"cluster": {}, "task": {}}), **environ}
    assert distribute.tf_config_from_environment(explicit) == {"cluster": {}, "task": {}}
    assert distribute.tf_config_from_environment({}) is None
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX"):
        distribute.tf_config_from_environment({"DLSS_WORKER_HOSTS": "a:1"})
    with pytest.raises(ValueError, match="outside"):
        distribute.tf_config_from_environment(
            {"DLSS_WORKER_HOSTS": "a:1", "JOB_COMPLETION_INDEX": "3"}
        )


def _pixel_losses(model_dir: str) -> list[float]:
    """The 'pixel' scalars TensorBoard would show, in step order."""
    values = []
    for path in sorted(glob.glob(os.path.join(ModelDir(model_dir).summaries, "events.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == "pixel":
                    values.append((event.step, float(tf.make_ndarray(value.tensor))))
    return [value for _, value in sorted(values)]


def _train_in_process(model_dir: str, dataset: str, *gin_params: str):
    """`dlss-train`'s work with the tiny config in this process (no TensorFlow start-up)."""
    config.parse_config([th.TINY_GIN], list(gin_params))
    return loop.train_loop(
        strategy=tf.distribute.get_strategy(), model_dir=model_dir, data_dir=dataset
    )


@pytest.mark.slow
def test_loss_falls_and_outputs_are_written(dataset, tmp_path, clean_gin):
    model_dir = str(tmp_path / "model")
    # A generator without the bicubic skip starts far from the target, so learning shows.
    _train_in_process(
        model_dir,
        dataset,
        "build_generator.network = @sr_dcgan_generator",
        "sr_dcgan_generator.scale = 2",
        "sr_dcgan_generator.num_filters = 8",
        "sr_dcgan_generator.num_residual_units = 1",
        "train_loop.total_steps = 40",
        "train_loop.warmup_steps = 40",
        "train_loop.steps_per_loop = 4",
        "train_loop.summary_every_steps = 4",
    )
    losses = _pixel_losses(model_dir)
    assert len(losses) == 10
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2])
    paths = ModelDir(model_dir)
    assert os.path.exists(paths.operative_config)
    assert glob.glob(os.path.join(paths.samples, "step_*.png"))
    assert os.path.isdir(os.path.join(paths.export_root, "40"))
    assert th.checkpoint_step(th.latest_checkpoint(model_dir)) == 40


@pytest.mark.slow
def test_one_replica_equals_two_replicas(dataset, tmp_path):
    weights = {}
    for replicas in (1, 2):
        model_dir = str(tmp_path / f"replicas_{replicas}")
        result = th.run_train(
            model_dir,
            dataset,
            f"distribute.num_cpu_devices = {replicas}",
            "train_loop.deterministic = True",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"with {replicas} replica(s) in sync" in result.stderr
        weights[replicas] = th.checkpoint_values(th.latest_checkpoint(model_dir))
    # Same examples, same per-example losses; only float summation order differs.
    th.assert_same_weights(weights[1], weights[2], atol=1e-5)
    assert int(weights[1]["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 8


RESUME_PARAMS = (
    "train_loop.total_steps = 160",
    "train_loop.deterministic = True",
    "train_loop.sample_every_steps = 0",
)


@pytest.mark.slow
def test_sigkill_then_restart_equals_uninterrupted_run(dataset, tmp_path):
    straight = str(tmp_path / "straight")
    result = th.run_train(straight, dataset, *RESUME_PARAMS)
    assert result.returncode == 0, result.stderr[-3000:]

    resumed = str(tmp_path / "resumed")
    process = th.start_train(resumed, dataset, *RESUME_PARAMS)
    th.wait_for_checkpoint(resumed, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed_at = th.checkpoint_step(th.latest_checkpoint(resumed))
    assert killed_at < 160

    result = th.run_train(resumed, dataset, *RESUME_PARAMS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"at step {killed_at}" in result.stderr  # "Resumed from ... at step N."
    th.assert_same_weights(
        th.checkpoint_values(th.latest_checkpoint(straight)),
        th.checkpoint_values(th.latest_checkpoint(resumed)),
    )


def _start_endless_run(model_dir: str, dataset: str):
    """A run far from its end that writes a summary every step (so tests can see it is under
    way) and whose first checkpoint can only be the one a signal makes."""
    return th.start_train(
        model_dir,
        dataset,
        "train_loop.total_steps = 100000",
        "train_loop.checkpoint_every_steps = 1000",
        "train_loop.steps_per_loop = 1",
        "train_loop.summary_every_steps = 1",
    )


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_at_the_current_step(dataset, tmp_path):
    model_dir = str(tmp_path / "model")
    process = _start_endless_run(model_dir, dataset)
    # The first checkpoint is the SIGTERM one: wait until training is under way.
    summaries = ModelDir(model_dir).summaries

    def training_started():
        return os.path.isdir(summaries) and any(
            os.path.getsize(os.path.join(summaries, name)) > 2000 for name in os.listdir(summaries)
        )

    th.wait_for(training_started, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert "In call to configurable" not in stderr  # issue 19 case 23
    stopped = int(stderr.split("checkpoint at step ")[1].split(".")[0])
    assert 0 < stopped < 1000
    assert th.checkpoint_step(th.latest_checkpoint(model_dir)) == stopped


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(dataset, tmp_path, clean_gin):
    model_dir = str(tmp_path / "model")
    # The warm-up is finite and checkpointed at step 4; the adversarial weight then
    # overflows float32 and the first GAN chunk's loss is infinite. (dlss-train prints such
    # a user error as one line: tests/test_cli.py, test_training_stops_raised_outside_...)
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss .*ckpt-4"):
        _train_in_process(
            model_dir,
            dataset,
            "train_loop.warmup_steps = 4",
            "Trainer.adversarial_weight = 1e39",
        )
    assert NonFiniteLossError.user_error
    assert th.checkpoint_step(th.latest_checkpoint(model_dir)) == 4
    weights = th.checkpoint_values(th.latest_checkpoint(model_dir))
    assert all(np.isfinite(w).all() for w in weights.values())


@pytest.mark.slow
def test_two_worker_processes_train_together(dataset, tmp_path):
    ports = th.free_ports(2)
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    model_dir = str(tmp_path / "model")
    processes = [
        th.start_train(
            model_dir,
            dataset,
            "distribute.strategy = 'multi_worker'",
            DLSS_WORKER_HOSTS=hosts,
            JOB_COMPLETION_INDEX=str(index),
        )
        for index in range(2)
    ]
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=240))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    assert "with 2 replica(s) in sync" in outputs[0][1]
    # Only the chief writes checkpoints; worker 1's temporary copies are removed.
    assert not glob.glob(os.path.join(model_dir, "tmp", "worker-1", "*.index"))
    assert th.checkpoint_step(th.latest_checkpoint(model_dir)) == 8
    assert os.path.exists(ModelDir(model_dir).operative_config)
    fingerprints = [stderr.split("weights fingerprint: ")[1].split()[0] for _, stderr in outputs]
    assert fingerprints[0] == fingerprints[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "switch", ["train_loop.jit_compile = True", "train_loop.mixed_precision = True"]
)
def test_xla_and_mixed_precision_switches_train(dataset, tmp_path, switch):
    model_dir = str(tmp_path / "model")
    result = th.run_train(
        model_dir,
        dataset,
        switch,
        "train_loop.total_steps = 4",
        "train_loop.sample_every_steps = 0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    values = th.checkpoint_values(th.latest_checkpoint(model_dir))
    assert int(values["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 4
    assert all(np.isfinite(value).all() for value in values.values() if value.dtype.kind == "f")


def test_a_path_to_a_missing_gin_file_is_not_redirected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.resolve_gin_file("base.gin") == os.path.join(
        config.packaged_configs_dir(), "base.gin"
    )
    with pytest.raises(FileNotFoundError, match="exp/base.gin"):
        config.resolve_gin_file("exp/base.gin")


@pytest.mark.parametrize("binding", ["checkpoint_every_steps", "summary_every_steps"])
def test_zero_intervals_are_refused_up_front(binding, tmp_path):
    from dlss_dist.training import loop

    with pytest.raises(ValueError, match=f"train_loop.{binding} must be >= 1"):
        loop.train_loop(
            strategy=tf.distribute.get_strategy(),
            model_dir=str(tmp_path),
            data_dir=str(tmp_path),
            total_steps=1,
            global_batch_size=1,
            **{binding: 0},
        )


def test_multi_worker_refuses_logical_cpu_devices(monkeypatch):
    monkeypatch.setenv("DLSS_WORKER_HOSTS", "127.0.0.1:1,127.0.0.1:2")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="run more workers instead"):
        distribute.create_strategy("multi_worker", num_cpu_devices=2)


@pytest.mark.slow
def test_train_cli_requires_a_gin_file(tmp_path):
    result = subprocess.run(
        th.train_command(str(tmp_path), str(tmp_path))[:3]
        + [f"--model_dir={tmp_path}", f"--data={tmp_path}"],
        env=th.train_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "give at least one --gin_file" in result.stderr


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_exits_130(dataset, tmp_path):
    model_dir = str(tmp_path / "model")
    process = _start_endless_run(model_dir, dataset)
    th.read_until(process, "training: 2/100000 steps")  # a few steps done
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.count("SIGINT received") == 1
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "In call to configurable" not in stderr  # issue 19 case 23
    stopped = int(stderr.split("checkpoint at step ")[1].split(".")[0])
    assert 2 <= stopped < 1000
    assert th.checkpoint_step(th.latest_checkpoint(model_dir)) == stopped


@pytest.mark.slow
def test_a_second_sigint_exits_at_once_mid_chunk(dataset, tmp_path):
    model_dir = str(tmp_path / "model")
    # One chunk of 100000 steps: without the second Ctrl-C it would run for hours.
    process = th.start_train(
        model_dir,
        dataset,
        "train_loop.total_steps = 100000",
        "train_loop.steps_per_loop = 100000",
        "train_loop.checkpoint_every_steps = 100000",
        "train_loop.summary_every_steps = 100000",
        "train_loop.sample_every_steps = 0",
    )
    th.read_until(process, "Training from step 0")
    process.send_signal(signal.SIGINT)
    th.read_until(process, "SIGINT received")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "SIGINT again: exiting now without a checkpoint." in stderr
    assert th.latest_checkpoint(model_dir) is None
