"""dlss-eval with LPIPS, DISTS and NIQE (random-weight files in a test cache) and with
another tool's outputs scored on the LR that dlss-eval wrote (--compare)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import photo_crops, save_image, write_torch_legacy
from training_helpers import REPO, train_env

from dlss_dist import imaging, pretrained
from dlss_dist.evaluation import evaluate, perceptual

SCALE = 2


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hr")
    # Two images with two 96x96 NIQE blocks after the x2 border crop, one too small for NIQE.
    for i, crop in enumerate(photo_crops(2, 200, 104, seed=11)):
        save_image(root / f"photo{i + 1}.png", crop)
    save_image(root / "small.png", photo_crops(1, 40, 48, seed=12)[0])
    return str(root)


@pytest.fixture
def weights_cache(tmp_path, monkeypatch, random_vgg16_checkpoint):
    """A pretrained cache holding random-weight files in the real files' formats."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv(pretrained.CACHE_ENV, str(cache))
    shutil.copy(random_vgg16_checkpoint, pretrained.cached_path("lpips_vgg16"))
    rng = np.random.default_rng(3)
    write_torch_legacy(
        pretrained.cached_path("dists"),
        {
            "alpha": rng.uniform(0.05, 0.15, (1, 1475, 1, 1)).astype(np.float32),
            "beta": rng.uniform(0.05, 0.15, (1, 1475, 1, 1)).astype(np.float32),
        },
    )
    basis = rng.normal(size=(36, 36))
    x = np.arange(-3, 4)
    window = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / 2.7)
    np.savez(
        pretrained.cached_path("niqe"),
        mu_pris_param=rng.normal(size=(1, 36)),
        cov_pris_param=basis @ basis.T / 36 + np.eye(36),
        gaussian_window=window / window.sum(),
    )
    # fetch() re-verifies cached files against the real hashes: pin these instead.
    for name in pretrained.REGISTRY:
        entry = pretrained.REGISTRY[name]
        digest = pretrained.sha256_of(pretrained.cached_path(name))
        monkeypatch.setitem(
            pretrained.REGISTRY, name, pretrained.Pretrained(**{**entry.__dict__, "sha256": digest})
        )
    return cache


@pytest.mark.slow
def test_perceptual_metrics_and_a_compared_tool_in_every_report(
    bicubic_model, hr_folder, tmp_path, weights_cache
):
    first = evaluate.evaluate(
        model=bicubic_model, data=hr_folder, output_dir=str(tmp_path / "first"), max_grids=0
    )
    assert first["perceptual_metrics"] == [] and "lpips" not in first["metrics"]["model"]
    lr_dir = tmp_path / "first" / "lr"
    assert sorted(os.listdir(lr_dir)) == ["photo1.png", "photo2.png", "small.png"]

    # "Another tool": nearest-neighbour upscaling of exactly the LR dlss-eval wrote.
    other = tmp_path / "other"
    other.mkdir()
    for name in os.listdir(lr_dir):
        lr = imaging.read_image(str(lr_dir / name))
        save_image(other / name, imaging.upscale_nearest(lr, SCALE))

    out = tmp_path / "eval"
    summary = evaluate.evaluate(
        model=bicubic_model,
        data=hr_folder,
        output_dir=str(out),
        max_grids=1,
        perceptual_metrics="auto",
        compare={"other": str(other)},
    )
    assert summary["methods"] == ["model", "bicubic", "nearest", "other"]
    assert summary["perceptual_metrics"] == ["lpips", "dists", "niqe"]
    assert summary["compare"] == {"other": str(other)}
    means = summary["metrics"]
    # The compared tool did what nearest does, on the same LR: every metric agrees.
    assert means["other"] == means["nearest"]
    assert means["bicubic"]["lpips"] < means["nearest"]["lpips"]
    assert set(means["model"]) == set(evaluate.METRIC_NAMES) | {"lpips", "dists", "niqe"}
    with open(out / "metrics.json") as f:
        assert json.load(f) == summary

    with open(out / "per_image.csv") as f:
        rows = {row["key"]: row for row in csv.DictReader(f)}
    assert rows["photo1.png"]["lr_file"] == "lr/photo1.png"
    # The LPIPS/DISTS columns are the library's metrics of those images.
    hr = imaging.read_image(os.path.join(hr_folder, "photo1.png"))
    nearest = imaging.upscale_nearest(imaging.read_image(str(lr_dir / "photo1.png")), SCALE)
    lpips = perceptual.LPIPS()(hr, nearest, border=SCALE)
    assert float(rows["photo1.png"]["other_lpips"]) == pytest.approx(lpips, rel=1e-9)
    dists = perceptual.DISTS()(hr, nearest, border=SCALE)
    assert float(rows["photo1.png"]["nearest_dists"]) == pytest.approx(dists, rel=1e-9)
    niqe = perceptual.NIQE()
    assert float(rows["photo2.png"]["hr_niqe"]) == pytest.approx(
        niqe(hr_photo2(hr_folder), border=2)
    )
    # NIQE is undefined for the small image: left out of the mean, not zero.
    assert rows["small.png"]["model_niqe"] == "nan"
    expected_niqe = np.mean([float(rows[k]["hr_niqe"]) for k in ("photo1.png", "photo2.png")])
    assert summary["hr_niqe"] == pytest.approx(expected_niqe)

    table = evaluate.format_table(summary)
    assert (
        "| method | PSNR RGB (dB) | SSIM RGB | PSNR Y (dB) | SSIM Y | LPIPS ↓ | DISTS ↓ | NIQE ↓ |"
        in table
    )
    assert "| other | " in table and "| HR (reference) | " in table
    # One grid: LR | bicubic | other | SR | HR, labels with the perceptual scores.
    (grid_name,) = os.listdir(out / "grids")
    grid = imaging.read_image(str(out / "grids" / grid_name))
    assert grid.shape[1] == 5 * 104 + 4 * 4
    assert grid.shape[0] == 200 + 4 * 12 + 2  # name, PSNR, two lines of three scores


def hr_photo2(folder):
    return imaging.read_image(os.path.join(folder, "photo2.png"))


def test_compare_and_perceptual_errors_are_clear(bicubic_model, hr_folder, tmp_path, monkeypatch):
    run = {"model": bicubic_model, "data": hr_folder, "output_dir": str(tmp_path / "e")}
    with pytest.raises(FileNotFoundError, match="--compare x=.*nowhere: no such folder"):
        evaluate.evaluate(**run, compare={"x": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="--compare name 'bicubic'"):
        evaluate.evaluate(**run, compare={"bicubic": str(tmp_path)})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"has no photo1.png: it needs the upscaled lr/photo1.png"
    ):
        evaluate.evaluate(**run, compare={"x": str(empty)})
    save_image(empty / "photo1.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="is 10x10, the HR image is 104x200"):
        evaluate.evaluate(**run, compare={"x": str(empty)})
    with pytest.raises(ValueError, match="unknown perceptual metric.*psnr"):
        evaluate.select_perceptual(["lpips", "psnr"])
    # "auto" with nothing cached measures PSNR/SSIM only (and says how to fetch the rest).
    assert evaluate.select_perceptual("auto") == ([], ["lpips", "dists", "niqe"])
    assert evaluate.select_perceptual(["none"]) == ([], [])
    assert evaluate.select_perceptual(["niqe", "lpips"]) == (["lpips", "niqe"], [])


@pytest.mark.slow
def test_cli_scores_a_compared_folder(bicubic_model, hr_folder, tmp_path):
    out = tmp_path / "eval"
    other = tmp_path / "other"
    other.mkdir()
    for name in ("photo1", "photo2", "small"):
        lr = imaging.degrade_bicubic(imaging.read_image(os.path.join(hr_folder, f"{name}.png")), 2)
        save_image(other / f"{name}.png", imaging.upscale_nearest(lr, SCALE))

    def run(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "dlss_dist.cli.evaluate",
                f"--model={bicubic_model}",
                f"--data={hr_folder}",
                f"--output_dir={out}",
                "--max_grids=0",
                *args,
            ],
            env=train_env(),
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )

    bad = run("--compare=nodir")
    assert bad.returncode == 2 and "--compare=nodir must be NAME=DIR" in bad.stderr
    result = run(f"--compare=other={other}")
    assert result.returncode == 0, result.stderr[-2000:]
    # Nothing cached (the test cache is empty): PSNR/SSIM only, and how to fetch the rest.
    assert "Not measuring LPIPS, DISTS, NIQE" in result.stderr and "dlss-weights" in result.stderr
    lines = result.stdout.splitlines()
    nearest = next(line for line in lines if line.startswith("| nearest |"))
    assert next(line for line in lines if line.startswith("| other |")) == nearest.replace(
        "nearest", "other"
    )
    assert f"the LR inputs: {out}/lr/" in result.stdout
