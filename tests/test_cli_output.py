"""What the tools print (issue 18, "noise and seams"): no line twice, sizes as W x H, no
staging paths, and no TensorFlow C++ start-up lines. In-process unless marked slow."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
from absl import logging as absl_logging
from test_export import tiny_generator, write_model_dir
from training_helpers import REPO

from dlss_dist import export, imaging
from dlss_dist.cli import evaluate as eval_cli
from dlss_dist.cli import export as export_cli
from dlss_dist.cli import upscale as upscale_cli
from dlss_dist.models import generators
from dlss_dist.training import exporter as exporter_lib


@pytest.fixture
def console(capsys):
    """What a tool run in this process printed: stdout + stderr, log lines included."""

    def read() -> str:
        captured = capsys.readouterr()
        return captured.out + captured.err

    return read


def run(module, argv: list[str]) -> int:
    """A tool's console script in this process; its exit status. absl's log handler holds
    the stderr of the moment it was made: pointed at the test's for the run."""
    handler = absl_logging.get_absl_handler().python_handler
    saved, handler.stream = handler.stream, sys.stderr
    try:
        with pytest.raises(SystemExit) as info:
            module.run(argv)
    finally:
        handler.stream = saved
    return info.value.code or 0


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("export") / "1")
    export.export_generator(tiny_generator(), path, scale=2, max_input_pixels=64 * 64)
    return path


def test_eval_names_metrics_json_once(savedmodel, photos, tmp_path, console):
    out = tmp_path / "eval"
    argv = [f"--model={savedmodel}", f"--data={photos}", f"--output_dir={out}"]
    assert run(eval_cli, [*argv, "--perceptual=none", "--max_grids=0"]) == 0
    text = console()
    assert text.count("metrics.json") == 1, text
    assert "| model |" in text and (out / "metrics.json").exists()


def test_export_names_each_written_format_once_and_no_staging_folder(tmp_path, console):
    write_model_dir(tmp_path / "model", generator=tiny_generator(seed=4), step=5)
    argv = [f"--model={tmp_path / 'model'}", f"--export_dir={tmp_path / 'serving'}"]
    assert run(export_cli, argv) == 0
    text = console()
    exported = [line for line in text.splitlines() if "Exported" in line]
    assert exported == [
        f"Exported x2 generator from {tmp_path / 'model'}/checkpoints/ckpt-1 to "
        f"{tmp_path / 'serving' / '5'} (SavedModel)"
    ], text
    assert ".tmp-" not in text


def test_a_training_export_is_named_once(tmp_path, caplog):
    """The exporter writes it; the validation action's one line says where (issue 18: the
    training log named each export twice)."""
    exporter = exporter_lib.BestExporter(
        export_root=str(tmp_path / "export"), scale=2, keep=1, max_input_pixels=1024
    )
    with caplog.at_level(logging.INFO):
        final = exporter.maybe_export(tiny_generator(), step=10, psnr=20.0)
    assert final and not [r for r in caplog.records if final in r.getMessage()]


def test_a_failed_video_is_reported_once(savedmodel, photos, tmp_path, console):
    (tmp_path / "photos" / "broken.mp4").write_text("not a video")
    argv = [f"--model={savedmodel}", f"--input={photos}", f"--output={tmp_path / 'out'}"]
    assert run(upscale_cli, argv) == 1
    text = console()
    assert text.count("broken.mp4") == 1, text
    assert "FAILED " in text and "1 input(s) failed" in text, text


def test_sizes_are_width_by_height():
    with pytest.raises(ValueError, match="HR size 10x6 is not divisible"):
        imaging.degrade_bicubic(np.zeros((6, 10, 3), np.uint8), 4)
    with pytest.raises(ValueError, match=r"`output_dimensions` 256x128 \(W x H\) must be"):
        generators.dcgan_ratio(input_dimensions=(64, 64), output_dimensions=(128, 256))
    with pytest.raises(ValueError, match=r"^12x8 = 96 pixels is over"):
        imaging.decode_image(imaging.encode_png(np.zeros((8, 12, 3), np.uint8)), max_pixels=95)


@pytest.mark.slow
def test_upscale_and_eval_print_no_tensorflow_start_up_lines(savedmodel, photos, tmp_path):
    for module, args in (
        ("upscale", [f"--input={photos}", f"--output={tmp_path / 'up'}"]),
        ("evaluate", [f"--data={photos}", f"--output_dir={tmp_path / 'ev'}", "--perceptual=none"]),
    ):
        result = subprocess.run(
            [sys.executable, "-m", f"dlss_dist.cli.{module}", f"--model={savedmodel}", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        for noise in ("oneDNN", "cpu_feature_guard", "I0000", "E0000", "absl::InitializeLog"):
            assert noise not in result.stderr, (module, result.stderr)
