"""dlss-eval --degradation: named evaluation degradations are reproducible and recorded."""

import csv
import json
import os

import numpy as np
import pytest
from conftest import photo_crops, save_image

from dlss_dist import degradations, imaging
from dlss_dist.evaluation import baselines, evaluate, metrics

SCALE = 2


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hr")
    for i, crop in enumerate(photo_crops(2, 48, 56, seed=5)):
        save_image(root / f"img{i + 1}.png", crop)
    return str(root)


def test_realistic_evaluation_is_reproducible_and_recorded(bicubic_model, hr_folder, tmp_path):
    runs = [
        evaluate.evaluate(
            model=bicubic_model,
            data=hr_folder,
            output_dir=str(tmp_path / f"eval{i}"),
            degradation="realistic",
            max_grids=0,
        )
        for i in range(2)
    ]
    assert runs[0]["metrics"] == runs[1]["metrics"]
    assert runs[0]["degradation"] == "realistic"
    assert runs[0]["degradation_spec"] == degradations.EVALUATION_DEGRADATIONS["realistic"].spec()
    with open(os.path.join(tmp_path, "eval0", "metrics.json")) as f:
        assert json.load(f)["degradation_spec"]["jpeg_quality"] == 75

    # The bicubic row is bicubic upscaling of exactly the named degradation's LR.
    hr = imaging.read_image(os.path.join(hr_folder, "img1.png"))
    lr = degradations.evaluation_degradation("realistic")(hr, SCALE, key="img1.png")
    expected = metrics.image_metrics(hr, baselines.bicubic(lr, SCALE), border=SCALE)
    with open(os.path.join(tmp_path, "eval0", "per_image.csv")) as f:
        first_row = next(csv.DictReader(f))
    assert first_row["key"] == "img1.png"
    assert float(first_row["bicubic_psnr_rgb"]) == pytest.approx(expected["psnr_rgb"], abs=1e-6)
    # The LR it evaluated is written for other tools, byte for byte what was measured.
    np.testing.assert_array_equal(
        imaging.read_image(os.path.join(tmp_path, "eval0", first_row["lr_file"])), lr
    )

    clean = evaluate.evaluate(
        model=bicubic_model, data=hr_folder, output_dir=str(tmp_path / "clean"), max_grids=0
    )
    assert clean["degradation"] == imaging.DEGRADATION
    assert clean["degradation_spec"]["name"] == "bicubic"
    # Blur, noise and JPEG cost the bicubic baseline PSNR.
    assert clean["metrics"]["bicubic"]["psnr_y"] > runs[0]["metrics"]["bicubic"]["psnr_y"] + 1


def test_unknown_degradation_is_refused_and_the_cli_offers_every_name(bicubic_model, hr_folder):
    with pytest.raises(ValueError, match="unknown evaluation degradation 'jpeg'"):
        evaluate.evaluate(
            model=bicubic_model, data=hr_folder, output_dir="unused", degradation="jpeg"
        )
    from dlss_dist.cli import evaluate as cli

    assert sorted(cli.FLAGS["degradation"].parser.enum_values) == sorted(
        degradations.EVALUATION_DEGRADATIONS
    )
