"""The no-overwrite rule for dlss-eval: an earlier evaluation's reports are never replaced
without --overwrite (issue 18 item 3).

The same rule for the other tools that write is tested beside each tool:
dlss-upscale in test_upscale_outputs.py, dlss-export in test_export_version.py,
dlss-preprocess in test_beam_job.py (test_preflight_errors, test_overwrite_replaces_a_dataset),
dlss-demo in test_demo_outputs.py; dlss-train's model directory is its own contract
(a model_dir is resumed, never replaced: test_training.py).
"""

import os

import pytest
from test_evaluate import hr_folder  # noqa: F401 (a fixture)
from training_helpers import run_cli

from dlss_dist import files
from dlss_dist.evaluation import evaluate


@pytest.mark.slow
def test_eval_refuses_an_earlier_evaluation_unless_overwrite(
    bicubic_model,
    hr_folder,  # noqa: F811
    tmp_path,
):
    out = tmp_path / "eval"
    (out / "grids").mkdir(parents=True)
    (out / "metrics.json").write_text("the user's earlier numbers")
    (out / "grids" / "old.png").write_bytes(b"an earlier grid")
    with pytest.raises(files.OutputExistsError, match=r"metrics\.json.*--overwrite"):
        evaluate.evaluate(model=bicubic_model, data=hr_folder, output_dir=str(out))
    assert (out / "metrics.json").read_text() == "the user's earlier numbers"
    assert os.listdir(out / "grids") == ["old.png"]

    result = run_cli(
        "evaluate", f"--model={bicubic_model}", f"--data={hr_folder}", f"--output_dir={out}"
    )
    assert result.returncode == 1, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if "dlss-eval: error" in line]
    assert "--overwrite" in error
    assert (out / "metrics.json").read_text() == "the user's earlier numbers"

    summary = evaluate.evaluate(
        model=bicubic_model, data=hr_folder, output_dir=str(out), max_grids=1, overwrite=True
    )
    assert summary["num_images"] == 3
    # The old grid is gone: grids/ shows this evaluation only.
    assert len(os.listdir(out / "grids")) == 1 and "old.png" not in os.listdir(out / "grids")
    assert sorted(os.listdir(out)) == ["grids", "lr", "metrics.json", "per_image.csv"]


def test_a_failed_evaluation_writes_nothing(bicubic_model, hr_folder, tmp_path):  # noqa: F811
    empty = tmp_path / "other_tool"
    empty.mkdir()
    out = tmp_path / "eval"
    with pytest.raises(FileNotFoundError, match="has no"):
        evaluate.evaluate(
            model=bicubic_model, data=hr_folder, output_dir=str(out), compare={"x": str(empty)}
        )
    assert os.listdir(out) == []  # no lr/ or grids/ half-way, no staging folder
