"""dlss-eval on a plain folder of HR images and on dlss-preprocess datasets."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import photo_crops, save_image

from dlss_dist import imaging
from dlss_dist.data import schema
from dlss_dist.evaluation import baselines, evaluate, metrics

SCALE = 2


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hr")
    # Odd sizes on purpose: evaluation crops HR to a multiple of the scale.
    for i, crop in enumerate(photo_crops(3, 41, 50, seed=3)):
        save_image(root / f"img{i + 1}.png", crop)
    (root / "notes.txt").write_text("not an image, not listed")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    return str(root)


def test_plain_folder(bicubic_model, hr_folder, tmp_path):
    out = str(tmp_path / "eval")
    summary = evaluate.evaluate(model=bicubic_model, data=hr_folder, output_dir=out, max_grids=2)

    assert summary["source"] == "folder" and summary["num_images"] == 3
    assert summary["scale"] == summary["border_crop"] == SCALE
    assert [(s["input"].endswith("broken.png"), s["reason"]) for s in summary["skipped"]] == [
        (True, "undecodable")
    ]
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f) == summary
    with open(os.path.join(out, "per_image.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["key"] for r in rows] == ["img1.png", "img2.png", "img3.png"]
    assert (rows[0]["hr_height"], rows[0]["hr_width"]) == ("40", "50")

    # Recompute the first row by hand with the same shared functions.
    hr = imaging.read_image(os.path.join(hr_folder, "img1.png"))[:40, :50]
    lr = imaging.degrade_bicubic(hr, SCALE)
    bicubic = baselines.bicubic(lr, SCALE)
    # The baseline is MATLAB's imresize bicubic, computed in float32: within one grey level.
    matlab = imaging.imresize(lr, *hr.shape[:2])
    assert np.abs(bicubic.astype(int) - matlab).max() <= 1
    expected = metrics.image_metrics(hr, bicubic, border=SCALE)
    for name, value in expected.items():
        assert float(rows[0][f"bicubic_{name}"]) == pytest.approx(value, abs=1e-9)
    means = summary["metrics"]
    # The untrained model is the bicubic baseline, exactly (the same function, the same
    # uint8 mapping), and far above nearest neighbour.
    assert means["model"] == means["bicubic"]
    assert [r["model_psnr_rgb"] for r in rows] == [r["bicubic_psnr_rgb"] for r in rows]
    assert means["bicubic"]["psnr_y"] > means["nearest"]["psnr_y"]
    assert sorted(os.listdir(os.path.join(out, "grids"))) == ["0000_img1.png", "0001_img2.png"]
    grid = imaging.read_image(os.path.join(out, "grids", "0000_img1.png"))
    assert grid.shape == (40 + 26, 4 * 50 + 3 * 4, 3)  # two label lines above the panels


def write_tiny_dataset(data_dir, *, scale=SCALE, degradation=imaging.DEGRADATION, count=3):
    """A dataset laid out like dlss-preprocess output, written through the shared schema."""
    os.makedirs(data_dir, exist_ok=True)
    path = schema.shard_path(str(data_dir), "tiny", "test", 0, 1)
    with tf.io.TFRecordWriter(path) as writer:
        for i, hr in enumerate(photo_crops(count, 32, 32, seed=5)):
            lr = imaging.degrade_bicubic(hr, scale)
            writer.write(schema.serialize_example(lr=lr, hr=hr, key=f"photo{i}.png#p0"))
    manifest = {
        "name": "tiny",
        "source": "folder",
        "scale": scale,
        "hr_size": 32,
        "degradation": degradation,
        "splits": {
            "train": {"read": 0, "written": 0, "rejected": 0, "num_shards": 0},
            "test": {"read": count, "written": count, "rejected": 0, "num_shards": 1},
        },
    }
    with open(os.path.join(data_dir, schema.MANIFEST_FILE), "w") as f:
        json.dump(manifest, f)
    return str(data_dir)


def test_dataset_directory(bicubic_model, tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    summary = evaluate.evaluate(
        model=bicubic_model, data=data, output_dir=str(tmp_path / "eval"), max_images=2
    )
    assert summary["source"] == "dataset" and summary["split"] == "test"
    assert summary["num_images"] == 2
    with open(tmp_path / "eval" / "per_image.csv") as f:
        assert [r["key"] for r in csv.DictReader(f)] == ["photo0.png#p0", "photo1.png#p0"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 4}, "made with scale 4 but the model upscales x2"),
        ({"degradation": "tf_bicubic"}, "from degradation 'tf_bicubic'"),
    ],
)
def test_dataset_mismatch_is_a_clear_error(bicubic_model, tmp_path, kwargs, message):
    data = write_tiny_dataset(tmp_path / "data", **kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate.evaluate(model=bicubic_model, data=data, output_dir=str(tmp_path / "eval"))


def test_empty_split_is_a_clear_error(bicubic_model, tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="split 'train' .* has no examples"):
        evaluate.evaluate(
            model=bicubic_model, data=data, output_dir=str(tmp_path / "e"), split="train"
        )


@pytest.mark.slow
def test_beam_dataset_through_the_cli(bicubic_model, make_dataset, sample_photos, tmp_path):
    data = make_dataset("--scale=2", "--hr_size=32", input_dir=sample_photos)
    manifest = schema.read_manifest(data)
    split = max(manifest["splits"], key=lambda s: manifest["splits"][s]["written"])
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlss_dist.cli.evaluate",
            f"--model={bicubic_model}",
            f"--data={data}",
            f"--split={split}",
            f"--output_dir={out}",
        ],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| bicubic |" in result.stdout
    with open(out / "metrics.json") as f:
        summary = json.load(f)
    assert summary["num_images"] == manifest["splits"][split]["written"]
    assert np.isfinite(summary["metrics"]["model"]["psnr_y"])


def test_an_unreadable_image_is_listed_and_the_rest_evaluated(
    bicubic_model, hr_folder, tmp_path, monkeypatch
):
    # Issue 19 case 9: one unreadable file stopped the whole evaluation. (Root reads a
    # chmod 000 file, so the file system's refusal is simulated.)
    from apache_beam.io.filesystems import FileSystems

    real_open = FileSystems.open
    refused = os.path.join(hr_folder, "img2.png")

    def open_or_refuse(path, *args, **kwargs):
        if path == refused:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(FileSystems, "open", open_or_refuse)
    summary = evaluate.evaluate(
        model=bicubic_model, data=hr_folder, output_dir=str(tmp_path / "eval"), max_grids=0
    )
    assert summary["num_images"] == 2
    reasons = {os.path.basename(s["input"]): s["reason"] for s in summary["skipped"]}
    assert reasons == {"broken.png": "undecodable", "img2.png": "unreadable"}
    (row,) = [s for s in summary["skipped"] if s["reason"] == "unreadable"]
    assert "Permission denied" in row["message"]
