"""`dlss-demo` end to end (what `make demo` runs), with a tiny step count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from training_helpers import REPO, train_env


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    output_dir = tmp_path / "demo"
    command = [
        sys.executable,
        "-m",
        "dlss_dist.cli.demo",
        f"--output_dir={output_dir}",
        "--gin_param=run_demo.patches_per_image = 4",
        "--gin_param=train_loop.total_steps = 6",
        "--gin_param=train_loop.warmup_steps = 3",
        "--gin_param=train_loop.steps_per_loop = 3",
        "--gin_param=train_loop.export_every_steps = 3",
        "--gin_param=train_loop.sample_every_steps = 3",
    ]
    result = subprocess.run(
        command, env=train_env(), capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "with 2 replica(s) in sync" in result.stderr
    summary = json.loads((output_dir / "evaluation" / "metrics.json").read_text())
    assert summary["source"] == "folder" and summary["num_images"] == 3
    assert set(summary["metrics"]) == {"model", "bicubic", "nearest"}
    report = (output_dir / "report.md").read_text()
    assert "| bicubic |" in report and "| model |" in report
    picture = report.split("](")[1].split(")")[0]
    assert os.path.exists(output_dir / picture)
    assert f"Report: {output_dir / 'report.md'}" in result.stdout
    assert os.path.isdir(output_dir / "model" / "export" / "6")

    # A second run refuses to mix its outputs with the first one's...
    again = subprocess.run(
        command, env=train_env(), capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert again.returncode == 1
    assert "pass --overwrite" in again.stderr
