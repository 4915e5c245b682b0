"""Serving bounds memory before decoding: header sizes, first GIF frame, batch errors, 0x0.

The memory test runs in a subprocess and reads its peak resident size (ru_maxrss) around the
decode of two bombs: a PNG of giant dimensions and a GIF of many full-size frames.
"""

import io
import json
import os
import subprocess
import sys
import textwrap

import image_bombs
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dlss_dist import export, serving_decode
from dlss_dist.models.generators import srresnet_generator

LIMIT = 40 * 40
SHAPE = (23, 37)  # odd sizes catch swapped width/height


def encode(image: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    return (rng.random((*SHAPE, 3)) * 255).astype(np.uint8)


def formats(image: np.ndarray) -> dict[str, bytes]:
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 200, np.uint8)], axis=-1)
    return {
        "png": encode(image, "PNG"),
        "jpeg": encode(image, "JPEG", quality=95),
        "gif": encode(image, "GIF"),
        "bmp": encode(image, "BMP"),
        "webp_lossy": encode(image, "WEBP"),
        "webp_lossless": encode(image, "WEBP", lossless=True),
        "webp_alpha": encode(rgba, "WEBP"),  # the extended (VP8X) header
    }


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    generator = srresnet_generator(2, num_filters=8, num_blocks=1)
    path = str(tmp_path_factory.mktemp("export") / "1")
    export.export_generator(generator, path, scale=2, max_input_pixels=LIMIT)
    return tf.saved_model.load(path).signatures


def serve(serving, images: list[bytes]) -> list[np.ndarray]:
    outputs = serving["serving_default"](image_bytes=tf.constant(images))["image_bytes"]
    return [tf.io.decode_png(png).numpy() for png in outputs.numpy()]


def test_every_format_is_sized_from_its_header(serving, picture):
    images = formats(picture)
    results = serve(serving, list(images.values()))
    assert [r.shape for r in results] == [(46, 74, 3)] * len(images)
    # The header's size is the decoded size: a limit of exactly H*W passes, one less fails.
    decode = tf.function(
        lambda data, limit: serving_decode.decode_bounded(
            data, what=tf.constant("x"), max_pixels=limit
        )
    )
    for name, data in images.items():
        assert decode(tf.constant(data), SHAPE[0] * SHAPE[1]).shape == (*SHAPE, 3), name


@pytest.mark.parametrize("name", list(formats(np.zeros((41, 41, 3), np.uint8))))
def test_over_the_limit_is_refused_naming_the_index(serving, picture, name):
    big = formats(np.zeros((41, 41, 3), np.uint8))[name]  # 1681 > 1600 pixels
    good = encode(picture, "PNG")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[2\] is 41x41 = 1681"):
        serve(serving, [good, good, big])


def test_bombs_are_refused_before_decoding(serving):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\] is 20000x20000"):
        serve(serving, [image_bombs.png_bomb(20000, 20000)])


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xff\x0a" + bytes(40), r"image_bytes\[1\] is JPEG XL"),
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(40), r"image_bytes\[1\] is JPEG XL"),
        (b"not an image at all", r"image_bytes\[1\] is not an encoded image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(30), r"image_bytes\[1\] has a malformed header"),
    ],
)
def test_unsupported_or_broken_headers(serving, picture, data, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(serving, [encode(picture, "PNG"), data])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_upload_is_named(serving, picture, fmt):
    data = encode(picture, fmt)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is truncated"):
        serve(serving, [data, data[: len(data) // 2]])


def test_a_jpeg_cut_inside_its_header_is_named_truncated(serving, picture):
    # Issue 19 case 20: TensorFlow's "Invalid JPEG data, size 100", with no index.
    data = encode(picture, "JPEG", quality=95)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is truncated"):
        serve(serving, [data, data[:100]])


def test_a_gif_frame_larger_than_its_screen_is_named_by_its_own_size(serving):
    # Issue 19 case 21: "is 16x16 = 900000000 pixels" for a 16x16 screen holding a big frame.
    data = bytearray(image_bombs.gif_bomb(41, 41, 1))
    data[6:10] = (16).to_bytes(2, "little") * 2  # logical screen 16x16
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0\] is 41x41 = 1681 pixels"):
        serve(serving, [bytes(data)])


def test_animated_webp_is_refused(serving, picture):
    buffer = io.BytesIO()
    frames = [Image.fromarray(picture), Image.fromarray(picture[::-1])]
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0\] is an animated WebP"):
        serve(serving, [buffer.getvalue()])


def test_zero_sized_inputs_get_a_clear_error(serving):
    # A PNG header claiming 0x5 pixels, and the uint8 signature with empty shapes.
    zero = image_bombs.png_bomb(5, 1)
    zero = zero[:16] + (0).to_bytes(4, "big") + zero[20:]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\] is 0x5"):
        serve(serving, [zero])
    for shape in [(1, 0, 0, 3), (1, 5, 0, 3), (0, 4, 4, 3)]:
        with pytest.raises(tf.errors.InvalidArgumentError, match="at least one image of at least"):
            serving["upscale"](images=tf.zeros(shape, tf.uint8))


def test_only_the_first_gif_frame_is_decoded(serving, picture):
    frames = [picture, picture[::-1].copy(), np.zeros_like(picture)]
    buffer = io.BytesIO()
    pil = [Image.fromarray(f).quantize(256) for f in frames]
    pil[0].save(buffer, format="GIF", save_all=True, append_images=pil[1:])
    data = buffer.getvalue()
    assert Image.open(io.BytesIO(data)).n_frames == 3
    ok, first, height, width = serving_decode.gif_first_frame(tf.constant(data))
    assert ok and (int(height), int(width)) == SHAPE
    assert Image.open(io.BytesIO(first.numpy())).n_frames == 1
    expected = tf.io.decode_gif(data)[0].numpy()
    np.testing.assert_array_equal(tf.io.decode_gif(first)[0].numpy(), expected)
    # The signature's answer is the first frame upscaled.
    upscaled = serving["upscale"](images=tf.constant(expected[None]))["images"][0].numpy()
    np.testing.assert_array_equal(serve(serving, [data])[0], upscaled)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    import image_bombs
    import tensorflow as tf
    from dlss_dist import serving_decode

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @tf.function
    def bounded(data):
        return tf.shape(serving_decode.decode_bounded(data, what="x", max_pixels=4_000_000))

    @tf.function
    def plain(data):  # an unbounded decode: every frame of an animation, then a check
        return tf.shape(tf.io.decode_gif(data))

    small = tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8))
    bounded(small)
    plain(tf.constant(image_bombs.gif_bomb(8, 8, 1)))
    png = tf.constant(image_bombs.png_bomb(20_000, 20_000))  # 49 KB; 1.2 GB as RGB
    gif = tf.constant(image_bombs.gif_bomb(2000, 2000, 100))  # 390 KB: 100 frames at the limit
    growth, before = {}, peak_mb()
    if sys.argv[2] == "plain":
        growth["gif_plain_shape"] = plain(gif).numpy().tolist()
        growth["gif_plain"] = peak_mb() - before
    else:
        try:
            bounded(png)
        except tf.errors.InvalidArgumentError:
            growth["png_refused"] = True
        growth["png_bounded"] = peak_mb() - before
        before = peak_mb()
        growth["gif_shape"] = bounded(gif).numpy().tolist()
        growth["gif_bounded"] = peak_mb() - before
    print(json.dumps(growth))
    """
)


def measure(mode: str) -> dict:
    """Runs MEMORY_SCRIPT in a fresh process: peak growth is a lower bound of what a call
    allocated (RSS may sit under an earlier peak), so each side gets its own process."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, tests_dir, mode],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_of_the_bombs_is_bounded():
    growth = measure("bounded")
    assert growth["png_refused"] and growth["gif_shape"] == [2000, 2000, 3]
    # The bounded decode stays near one frame (16 MB) and refuses the PNG unread...
    assert growth["png_bounded"] < 50, growth
    assert growth["gif_bounded"] < 50, growth
    # ...while an unbounded decode makes all 100 frames, 1.2 GB (the fixture is a real bomb).
    # Its peak-RSS growth read ~1590 MB alone but once 7.6 MB inside a loaded full-suite run,
    # so the decoded shape, not RSS, is what proves the point.
    plain = measure("plain")
    assert plain["gif_plain_shape"] == [100, 2000, 2000, 3], plain
