"""Upscaling with a SavedModel: tiling is seamless, folders/frames/GIFs, per-file failures."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from dlss_dist import export, imaging, pictures, serving, upscale
from dlss_dist.models.generators import srresnet_generator
from dlss_dist.serving import tiling

SCALE = 2


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    generator = srresnet_generator(SCALE, num_filters=8, num_blocks=1)
    rng = np.random.default_rng(0)
    # Random weights: the zero-initialised last conv would reduce the model to bicubic.
    for variable in generator.weights:
        variable.assign(rng.normal(0, 0.05, variable.shape).astype(np.float32))
    root = tmp_path_factory.mktemp("export")
    export.export_generator(generator, str(root / "3"), scale=SCALE, max_input_pixels=96 * 96)
    return str(root)


@pytest.fixture(scope="module")
def upscaler(saved_model):
    return serving.load_upscaler(saved_model)  # an export root: picks version 3


@pytest.fixture(scope="module")
def photo():
    return skdata.astronaut()[60:130, 140:230]  # 70x90


def test_export_root_resolves_to_its_version(upscaler, saved_model):
    assert upscaler.path == os.path.join(saved_model, "3")
    assert upscaler.scale == SCALE


def test_tiled_equals_untiled(upscaler, photo):
    untiled = upscaler(photo)
    assert untiled.shape == (140, 180, 3)
    tiled = upscaler(photo, tile=32, tile_overlap=8)
    # The overlap covers the receptive field (about 6 LR pixels here): same pixels, up to
    # float rounding in a different convolution order.
    assert np.abs(tiled.astype(int) - untiled).max() <= 1
    # Without overlap the seams show: proves the comparison above can fail.
    seamed = upscaler(photo, tile=32, tile_overlap=0)
    assert np.abs(seamed.astype(int) - untiled).max() > 3


def test_over_the_limit_is_tiled_automatically(upscaler):
    big = skdata.astronaut()[:100, :120]  # 12000 pixels > 96*96
    out = upscaler(big)
    assert out.shape == (200, 240, 3)
    reference = tiling.upscale_tiled(upscaler.upscale_batch, big, scale=SCALE, tile=64)
    assert np.abs(out.astype(int) - reference).max() <= 1


def test_tile_over_the_limit_is_refused(upscaler, photo):
    with pytest.raises(ValueError, match="over this model's limit"):
        upscaler(photo, tile=100)


@pytest.mark.parametrize("shape", [(5, 7), (31, 64), (33, 65), (100, 17)])
def test_tiles_cover_every_pixel_exactly(shape):
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    # Nearest neighbour has a receptive field of one pixel, so tiling must be exact.
    out = tiling.upscale_tiled(
        lambda batch: imaging.upscale_nearest(batch[0], 4)[None],
        image,
        scale=4,
        tile=16,
        tile_overlap=3,
    )
    np.testing.assert_array_equal(out, imaging.upscale_nearest(image, 4))


def test_tile_geometry_is_validated(photo):
    with pytest.raises(ValueError, match="larger than 2 \\* tile_overlap"):
        tiling.upscale_tiled(lambda b: b, photo, scale=1, tile=16, tile_overlap=8)


def write_frames(folder, photo, names):
    folder.mkdir()
    for i, name in enumerate(names):
        frame = np.roll(photo, 7 * i, axis=1)  # distinct frames (GIF merges identical ones)
        Image.fromarray(frame).save(folder / name)


def test_frames_folder_to_pngs_and_gif(upscaler, photo, tmp_path):
    write_frames(tmp_path / "frames", photo, ["frame10.png", "frame2.png", "frame1.jpg"])
    gif = str(tmp_path / "out" / "clip.gif")
    result = upscale.upscale_files(
        upscaler, [str(tmp_path / "frames")], str(tmp_path / "out"), gif=gif, gif_fps=5
    )
    assert not result.failures
    assert [os.path.basename(p) for p in result.outputs] == [
        "frame1.png",
        "frame2.png",
        "frame10.png",
    ]
    with Image.open(result.outputs[0]) as first:
        assert first.size == (180, 140)
    assert result.gif_frames == 3
    with Image.open(gif) as written:
        assert written.n_frames == 3
        assert written.size == (180, 140)
        assert written.info["duration"] == 200


def test_interpolation_gif(upscaler, photo, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(photo).save(a)
    Image.fromarray(photo[::-1]).save(b)
    gif = str(tmp_path / "morph.gif")
    result = upscale.upscale_files(
        upscaler, [str(a), str(b)], str(tmp_path / "out"), gif=gif, interpolate=4
    )
    assert len(result.outputs) == 6  # a, 4 cross-fades, b
    with Image.open(gif) as written:
        assert written.n_frames == 6
    middle = np.asarray(Image.open(result.outputs[1]))
    assert middle.shape == (140, 180, 3)


def test_crossfade_endpoints_and_count(photo):
    frames = pictures.crossfade(photo, photo[::-1], 3)
    assert len(frames) == 5
    np.testing.assert_array_equal(frames[0], photo)
    np.testing.assert_array_equal(frames[-1], photo[::-1])


def test_interpolation_needs_two_inputs(upscaler, photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="exactly two input images"):
        upscale.upscale_files(upscaler, [str(tmp_path / "a.png")], str(tmp_path), interpolate=2)


@pytest.mark.slow
def test_cli_reports_bad_inputs_and_keeps_the_others(saved_model, photo, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(photo).save(inputs / "good.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (inputs / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlss_dist.cli.upscale",
            f"--model={saved_model}",
            f"--input={inputs}",
            f"--input={tmp_path / 'missing.png'}",
            f"--output={out}",
            f"--gif={out / 'all.gif'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["all.gif", "failures.json", "good.png"]
    with open(out / "failures.json") as f:
        failures = {os.path.basename(x["input"]): x["reason"] for x in json.load(f)}
    assert failures == {
        "broken.png": "undecodable",
        "empty.jpg": "empty_file",
        "missing.png": "not_found",
    }
    assert "FAILED" in result.stdout and "missing.png" in result.stdout


def test_output_names_never_collide():
    from dlss_dist.upscale import _output_names

    names = _output_names(["a/x.png", "b/x.png", "c/x.jpg", "d/y.png"])
    assert len(set(names)) == 4
    assert names[3] == "y.png"


@pytest.mark.parametrize("name", ["realworld_x4", "realworld_x4_gan"])
def test_the_shipped_starter_models_upscale_and_score_where_their_cards_say(name):
    """Both starter models load by name, and their recorded evaluations (held-out photos,
    realistic LR) say what the model cards quote: above bicubic on PSNR(Y), and for the GAN
    also below it on LPIPS and DISTS, beside the anchors it was compared with."""
    starter = serving.load_upscaler(name)
    assert starter.scale == 4 and starter.format == "savedmodel"
    lr = skdata.astronaut()[100:124, 180:212]
    assert starter(lr).shape == (96, 128, 3)
    with open(os.path.join(starter.path, "metrics_realistic.json")) as f:
        recorded = json.load(f)
    assert recorded["degradation"] == "realistic"
    scores = recorded["metrics"]
    assert scores["model"]["psnr_y"] > scores["bicubic"]["psnr_y"]
    if name == "realworld_x4_gan":
        assert recorded["num_images"] == 17
        for metric in ("lpips", "dists", "niqe"):
            assert scores["model"][metric] < scores["bicubic"][metric]
            assert scores["model"][metric] < scores["realworld_x4"][metric]
        assert {"span_x4", "realesrgan_x4plus", "realworld_x4"} <= set(scores)
