"""In-graph decoding of untrusted image bytes with memory bounded BEFORE any pixel is decoded.

The `serving_default` signature of an export (`dlss_dist.export`) takes encoded images from
the network. A small file can describe a huge picture (a 400 KB PNG of 20000x20000 pixels
decodes to 1.2 GB) or many frames (a 50 KB GIF of thousands of frames decodes every frame),
so the size is read from the format's header first, checked against the export's pixel limit,
and only then is anything decoded; for a GIF only the first frame is handed to the decoder.

Everything here is TensorFlow ops (string slicing, `tf.while_loop`), so it is saved inside
the SavedModel and runs in TF Serving with no Python.

Headers read (offsets in bytes):

* PNG: IHDR, the first chunk: width and height big-endian at 16 and 20.
* JPEG: `tf.image.extract_jpeg_shape` (parses the SOF marker, decodes nothing).
* GIF: the logical screen (little-endian at 6 and 8) and the first image descriptor; the
  bytes after the first frame's image data are cut off and a trailer byte appended.
* BMP: the DIB header (32-bit at 18 and 22, or 16-bit for the old 12-byte core header);
  a negative height (top-down rows) counts by its absolute value.
* WebP: the ``VP8 ``, ``VP8L`` or ``VP8X`` chunk; animated WebP is refused (TensorFlow's
  decoder would decode every frame, as RGBA).
* JPEG XL is refused: its size sits in a bit-packed header this module does not parse, so
  it could not be bounded before decoding.
"""

from __future__ import annotations

import tensorflow as tf

# Format codes returned by `image_format`.
UNKNOWN, PNG, JPEG, GIF, BMP, WEBP, JXL = range(7)
_PAD = 32  # zero bytes appended so fixed-offset header reads never run off the end


def _padded(data: tf.Tensor) -> tf.Tensor:
    return tf.strings.join([data, b"\0" * _PAD])


def _starts(data: tf.Tensor, offset: int, magic: bytes) -> tf.Tensor:
    return tf.strings.substr(data, offset, len(magic)) == magic


def _bytes(padded: tf.Tensor, offset, length: int) -> tf.Tensor:
    """`length` bytes at `offset` of a padded string, as int64 [length]."""
    raw = tf.io.decode_raw(tf.strings.substr(padded, offset, length), tf.uint8)
    return tf.cast(tf.reshape(raw, [length]), tf.int64)


def _uint(padded: tf.Tensor, offset, length: int, *, little_endian: bool) -> tf.Tensor:
    values = tf.unstack(_bytes(padded, offset, length))
    if not little_endian:
        values = values[::-1]
    return sum(value * (1 << (8 * i)) for i, value in enumerate(values))


def _contains(data: tf.Tensor, marker: bytes) -> tf.Tensor:
    return tf.size(tf.strings.split(data, sep=marker)) > 1


def image_format(data: tf.Tensor) -> tf.Tensor:
    """The format of scalar string `data` from its magic number: one of the codes above."""
    data = _padded(data)
    checks = [
        (PNG, _starts(data, 0, b"\x89PNG\r\n\x1a\n")),
        (JPEG, _starts(data, 0, b"\xff\xd8\xff")),
        (GIF, tf.logical_or(_starts(data, 0, b"GIF87a"), _starts(data, 0, b"GIF89a"))),
        (BMP, _starts(data, 0, b"BM")),
        (WEBP, tf.logical_and(_starts(data, 0, b"RIFF"), _starts(data, 8, b"WEBP"))),
        (
            JXL,
            tf.logical_or(_starts(data, 0, b"\xff\x0a"), _starts(data, 0, b"\x00\x00\x00\x0cJXL ")),
        ),
    ]
    code = tf.constant(UNKNOWN, tf.int32)
    for value, check in reversed(checks):
        code = tf.where(check, tf.constant(value, tf.int32), code)
    return code


def _png_size(padded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    ok = _starts(padded, 12, b"IHDR")
    width = _uint(padded, 16, 4, little_endian=False)
    height = _uint(padded, 20, 4, little_endian=False)
    return ok, height, width


def _bmp_size(padded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    header_size = _uint(padded, 14, 4, little_endian=True)
    core = tf.equal(header_size, 12)
    width = tf.where(
        core,
        _uint(padded, 18, 2, little_endian=True),
        _uint(padded, 18, 4, little_endian=True),
    )
    height = tf.where(
        core,
        _uint(padded, 20, 2, little_endian=True),
        _uint(padded, 22, 4, little_endian=True),
    )
    # Signed 32-bit: a negative height means rows stored top-down.
    height = tf.where(height >= 1 << 31, (1 << 32) - height, height)
    width = tf.where(width >= 1 << 31, (1 << 32) - width, width)
    return header_size >= 12, height, width


def _webp_size(padded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(ok, height, width, animated) from the first chunk after ``RIFF....WEBP``."""
    lossy = _starts(padded, 12, b"VP8 ")
    lossless = _starts(padded, 12, b"VP8L")
    extended = _starts(padded, 12, b"VP8X")
    lossy_w = _uint(padded, 26, 2, little_endian=True) % (1 << 14)
    lossy_h = _uint(padded, 28, 2, little_endian=True) % (1 << 14)
    bits = _uint(padded, 21, 4, little_endian=True)
    lossless_w = bits % (1 << 14) + 1
    lossless_h = (bits // (1 << 14)) % (1 << 14) + 1
    extended_w = _uint(padded, 24, 3, little_endian=True) + 1
    extended_h = _uint(padded, 27, 3, little_endian=True) + 1
    animated = tf.logical_and(extended, _bytes(padded, 20, 1)[0] // 2 % 2 == 1)
    width = tf.where(lossy, lossy_w, tf.where(lossless, lossless_w, extended_w))
    height = tf.where(lossy, lossy_h, tf.where(lossless, lossless_h, extended_h))
    ok = tf.reduce_any(tf.stack([lossy, lossless, extended]))
    return ok, height, width, animated


def gif_first_frame(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Cuts a GIF after its first frame, without decoding anything.

    Walks the GIF block structure (extensions and the first image descriptor, each followed by
    length-prefixed sub-blocks) to the end of the first frame's image data.

    Returns:
      (ok, first, frame_height, frame_width): `ok` is False for a malformed or frameless GIF;
      `first` is the header, every block up to the end of the first frame, and a trailer.
    """
    length = tf.strings.length(data)
    padded = _padded(data)
    flags = _bytes(padded, 10, 1)[0]
    table = tf.where(
        flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8), 0
    )
    start = tf.cast(13 + table, tf.int32)
    zero = tf.constant(0, tf.int64)

    # mode 0: at a block start; 1: in an extension's sub-blocks; 2: in the image's sub-blocks.
    # done: 0 walking, 1 first frame complete, 2 malformed or no frame.
    def step(pos, mode, done, frame_h, frame_w):
        byte = tf.cast(_bytes(padded, pos, 1)[0], tf.int32)

        def at_block():
            descriptor = tf.equal(byte, 0x2C)
            extension = tf.equal(byte, 0x21)
            descriptor_flags = tf.cast(_bytes(padded, pos + 9, 1)[0], tf.int32)
            local_table = tf.where(
                descriptor_flags >= 128,
                3 * tf.bitwise.left_shift(2, descriptor_flags % 8),
                0,
            )
            # Image: 10-byte descriptor, optional local colour table, LZW code size byte.
            new_pos = tf.where(
                descriptor, pos + 10 + local_table + 1, tf.where(extension, pos + 2, pos)
            )
            new_mode = tf.where(descriptor, 2, tf.where(extension, 1, 0))
            new_done = tf.where(tf.logical_or(descriptor, extension), 0, 2)
            new_h = tf.where(descriptor, _uint(padded, pos + 7, 2, little_endian=True), frame_h)
            new_w = tf.where(descriptor, _uint(padded, pos + 5, 2, little_endian=True), frame_w)
            return new_pos, new_mode, new_done, new_h, new_w

        def in_sub_blocks():
            end = tf.equal(byte, 0)
            new_pos = pos + byte + 1
            new_mode = tf.where(end, 0, mode)
            new_done = tf.where(tf.logical_and(end, tf.equal(mode, 2)), 1, 0)
            return new_pos, new_mode, new_done, frame_h, frame_w

        return tf.cond(tf.equal(mode, 0), at_block, in_sub_blocks)

    pos, _, done, frame_h, frame_w = tf.while_loop(
        lambda pos, mode, done, h, w: tf.logical_and(tf.equal(done, 0), pos < length),
        step,
        (start, tf.constant(0), tf.constant(0), zero, zero),
    )
    ok = tf.equal(done, 1)
    first = tf.strings.join([tf.strings.substr(data, 0, tf.minimum(pos, length)), b"\x3b"])
    return ok, first, frame_h, frame_w


def decode_bounded(data: tf.Tensor, *, what: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """Decodes one encoded image to uint8 [H, W, 3] after checking its header's size.

    Args:
      data: scalar string, the encoded image.
      what: scalar string naming the input in messages, e.g. ``image_bytes[3]``.
      max_pixels: the largest H*W decoded; larger images fail before decoding.

    Returns:
      uint8 [H, W, 3]: grayscale becomes RGB, alpha is dropped, a GIF gives its first frame.

    Raises (when run):
      tf.errors.InvalidArgumentError naming `what`: not an image, JPEG XL, animated WebP, a
      header without a size, a size of zero or over `max_pixels`.
    """
    fmt = image_format(data)
    size = tf.strings.length(data)
    padded = _padded(data)

    def message(text: str, *args) -> tf.Tensor:
        # join, not a format argument: format would quote the string.
        return tf.strings.join([what, tf.strings.format(text, args) if args else text])

    not_image = message(
        " is not an encoded image ({} bytes, starting with {}): expected JPEG, PNG, GIF, BMP "
        'or WebP bytes; over REST send them base64-encoded as {"b64": "..."}',
        size,
        tf.strings.substr(data, 0, tf.minimum(size, 8)),
    )
    refuse_jxl = message(
        " is JPEG XL, which this server does not decode (its size cannot be checked before "
        "decoding): send PNG or JPEG"
    )
    with tf.control_dependencies(
        [
            tf.debugging.Assert(fmt != UNKNOWN, [not_image]),
            tf.debugging.Assert(fmt != JXL, [refuse_jxl]),
        ]
    ):
        fmt = tf.identity(fmt)

    minus_one = tf.constant(-1, tf.int64)
    truncated = message(" is truncated: its end-of-image marker (PNG IEND, JPEG EOI) is missing")

    def png():
        ok, h, w = _png_size(padded)
        return ok, h, w, data, minus_one, minus_one

    def jpeg():
        # A JPEG cut inside its header would fail in extract_jpeg_shape ("Invalid JPEG data,
        # size N") without the image's index: look for its end-of-image marker first.
        whole = tf.debugging.Assert(_contains(data, b"\xff\xd9"), [truncated])
        with tf.control_dependencies([whole]):
            shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return tf.constant(True), shape[0], shape[1], data, minus_one, minus_one

    def gif():
        ok, first, frame_h, frame_w = gif_first_frame(data)
        screen_w = _uint(padded, 6, 2, little_endian=True)
        screen_h = _uint(padded, 8, 2, little_endian=True)
        return ok, screen_h, screen_w, first, frame_h, frame_w

    def bmp():
        ok, h, w = _bmp_size(padded)
        return ok, h, w, data, minus_one, minus_one

    def webp():
        ok, h, w, animated = _webp_size(padded)
        refuse = message(
            " is an animated WebP, which this server does not decode: send one frame as PNG"
        )
        with tf.control_dependencies([tf.debugging.Assert(tf.logical_not(animated), [refuse])]):
            ok = tf.identity(ok)
        return ok, h, w, data, minus_one, minus_one

    def other():
        return tf.constant(False), minus_one, minus_one, data, minus_one, minus_one

    ok, height, width, data, frame_h, frame_w = tf.switch_case(
        fmt, {UNKNOWN: other, PNG: png, JPEG: jpeg, GIF: gif, BMP: bmp, WEBP: webp}, default=other
    )
    no_size = message(" has a malformed header: its size could not be read")
    empty = message(" is {}x{}: an image needs at least one pixel", width, height)
    # The first GIF frame is checked too: the decoder allocates its own size as well. The
    # message names the larger of the two (a 16x16 screen may hold a 30000x30000 frame).
    frame_is_larger = frame_h * frame_w > height * width
    over = message(
        " is {}x{} = {} pixels, over this export's limit of "
        + str(max_pixels)
        + " input pixels (max_input_pixels, set at export time): upscale it in tiles "
        "(dlss-upscale --tile=N) or export again with a larger limit",
        tf.where(frame_is_larger, frame_w, width),  # W x H, as every size the tools print
        tf.where(frame_is_larger, frame_h, height),
        tf.maximum(height * width, frame_h * frame_w),
    )
    pixels = tf.maximum(height * width, frame_h * frame_w)
    # A cut-off upload is the commonest broken image; TensorFlow's decoder would reject it
    # without saying which image it was, so look for the end marker first.
    complete = tf.cond(
        tf.equal(fmt, PNG),
        lambda: _contains(data, b"IEND"),
        lambda: tf.cond(
            tf.equal(fmt, JPEG), lambda: _contains(data, b"\xff\xd9"), lambda: tf.constant(True)
        ),
    )
    checks = [
        tf.debugging.Assert(ok, [no_size]),
        tf.debugging.Assert(tf.logical_and(height > 0, width > 0), [empty]),
        tf.debugging.Assert(pixels <= max_pixels, [over]),
        tf.debugging.Assert(complete, [truncated]),
    ]
    with tf.control_dependencies(checks):
        data = tf.identity(data)

    def decode_webp():
        # TensorFlow's WebP decoder refuses channels=3 for a file with alpha: decode the
        # file's own 3 or 4 channels and drop alpha, as for the other formats.
        return tf.io.decode_image(data, channels=0, expand_animations=False)[..., :3]

    def decode_other():
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    image = tf.cond(tf.equal(fmt, WEBP), decode_webp, decode_other)
    image.set_shape([None, None, 3])
    return image
