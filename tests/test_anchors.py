"""bench/anchors.py: tiling with reflect-padded context (fake networks, no ncnn), the folder
run and its timings, and the real ncnn anchors on a tiny image when the extra is installed;
bench/compare_grid.py and pictures.labelled_grid: crops chosen where the detail is, at 1:1."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from conftest import photo_crops, save_image

from dlss_dist import imaging, pictures


def _bench_module(name):
    path = os.path.join(os.path.dirname(__file__), "..", "bench", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


anchors = _bench_module("anchors")
compare_grid = _bench_module("compare_grid")


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


def test_labelled_grid_places_cells_at_1_to_1_under_readable_labels():
    cells = [[np.full((20, 30, 3), 10 * (3 * r + c), np.uint8) for c in range(3)] for r in range(2)]
    grid = pictures.labelled_grid(
        cells, column_labels=["a", "b", "c"], row_labels=["one", "two"], font_size=16, gap=4
    )
    line = round(16 * 1.35)
    assert grid.shape == (line + 2 * (line + 20 + 4) + 4, 3 * 30 + 4 * 4, 3)
    top = line + line + 4  # header, the first row's label, gap
    np.testing.assert_array_equal(grid[top : top + 20, 4 + 34 : 4 + 34 + 30], cells[0][1])
    assert grid[:line, 4:34].min() < 128  # the label "a" is drawn
    wrapped = pictures.labelled_grid(cells, column_labels=["a b c d e f g", "b", "c"], font_size=16)
    assert wrapped.shape[0] > 2 * line + 2 * (20 + 6) + 6  # a long label takes several lines
    with pytest.raises(ValueError, match="one size"):
        pictures.labelled_grid(
            [[cells[0][0], np.zeros((5, 5, 3), np.uint8), cells[0][2]]], column_labels="abc"
        )


def test_crops_are_chosen_where_the_detail_is():
    rng = np.random.default_rng(0)
    hr = np.full((64, 96, 3), 128, np.uint8)
    hr[16:48, 60:92] = rng.integers(0, 256, (32, 32, 3))  # texture on the right only
    flat = np.full((64, 64, 3), 128, np.uint8)
    crops = compare_grid.choose_crops({"flat": flat, "busy": hr}, 32, 2, 4)
    assert crops[0][0] == "busy" and crops[0][1] >= 48 and crops[0][1] % 4 == 0
    assert [c[0] for c in crops] == ["busy", "flat"]


def test_build_grid_columns_lr_bicubic_each_sr_and_hr(tmp_path):
    hr = photo_crops(1, 66, 83, seed=8)[0]  # not a multiple of 4: cropped like dlss-eval
    save_image(tmp_path / "hr" / "k.jpg", hr, quality=95)
    hr = imaging.read_image(str(tmp_path / "hr" / "k.jpg"))[:64, :80]
    lr = imaging.degrade_bicubic(hr, 4)
    save_image(tmp_path / "lr" / "k.png", lr)
    save_image(tmp_path / "sr" / "k.png", imaging.upscale_nearest(lr, 4))
    grid = compare_grid.build_grid(
        str(tmp_path / "hr"), str(tmp_path / "lr"), [("mine", str(tmp_path / "sr"))],
        crop=32, crops=[("k", 8, 16)], font_size=10,
    )  # fmt: skip
    assert grid.shape[1] == 4 * 32 + 5 * 6  # LR, bicubic, mine, HR
    with pytest.raises(ValueError, match="multiples of 4"):
        compare_grid.build_grid(
            str(tmp_path / "hr"), str(tmp_path / "lr"), [], crop=32, crops=[("k", 2, 0)]
        )


colour_shift = _bench_module("colour_shift")


def test_colour_shift_measures_each_methods_mean_colour_against_hr(tmp_path):
    """bench/colour_shift.py: a method that adds 3 levels of red shows +3 in red; bicubic of a
    flat image shows none."""
    hr = np.full((16, 24, 3), 100, np.uint8)
    lr = np.full((4, 6, 3), 100, np.uint8)
    redder = hr.copy()
    redder[..., 0] += 3
    for folder, image in (("hr", hr), ("lr", lr), ("red", redder)):
        (tmp_path / folder).mkdir()
        save_image(str(tmp_path / folder / "a.png"), image)
    shifts = colour_shift.colour_shifts(
        str(tmp_path / "hr"), str(tmp_path / "lr"), {"red": str(tmp_path / "red")}, 4
    )
    np.testing.assert_allclose(shifts["red"], [[3.0, 0.0, 0.0]])
    np.testing.assert_allclose(shifts["bicubic"], [[0.0, 0.0, 0.0]], atol=1e-9)
