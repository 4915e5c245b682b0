"""Small files that decode to huge pictures: a PNG of giant dimensions and a many-frame GIF.

Used by tests/test_serving_limits.py and bench/serving_memory.py. Both are valid files,
written byte by byte (no library would write them on purpose).
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bomb(height: int, width: int) -> bytes:
    """An all-black 1-bit grayscale PNG of `height` x `width` pixels, a few hundred KB for
    20000x20000; decoded as RGB (what serving does) it is height*width*3 bytes."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte 0, then 8 black pixels per byte
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def gif_bomb(height: int, width: int, frames: int) -> bytes:
    """A GIF of `frames` identical all-black `height` x `width` frames.

    One frame compresses to ~1/250 byte per pixel, so 100 frames of 2000x2000 are ~390 KB; a
    decoder that decodes every frame (giflib's DGifSlurp under TensorFlow's decode_gif and
    decode_image) pays several bytes per pixel per frame.
    """
    buffer = io.BytesIO()
    Image.new("P", (width, height)).save(buffer, format="GIF")
    data = buffer.getvalue()
    flags = data[10]
    table = 3 * (2 << (flags & 7)) if flags & 0x80 else 0
    start = data.index(b"\x2c", 13 + table)  # first image descriptor (after any extensions)
    header, frame = data[:start], data[start:].rstrip(b"\x3b")
    return header + frame * frames + b"\x3b"
