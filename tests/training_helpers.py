"""Helpers for tests that run `dlss-train` as a real process (signals, devices, workers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from dlss_dist.model_dir import ModelDir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_GIN = os.path.join(REPO, "dlss_dist", "configs", "tiny_test.gin")


def train_command(model_dir: str, data_dir: str, *gin_params: str) -> list[str]:
    """The dlss-train command line for the tiny config plus extra bindings."""
    command = [
        sys.executable,
        "-m",
        "dlss_dist.cli.train",
        f"--gin_file={TINY_GIN}",
        f"--model_dir={model_dir}",
        f"--data={data_dir}",
    ]
    return command + [f"--gin_param={param}" for param in gin_params]


def train_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run_cli(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``python -m dlss_dist.cli.<module> ARGS`` from the checkout to completion."""
    return subprocess.run(
        [sys.executable, "-m", f"dlss_dist.cli.{module}", *args],
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def run_train(model_dir: str, data_dir: str, *gin_params: str, timeout: float = 300, **env):
    """Runs dlss-train to completion and returns the CompletedProcess."""
    return subprocess.run(
        train_command(model_dir, data_dir, *gin_params),
        env=train_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_train(model_dir: str, data_dir: str, *gin_params: str, **env) -> subprocess.Popen:
    return subprocess.Popen(
        train_command(model_dir, data_dir, *gin_params),
        env=train_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(model_dir: str, process: subprocess.Popen, timeout: float = 120) -> str:
    """Polls until a checkpoint is recorded as the latest (state file written); returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.isdir(ModelDir(model_dir).checkpoints):
            found = latest_checkpoint(model_dir)
            if found:
                return found
        if process.poll() is not None:
            raise AssertionError(f"training exited early:\n{process.communicate()[1][-3000:]}")
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    """Polls `condition()` until true; fails if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training exited early:\n{process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for training")
        time.sleep(0.05)


def checkpoint_step(path: str) -> int:
    return int(path.rsplit("-", 1)[1].split(".")[0])


def latest_checkpoint(model_dir: str) -> str:
    return ModelDir(model_dir).latest_checkpoint()


def checkpoint_values(checkpoint_path: str) -> dict[str, np.ndarray]:
    """Every variable in a checkpoint (G, D, EMA, optimizer slots, step), by key."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def assert_same_weights(a: dict, b: dict, *, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    assert len(a) > 10
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=atol, err_msg=name)


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def read_until(process: subprocess.Popen, text: str, timeout: float = 180) -> list[str]:
    """Reads the process's stderr line by line until a line contains `text`; returns them.

    Fails if the process exits first. (A hung process is caught by the caller's timeout.)
    """
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise AssertionError("process exited early:\n" + "".join(lines[-50:]))
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no line with {text!r}")
