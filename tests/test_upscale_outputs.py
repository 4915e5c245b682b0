"""dlss-upscale's outputs: nothing replaced that the run did not create, nothing half-written,
one failed input never stops the others; --outscale, --suffix, formats and alpha.

Issue 19 cases 1, 2, 7, 10 and the ``--output=x.flv`` folder; issue 18 items 2 and 3. The
library tests use a nearest-neighbour "model" (the file logic does not depend on the net);
the CLI tests stop before a model is loaded.
"""

from __future__ import annotations

import errno
import io
import json
import os

import numpy as np
import pytest
from conftest import load_photo, save_image
from PIL import Image
from test_files import fill_disk_after, small_tmpfs  # noqa: F401 (a fixture)

from dlss_dist import files, imaging, upscale, video


class NearestUpscaler:
    """Stands in for a loaded model: x2 nearest neighbour, same call as the real one."""

    scale = 2

    def __call__(self, image, *, tile=0, tile_overlap=None):
        assert image.ndim == 3 and image.shape[-1] == 3
        return imaging.upscale_nearest(image, self.scale)


MODEL = NearestUpscaler()


@pytest.fixture
def photo():
    return load_photo("astronaut")[100:140, 180:228]  # 40x48


def run_upscale_cli(in_process, *args):
    # The checks under test run after the model is found, before it is loaded.
    return in_process("upscale", "--model=realworld_x4", *args)


# --- issue 19 case 1: a video upscaled into its own folder -------------------------------


def test_a_video_into_its_own_folder_is_refused(tmp_path, in_process):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"the user's only copy")
    with pytest.raises(ValueError, match="would overwrite the input"):
        upscale.check_outputs([str(clip)], str(tmp_path))
    with pytest.raises(ValueError, match="would overwrite the input"):
        upscale.check_outputs(
            [str(clip)], str(tmp_path), options=upscale.OutputOptions(overwrite=True)
        )
    result = run_upscale_cli(in_process, f"--input={clip}", f"--output={tmp_path}")
    assert result.returncode == 1
    assert "would overwrite the input" in result.stderr, result.stderr
    assert clip.read_bytes() == b"the user's only copy"


def test_a_video_onto_an_existing_file_is_refused_unless_overwrite(tmp_path):
    clip, out = tmp_path / "clip.mp4", tmp_path / "clip_x4.mp4"
    clip.write_bytes(b"input")
    out.write_bytes(b"the user's earlier upscale")
    with pytest.raises(files.OutputExistsError, match="--overwrite"):
        upscale.check_video_output(str(clip), str(out), overwrite=False)
    upscale.check_video_output(str(clip), str(out), overwrite=True)  # allowed with it
    with pytest.raises(ValueError, match="is the input"):
        upscale.check_video_output(str(clip), str(clip), overwrite=True)


# --- issue 19 case 2 / issue 18 item 3: files that are not among the inputs ----------------


def test_an_existing_output_that_is_not_an_input_is_never_replaced(tmp_path, photo, in_process):
    up1, up2 = tmp_path / "up1", tmp_path / "up2"
    up1.mkdir()
    up2.mkdir()
    save_image(up2 / "a.jpg", photo)
    save_image(up1 / "b.png", photo)
    (up2 / "b.png").write_bytes(b"the user's own b.png")
    inputs = [str(up2 / "a.jpg"), str(up1 / "b.png")]
    with pytest.raises(files.OutputExistsError, match=r"already has b\.png.*--overwrite"):
        upscale.upscale_files(MODEL, inputs, str(up2))
    assert (up2 / "b.png").read_bytes() == b"the user's own b.png"
    assert sorted(os.listdir(up2)) == ["a.jpg", "b.png"]  # nothing written at all

    result = run_upscale_cli(
        in_process, f"--input={inputs[0]}", f"--input={inputs[1]}", f"--output={up2}"
    )
    assert result.returncode == 1, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if "dlss-upscale: error" in line]
    assert "b.png" in error and "--overwrite" in error
    assert (up2 / "b.png").read_bytes() == b"the user's own b.png"

    done = upscale.upscale_files(
        MODEL, inputs, str(up2), options=upscale.OutputOptions(overwrite=True)
    )
    assert not done.failures
    assert Image.open(up2 / "b.png").size == (96, 80)


def test_a_second_run_into_the_same_folder_needs_overwrite(tmp_path, photo):
    save_image(tmp_path / "in.png", photo)
    upscale.upscale_files(MODEL, [str(tmp_path / "in.png")], str(tmp_path / "out"))
    with pytest.raises(files.OutputExistsError):
        upscale.upscale_files(MODEL, [str(tmp_path / "in.png")], str(tmp_path / "out"))
    gif = tmp_path / "anim.gif"
    gif.write_bytes(b"the user's gif")
    with pytest.raises(files.OutputExistsError, match="anim.gif"):
        upscale.upscale_files(
            MODEL, [str(tmp_path / "in.png")], str(tmp_path / "new"), gif=str(gif)
        )
    assert gif.read_bytes() == b"the user's gif"


# --- issue 19 case 7: a full disk ---------------------------------------------------------


def noise(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_full_disk_fails_that_input_only_and_writes_failures_json(tmp_path, monkeypatch, photo):
    save_image(tmp_path / "in" / "1_big.png", noise(200, 200))
    save_image(tmp_path / "in" / "2_small.png", photo)
    fill_disk_after(monkeypatch, 100_000)  # the big PNG (~480 KB) does not fit, the rest does
    out = tmp_path / "out"
    result = upscale.upscale_files(MODEL, [str(tmp_path / "in")], str(out))
    assert sorted(os.listdir(out)) == ["2_small.png", "failures.json"]  # no truncated PNG
    assert [f["reason"] for f in result.failures] == ["no_space"]
    with open(out / "failures.json") as f:
        assert json.load(f)[0]["input"].endswith("1_big.png")
    assert result.failures_file == str(out / "failures.json")


def test_a_real_full_disk_fails_that_input_only(tmp_path, small_tmpfs, photo):  # noqa: F811
    save_image(tmp_path / "in" / "1_big.png", noise(600, 600))  # over 2 MB of PNG at x2
    save_image(tmp_path / "in" / "2_small.png", photo)
    result = upscale.upscale_files(MODEL, [str(tmp_path / "in")], str(small_tmpfs))
    assert sorted(os.listdir(small_tmpfs)) == ["2_small.png", "failures.json"]
    assert [f["reason"] for f in result.failures] == ["no_space"]


# --- issue 19 case 10: renamed outputs over the file-name limit ----------------------------


def test_renamed_outputs_over_the_name_limit_are_shortened_and_all_written(tmp_path, photo):
    stem = "é" * 124 + "x"  # 249 bytes: fits, but "<stem>_png.png" does not
    save_image(tmp_path / "a" / f"{stem}.png", photo)
    save_image(tmp_path / "b" / f"{stem}.jpg", photo)
    out = tmp_path / "out"
    result = upscale.upscale_files(MODEL, [str(tmp_path / "a"), str(tmp_path / "b")], str(out))
    assert not result.failures
    names = os.listdir(out)
    assert len(names) == 2 and len(set(names)) == 2
    assert all(len(os.fsencode(n)) <= 255 and n.endswith(".png") for n in names)


def test_any_write_error_fails_that_input_only(tmp_path, monkeypatch, photo):
    save_image(tmp_path / "in" / "a.png", photo)
    save_image(tmp_path / "in" / "b.png", photo)
    real, calls = files._write_local, []

    def fail_the_first(path, data):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error", path)
        real(path, data)

    monkeypatch.setattr(files, "_write_local", fail_the_first)
    result = upscale.upscale_files(MODEL, [str(tmp_path / "in")], str(tmp_path / "out"))
    assert [(os.path.basename(f["input"]), f["reason"]) for f in result.failures] == [
        ("a.png", "write_failed")
    ]
    assert sorted(os.listdir(tmp_path / "out")) == ["b.png", "failures.json"]


# --- also noticed: --output=x.flv made a folder while x.avi was refused -------------------


def test_a_file_like_output_name_is_refused_not_made_a_folder(tmp_path, photo, in_process):
    save_image(tmp_path / "in.png", photo)
    result = run_upscale_cli(
        in_process, f"--input={tmp_path / 'in.png'}", f"--output={tmp_path / 'x.flv'}"
    )
    assert result.returncode == 1, result.stderr
    assert "looks like a file name" in result.stderr, result.stderr
    assert not (tmp_path / "x.flv").exists()
    for name in ("x.avi", "x.png", "x.wmv"):
        with pytest.raises(ValueError, match="looks like a file name"):
            upscale.check_outputs([str(tmp_path / "in.png")], str(tmp_path / name))


def test_an_existing_folder_with_a_dot_in_its_name_is_a_folder(tmp_path, photo):
    save_image(tmp_path / "in.png", photo)
    (tmp_path / "v1.png").mkdir()
    upscale.upscale_files(MODEL, [str(tmp_path / "in.png")], str(tmp_path / "v1.png"))
    assert os.listdir(tmp_path / "v1.png") == ["in.png"]


# --- issue 18 item 2: --outscale, --suffix, formats, alpha --------------------------------


@pytest.mark.parametrize("outscale", [1, 1.5, 3])
def test_outscale_resizes_the_model_output(tmp_path, photo, outscale):
    save_image(tmp_path / "in.png", photo)
    options = upscale.OutputOptions(outscale=outscale)
    upscale.upscale_files(MODEL, [str(tmp_path / "in.png")], str(tmp_path / "out"), options=options)
    out = np.asarray(Image.open(tmp_path / "out" / "in.png"))
    assert out.shape == (round(40 * outscale), round(48 * outscale), 3)
    # A high-quality resize of the model's x2 result, not a nearest-neighbour one.
    expected = Image.fromarray(MODEL(photo)).resize(
        (out.shape[1], out.shape[0]), Image.Resampling.LANCZOS
    )
    np.testing.assert_array_equal(out, np.asarray(expected))


def test_suffix_and_formats(tmp_path, photo):
    save_image(tmp_path / "in.png", photo)
    sizes = {}
    for fmt, quality in (("png", 95), ("jpeg", 95), ("jpeg", 30), ("webp", 80)):
        out = tmp_path / f"{fmt}{quality}"
        options = upscale.OutputOptions(suffix="_x2", image_format=fmt, quality=quality)
        upscale.upscale_files(MODEL, [str(tmp_path / "in.png")], str(out), options=options)
        (name,) = os.listdir(out)
        assert name == "in_x2" + {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}[fmt]
        with Image.open(out / name) as image:
            assert image.format == fmt.upper() and image.size == (96, 80)
        sizes[fmt, quality] = os.path.getsize(out / name)
    assert sizes["jpeg", 30] < sizes["jpeg", 95]
    with pytest.raises(ValueError, match="--quality"):
        upscale.OutputOptions(quality=0).validate()
    with pytest.raises(ValueError, match="--suffix"):
        upscale.OutputOptions(suffix="a/b").validate()


def rgba_photo(photo):
    """The photo with its left half fully transparent and stored as pure red there."""
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:, :24] = (255, 0, 0, 0)
    return rgba


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_alpha_is_kept_and_resized(tmp_path, photo, fmt):
    rgba = rgba_photo(photo)
    Image.fromarray(rgba).save(tmp_path / "in.png")
    options = upscale.OutputOptions(image_format=fmt, quality=100, outscale=3)
    upscale.upscale_files(MODEL, [str(tmp_path / "in.png")], str(tmp_path / "out"), options=options)
    (name,) = os.listdir(tmp_path / "out")
    with Image.open(tmp_path / "out" / name) as image:
        assert image.mode == "RGBA"
        out = np.asarray(image)
    assert out.shape == (120, 144, 4)
    assert (out[:, :60, 3] == 0).all() and (out[:, 84:, 3] == 255).all()
    if fmt == "png":  # lossless: the stored colour is upscaled, not composited on white
        assert (out[:, :60, :3] == (255, 0, 0)).all()


def test_jpeg_output_puts_transparency_on_white(tmp_path, photo):
    Image.fromarray(rgba_photo(photo)).save(tmp_path / "in.png")
    options = upscale.OutputOptions(image_format="jpeg")
    upscale.upscale_files(MODEL, [str(tmp_path / "in.png")], str(tmp_path / "out"), options=options)
    out = np.asarray(Image.open(tmp_path / "out" / "in.jpg"))
    assert out.shape == (80, 96, 3) and out[:, :40].min() >= 250


def test_odd_outscale_video_frames_have_even_sides():
    assert video.frame_size(33, 21, 2) == (66, 42)
    assert video.frame_size(33, 21, 1.5) == (50, 32)


def test_encode_image_round_trips(photo):
    data = upscale.encode_image(photo, upscale.OutputOptions())
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), photo)


def test_outscale_applies_to_videos_with_even_sides(tmp_path):
    pytest.importorskip("av")
    from test_video import make_video, moving_frames

    (tmp_path / "in").mkdir()
    make_video(tmp_path / "in" / "clip.mp4", moving_frames(3, 32, 48))
    options = upscale.OutputOptions(outscale=1.25, suffix="_s")
    result = upscale.upscale_files(
        MODEL, [str(tmp_path / "in")], str(tmp_path / "out"), options=options
    )
    assert not result.failures
    info = video.probe(str(tmp_path / "out" / "clip_s.mp4"))
    assert (info.width, info.height, info.frames) == (60, 40, 3)
