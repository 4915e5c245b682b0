"""The console a person reads: a tool's own story by default, internals only on request."""

from __future__ import annotations

import os
import subprocess

import pytest
from training_helpers import REPO, train_command

# Lines that come from TensorFlow's, Keras's, gin's or gRPC's internals, never from our story.
INTERNAL_MARKERS = (
    "oneDNN",
    "cpu_feature_guard",
    "absl::InitializeLog",
    "Path not found",
    "resource_reader",
    "signature_serialization",
    "fingerprint.pb",
    "Sharding callback",
    "remapper failed",
    "GeneratorDatasetOp",
    "insecure",
)


def _train(model_dir, data_dir, *extra_flags):
    # The environment a user has: no TF_CPP_MIN_LOG_LEVEL of the test harness.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    command = train_command(
        str(model_dir),
        data_dir,
        "train_loop.total_steps = 2",
        "train_loop.steps_per_loop = 1",
        "train_loop.warmup_steps = 1",
        "train_loop.export_every_steps = 2",
    )
    return subprocess.run(
        command + list(extra_flags), env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_training_tells_a_short_story_and_shows_internals_only_when_asked(tmp_path, train_dataset):
    quiet = _train(tmp_path / "quiet", train_dataset)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    output = quiet.stdout + quiet.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    found = [marker for marker in INTERNAL_MARKERS if marker in output]
    assert not found, f"internal lines at the default verbosity: {found}\n{output}"
    assert not [line for line in lines if line.startswith(("E0", "W0", "I0", "error:"))], output
    assert len(lines) <= 15, output
    assert any(line.startswith("Saved checkpoint") for line in lines), output

    verbose = _train(tmp_path / "verbose", train_dataset, "--verbosity=1")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "oneDNN" in verbose.stderr or "signature_serialization" in verbose.stderr
