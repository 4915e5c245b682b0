"""`dlss-demo` end to end (what `make demo` runs), with a tiny step count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from training_helpers import REPO, train_env

from dlss_dist import demo


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
        "--gin_param=train_loop.export_every_steps = 6",
        "--gin_param=train_loop.sample_every_steps = 6",
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

    # The story: six stage headers in order (the log's five, then the result on stdout)...
    headers = [demo.stage_header(n) for n in range(1, len(demo.STAGES) + 1)]
    told = [line for line in result.stderr.splitlines() if line.startswith("== ")]
    assert told == headers[:-1], result.stderr[-4000:]
    assert result.stdout.startswith(headers[-1])
    for stage, after in zip(headers[:-2], headers[1:-1], strict=True):
        assert result.stderr.index(stage) < result.stderr.index(after)
    # ...the preprocessing result as a sentence, not a Python dict...
    assert "Wrote 44 train, 4 validation, 0 test examples to" in result.stderr
    assert "{'" not in result.stderr
    # ...and ONE metric table on the console, every row and both metrics explained.
    assert result.stdout.count("| method |") == 1
    assert "| model | the network trained above |" in result.stdout
    assert "PSNR (peak signal-to-noise ratio)" in result.stdout and "SSIM (struct" in result.stdout
    assert demo.verdict(summary) in result.stdout
    assert demo.explained_table(summary, picture="the comparison picture below") in report
    # (A second run's refusal to mix its outputs with these: tests/test_demo_outputs.py.)
