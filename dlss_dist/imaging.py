"""Image decoding, validation and the one degradation that makes LR from HR.

Every part of dlss_dist (the Beam job, the input pipeline's checks, evaluation, the
upscale CLI and the demo) goes through this module, so an image means the same thing
everywhere: a ``HxWx3`` ``uint8`` RGB array, EXIF-transposed, with alpha composited on
white (or rejected).

The degradation is MATLAB's ``imresize(..., 'bicubic')``: the cubic convolution kernel
with ``a = -0.5``, widened by ``1 / scale`` when shrinking (antialiasing), and mirrored
(``symmetric``) borders, run by Pillow's C resampler on a mirror-padded image in float32
and rounded once (see :func:`imresize`).
"""

from __future__ import annotations

import functools
import io
import math
import posixpath

import numpy as np
from absl import logging
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

DEGRADATION = "bicubic_matlab_antialias"
# File name extensions (lower case) that every dlss tool treats as images.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 64_000_000
ALPHA_POLICIES = ("white", "reject")
# decode_image's third policy, for tools that write images back out (dlss-upscale): the
# colour and alpha planes are returned as stored, HxWx4, when any pixel is not opaque.
KEEP_ALPHA = "keep"

# Modes whose pixels carry an alpha channel (or a transparency key, for P/L/RGB with
# the "transparency" info entry) and are composited through RGBA.
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
# Integer modes that hold 16-bit samples: scaled by 1/257 so 65535 maps to 255.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# Modes PIL converts to RGB exactly (no alpha, 8 bits per sample).
_PLAIN_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})


class ImageRejected(ValueError):  # noqa: N818 - the name is part of the contract
    """An input that cannot become a training example.

    Attributes:
      reason: a short stable code (written to ``rejects.jsonl`` and counted in
        ``manifest.json``), e.g. ``"truncated"`` or ``"too_small"``.
    ``str(error)`` is an actionable message for a person.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        # Beam pickles exceptions across process boundaries; keep both fields.
        return (type(self), (self.reason, str(self)))


def decode_image(
    data: bytes, *, alpha: str = "white", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Fully decodes encoded image bytes into RGB.

    Args:
      data: the encoded file (any format PIL reads; the first frame of animations).
      alpha: ``"white"`` composites transparent pixels on white; ``"reject"`` raises
        ``ImageRejected("alpha")`` for an image with any pixel that is not opaque;
        ``"keep"`` (`KEEP_ALPHA`) returns such an image as ``HxWx4`` RGBA, uncomposited.
      max_pixels: images with more pixels are rejected (``"too_large"``) before their
        pixels are decoded, which guards against decompression bombs.

    Returns:
      ``HxWx3`` uint8 RGB array (``HxWx4`` RGBA with ``alpha="keep"`` and transparency),
      rotated/flipped as its EXIF orientation says.

    Raises:
      ImageRejected: with reason ``empty_file``, ``undecodable``, ``truncated``,
        ``corrupt`` (a JPEG decoder warning about damaged data), ``too_large``,
        ``alpha`` or ``unsupported_mode``.
    """
    if alpha not in (*ALPHA_POLICIES, KEEP_ALPHA):
        raise ValueError(f"alpha must be one of {(*ALPHA_POLICIES, KEEP_ALPHA)}, got {alpha!r}")
    if not data:
        raise ImageRejected("empty_file", "the file is empty (0 bytes)")
    # A truncated file must be an error, never silently padded with grey.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process; dlss_dist needs "
            "it False so truncated files are rejected instead of padded"
        )
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_large", f"decompression bomb guard: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        # A file cut inside its headers fails here already ("Truncated File Read").
        if "truncat" in str(e).lower() and not isinstance(e, UnidentifiedImageError):
            raise ImageRejected("truncated", f"the file is truncated: {e}") from e
        if isinstance(e, UnidentifiedImageError):
            # PIL's message names the in-memory buffer object: keep rejects deterministic.
            raise ImageRejected(
                "undecodable", "not an image file in a format PIL can identify"
            ) from e
        raise ImageRejected("undecodable", f"not an image PIL can read: {e}") from e
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(
            "too_large",
            f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels} "
            "(raise --max_pixels if the image is trusted)",
        )
    try:
        image.load()
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_large", f"decompression bomb guard: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        message = str(e)
        if "truncat" in message.lower() or isinstance(e, EOFError):
            raise ImageRejected("truncated", f"the file is truncated: {message}") from e
        raise ImageRejected("undecodable", f"PIL could not decode the pixels: {e}") from e
    if image.format == "JPEG":
        _check_jpeg_stream(data)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as e:  # noqa: BLE001 - a broken EXIF block must not lose the image
        logging.warning("Ignoring unreadable EXIF orientation: %s", e)
    return _to_rgb(image, alpha=alpha)


# libjpeg's warnings about damaged data (its JWRN_* messages). Pillow's decoder drops
# them and returns the damaged pixels; simplejpeg's strict mode raises them instead.
_JPEG_CORRUPTION_MESSAGES = (
    "corrupt jpeg data",
    "premature end of jpeg file",
    "invalid sos parameters",
    "inconsistent progression sequence",
    "huffman",
)


def _check_jpeg_stream(data: bytes) -> None:
    """Rejects a JPEG whose entropy-coded data libjpeg-turbo reports as damaged.

    Pillow has already decoded the file by then; this second, strict pass by simplejpeg
    costs about 0.1 ms for a CelebA-sized file. A flipped bit that keeps the stream
    valid changes pixels without any warning: no decoder can notice that.
    """
    import simplejpeg

    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        target = {"Gray": "GRAY", "CMYK": "CMYK", "YCCK": "CMYK"}.get(colorspace, "RGB")
        simplejpeg.decode_jpeg(data, colorspace=target, strict=True)
    except ValueError as e:
        if any(m in str(e).lower() for m in _JPEG_CORRUPTION_MESSAGES):
            raise ImageRejected("corrupt", f"the JPEG data is damaged: {e}") from e
        # Anything else (a colour space or coding simplejpeg does not support) is left
        # to Pillow, which decoded the file without an error.
        logging.debug("simplejpeg could not check a JPEG that Pillow decoded: %s", e)


def _to_rgb(image: Image.Image, *, alpha: str) -> np.ndarray:
    """Converts a loaded PIL image of any supported mode to HxWx3 uint8 RGB."""
    mode = image.mode
    has_transparency_key = "transparency" in image.info and mode in ("P", "L", "RGB")
    if mode in _ALPHA_MODES or has_transparency_key:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
        a = rgba[..., 3:4]
        if alpha == "reject":
            if (a < 255).any():
                raise ImageRejected(
                    "alpha",
                    f"the {mode} image has transparent pixels and --alpha=reject "
                    "(use --alpha=white to composite them on white)",
                )
            return np.ascontiguousarray(rgba[..., :3])
        if alpha == KEEP_ALPHA:
            return rgba if (a < 255).any() else np.ascontiguousarray(rgba[..., :3])
        rgb = rgba[..., :3].astype(np.float64)
        weight = a.astype(np.float64) / 255.0
        out = rgb * weight + 255.0 * (1.0 - weight)
        return np.floor(out + 0.5).astype(np.uint8)
    if mode in _PLAIN_MODES:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mode in _SIXTEEN_BIT_MODES:
        # PIL's own convert() clips 16-bit values at 255 instead of scaling them.
        values = np.asarray(image, dtype=np.float64)
        gray = np.floor(np.clip(values, 0, 65535) / 257.0 + 0.5).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        # Floating-point images are taken to hold intensities in [0, 1].
        values = np.asarray(image, dtype=np.float64)
        gray = np.floor(np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    raise ImageRejected("unsupported_mode", f"PIL image mode {mode!r} is not supported")


def is_image_name(name: str) -> bool:
    """True when ``name`` (a file name or path) ends in one of :data:`IMAGE_EXTENSIONS`."""
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def read_image(path: str, **kwargs) -> np.ndarray:
    """Reads and decodes one image file (local or any Beam/``tf.io.gfile`` filesystem).

    Args:
      path: file path or URL such as ``gs://bucket/a.jpg``.
      **kwargs: passed to :func:`decode_image` (``alpha``, ``max_pixels``).

    Returns:
      ``HxWx3`` uint8 RGB array.

    Raises:
      ImageRejected: as `decode_image`, and with reason ``unreadable`` when the file cannot
        be opened or read (permissions, an I/O error): every caller lists it as a failure
        and goes on to the next file.
    """
    from apache_beam.io.filesystems import FileSystems  # heavy import, only when used

    try:
        with FileSystems.open(path) as f:
            data = f.read()
    except OSError as e:  # Beam's BeamIOError is an IOError too
        reason = e.strerror or str(e)
        raise ImageRejected("unreadable", f"the file cannot be read ({reason})") from e
    return decode_image(data, **kwargs)


def encode_png(image: np.ndarray) -> bytes:
    """Encodes a ``HxWx3`` (or ``HxW``) uint8 array as PNG bytes (deterministic)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8, got {image.dtype}")
    buffer = io.BytesIO()
    # zlib level 1: half the encode time of the default 6 for ~6% larger files.
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def center_crop_square(image: np.ndarray) -> np.ndarray:
    """Returns the largest centred square crop (extra odd pixel taken from the end)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    return image[top : top + side, left : left + side]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1) + (
        -0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0
    ) * ((absx > 1) & (absx <= 2))


@functools.lru_cache(maxsize=64)
def resize_weights(in_length: int, out_length: int) -> np.ndarray:
    """The ``out_length x in_length`` float64 matrix MATLAB's bicubic imresize applies.

    Follows MATLAB's ``contributions()``: output pixel ``i`` (1-based) samples the
    input at ``i / scale + 0.5 * (1 - 1 / scale)``; when shrinking the kernel is
    stretched by ``1 / scale`` (antialiasing); weights are normalised to sum to one
    and out-of-range taps are mirrored (``symmetric`` padding).

    The returned array is read-only because it is cached and shared.
    """
    if in_length < 1 or out_length < 1:
        raise ValueError(f"lengths must be positive, got {in_length} -> {out_length}")
    scale = out_length / in_length
    kernel_width = 4.0
    if scale < 1:
        kernel_width /= scale
    x = np.arange(1, out_length + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(x - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = x[:, None] - indices
    weights = scale * _cubic(scale * distance) if scale < 1 else _cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    # Mirror indices into [1, in_length]: 1..n, n..1, repeated.
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    columns = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    rows = np.repeat(np.arange(out_length), taps)
    np.add.at(matrix, (rows, columns.ravel()), weights.ravel())
    matrix.setflags(write=False)
    return matrix


def _mirror_pad(in_length: int, out_length: int) -> int:
    """Pixels of mirrored border the kernel can reach beyond either edge, plus one."""
    support = 2.0 * max(in_length / out_length, 1.0)  # the cubic's 2, widened when shrinking
    return int(math.ceil(support)) + 1


def imresize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes like MATLAB ``imresize(image, [height width], 'bicubic')``, in C.

    Pillow's ``BICUBIC`` is the same kernel (a = -0.5, stretched by ``1 / scale`` when
    shrinking, weights normalised to sum one, output pixel ``i`` centred on input
    ``(i + 0.5) / scale - 0.5``) but clamps the kernel at the image edge, where MATLAB
    mirrors it. So the image is mirror-padded (``symmetric``, MATLAB's convention) by
    more than the kernel's reach and Pillow resizes the original region (its ``box``),
    one channel at a time in its float32 mode ``F``: no rounding or clipping between the
    two passes, one rounding (half up) at the end. That is the float64 formula
    (:func:`resize_weights` on both axes) up to float32 rounding: on photographs about
    one value in 10^5 differs, by one grey level, where the exact result is a tie.
    MATLAB itself rounds and clips to uint8 after each pass for uint8 input, which moves
    pixels at saturated edges by several grey levels; SR papers' Python ports (and this
    function) do not.

    Args:
      image: ``HxW`` or ``HxWxC`` uint8 array.
      height: output height.
      width: output width.

    Returns:
      uint8 array of shape ``(height, width)`` or ``(height, width, C)``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"imresize takes uint8 images, got {image.dtype}")
    if image.ndim not in (2, 3):
        raise ValueError(f"imresize takes HxW or HxWxC images, got shape {image.shape}")
    if height < 1 or width < 1 or 0 in image.shape[:2]:
        raise ValueError(f"cannot resize {image.shape[:2]} to {(height, width)}")
    in_height, in_width = image.shape[:2]
    pad_y = _mirror_pad(in_height, height)
    pad_x = _mirror_pad(in_width, width)
    padding = ((pad_y, pad_y), (pad_x, pad_x)) + ((0, 0),) * (image.ndim - 2)
    padded = np.pad(image, padding, mode="symmetric")
    box = (pad_x, pad_y, pad_x + in_width, pad_y + in_height)
    planes = padded[..., None] if padded.ndim == 2 else padded
    out = np.empty((height, width, planes.shape[2]), np.float32)
    for c in range(planes.shape[2]):
        plane = Image.fromarray(planes[..., c].astype(np.float32), mode="F")
        out[..., c] = plane.resize((width, height), Image.Resampling.BICUBIC, box=box)
    out = np.floor(np.clip(out, 0.0, 255.0) + 0.5).astype(np.uint8)
    return out[..., 0] if image.ndim == 2 else out


def check_scale(scale: int, *, name: str = "scale") -> int:
    """Returns ``scale`` if it is a power of 2 that is at least 2, else raises ValueError
    naming ``name``. The one scale rule: the Beam job, the generators (one x2 upsampling
    stage per factor of 2) and evaluation all call it."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)):
        raise ValueError(f"{name} must be an integer power of 2 >= 2, got {scale!r}")
    if scale < 2 or scale & (scale - 1):
        raise ValueError(f"{name} must be a power of 2 >= 2 (2, 4, 8, ...), got {scale}")
    return int(scale)


def degrade_bicubic(hr: np.ndarray, scale: int) -> np.ndarray:
    """Makes the LR image from an HR image: ``imresize(hr, H // scale, W // scale)``.

    Raises ValueError when ``H`` or ``W`` is not a multiple of ``scale``.
    """
    check_scale(scale)
    height, width = hr.shape[:2]
    if height % scale or width % scale:
        raise ValueError(
            f"HR size {width}x{height} is not divisible by scale {scale}; crop it first"
        )
    return imresize(hr, height // scale, width // scale)


def upscale_nearest(lr: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling: every pixel becomes a ``scale x scale`` block."""
    check_scale(scale)
    return np.repeat(np.repeat(np.asarray(lr), scale, axis=0), scale, axis=1)
