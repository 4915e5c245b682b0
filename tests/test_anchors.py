"""bench/anchors.py: tiling with reflect-padded context (fake networks, no ncnn), the folder
run and its timings, and the real ncnn anchors on a tiny image when the extra is installed."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from conftest import photo_crops, save_image

from dlss_dist import imaging

_SPEC = importlib.util.spec_from_file_location(
    "bench_anchors", os.path.join(os.path.dirname(__file__), "..", "bench", "anchors.py")
)
anchors = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = anchors  # dataclasses look their module up
_SPEC.loader.exec_module(anchors)


def _nearest_net(chw):
    return chw.repeat(4, axis=1).repeat(4, axis=2)


def _blur_net(chw):
    """A 3x3 box blur (edge-clamped inside the tile), then nearest x4: needs 1 px context."""
    padded = np.pad(chw, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = chw.shape[1:]
    blurred = sum(padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9
    return _nearest_net(blurred)


def test_identity_upscale_through_tiles_is_nearest():
    lr = photo_crops(1, 37, 29, seed=4)[0]
    out = anchors.upscale_tiled(lr, _nearest_net, tile=8, pad=3)
    np.testing.assert_array_equal(out, imaging.upscale_nearest(lr, 4))


def test_tiles_with_enough_context_equal_the_untiled_result():
    lr = photo_crops(1, 30, 45, seed=5)[0]
    untiled = anchors.upscale_tiled(lr, _blur_net, tile=1000, pad=2)
    np.testing.assert_array_equal(anchors.upscale_tiled(lr, _blur_net, tile=8, pad=2), untiled)
    # Without context the seams show: the padding is what makes tiling invisible.
    assert not np.array_equal(anchors.upscale_tiled(lr, _blur_net, tile=8, pad=0), untiled)


def test_a_network_of_the_wrong_scale_is_named():
    with pytest.raises(ValueError, match="expected"):
        anchors.upscale_tiled(np.zeros((8, 8, 3), np.uint8), lambda chw: chw, tile=8, pad=1)


def test_run_folder_writes_each_anchor_by_key_and_timings(tmp_path):
    lr_dir = tmp_path / "lr"
    for key, crop in zip(["a", "b"], photo_crops(2, 12, 20, seed=6), strict=True):
        save_image(lr_dir / f"{key}.png", crop)
    out = tmp_path / "anchors"
    timings = anchors.run_folder(
        str(lr_dir), str(out), ["span_x4"], tile=8, make_runner=lambda a, threads: _nearest_net
    )
    assert sorted(os.listdir(out / "span_x4")) == ["a.png", "b.png"]
    assert imaging.read_image(str(out / "span_x4" / "a.png")).shape == (48, 80, 3)
    assert timings["images"] == 2 and timings["lr_megapixels"] == 2 * 12 * 20 / 1e6
    assert json.loads((out / "timings.json").read_text()) == timings
    with pytest.raises(ValueError, match="unknown anchors"):
        anchors.run_folder(str(lr_dir), str(out), ["esrgan"])


def _real_runner_or_skip(name):
    pytest.importorskip("ncnn", reason="the anchors extra (ncnn) is not installed")
    try:
        anchors.verified_paths(anchors.ANCHORS[name])
    except FileNotFoundError:
        pytest.skip(f"{name}'s model files are not fetched (make anchors-weights)")
    return anchors.ncnn_runner(anchors.ANCHORS[name], threads=1)


@pytest.mark.parametrize("name", list(anchors.ANCHORS))
def test_real_anchor_upscales_a_tiny_photo(name):
    run = _real_runner_or_skip(name)
    hr = photo_crops(1, 64, 80, seed=7)[0]
    lr = imaging.imresize(hr, 16, 20)
    sr = anchors.upscale_tiled(lr, run, tile=12, pad=4)
    assert sr.shape == hr.shape
    # RGB in the right order and range: per-channel means within 8 grey levels of the HR's
    # (red and blue differ by 14 in this crop; Real-ESRGAN darkens its shadows by about 6),
    # and close to the photo (bicubic itself is about 24 dB on this crop).
    np.testing.assert_allclose(sr.mean(axis=(0, 1)), hr.mean(axis=(0, 1)), atol=8)
    mse = np.mean((sr.astype(np.float64) - hr) ** 2)
    assert 10 * np.log10(255**2 / mse) > 18
