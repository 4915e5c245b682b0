"""Pictures for people: labelled comparison grids, GIFs, and cross-faded frames.

Used by training (sample grids), evaluation (per-image grids) and upscaling (GIFs and
cross-fades); it imports only the ground-floor `dlss_dist.files`, so every import of it
points down.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from dlss_dist import files

_LINE_HEIGHT = 12
_GAP = 4


def comparison_grid(
    panels: Sequence[tuple[str, np.ndarray]], *, background: int = 255
) -> np.ndarray:
    """Places equally sized panels side by side, each with its label above it.

    Args:
      panels: (label, HxWx3 uint8 image) pairs, e.g. nearest | bicubic | SR | HR; all the
        same size (enlarge the LR input with nearest neighbour first). A label may have
        several lines ("\n"); each is clipped to its panel's width.
      background: grey level of the gaps and the label strip.

    Returns:
      A uint8 RGB image of height H + 12 * (most label lines) and width n*W + 4*(n-1).
    """
    if not panels:
        raise ValueError("comparison_grid needs at least one panel")
    shapes = {image.shape for _, image in panels}
    if len(shapes) != 1:
        raise ValueError(f"panels must have one size, got {sorted(shapes)}")
    height, width, _ = panels[0][1].shape
    label_height = _LINE_HEIGHT * max(len(label.split("\n")) for label, _ in panels) + 2
    canvas = Image.new(
        "RGB",
        (len(panels) * width + (len(panels) - 1) * _GAP, height + label_height),
        (background,) * 3,
    )
    for i, (label, image) in enumerate(panels):
        x = i * (width + _GAP)
        # Drawn on its own strip so a long label is clipped instead of running into the next.
        strip = Image.new("RGB", (width, label_height), (background,) * 3)
        ImageDraw.Draw(strip).multiline_text((1, 1), label, fill=(0, 0, 0), spacing=1)
        canvas.paste(strip, (x, 0))
        canvas.paste(Image.fromarray(np.asarray(image, np.uint8)), (x, label_height))
    return np.asarray(canvas)


def super_resolution_grid(
    *,
    nearest: np.ndarray,
    bicubic: np.ndarray,
    sr: np.ndarray,
    hr: np.ndarray,
    psnr: dict[str, float] | None = None,
) -> np.ndarray:
    """The seeds' sample picture: LR (nearest) | bicubic | SR | HR, labelled.

    Args:
      nearest, bicubic, sr, hr: HxWx3 uint8 images of one size (the LR input enlarged with
        nearest neighbour and with bicubic, the model's output, the reference).
      psnr: optional RGB PSNR (dB) per panel, keyed "nearest", "bicubic", "sr".
    """
    psnr = psnr or {}

    def label(name: str, key: str) -> str:
        return f"{name}\n{psnr[key]:.2f} dB" if key in psnr else name

    return comparison_grid(
        [
            (label("LR (nearest)", "nearest"), nearest),
            (label("bicubic", "bicubic"), bicubic),
            (label("SR", "sr"), sr),
            ("HR (reference)", hr),
        ]
    )


def stack_rows(rows: Sequence[np.ndarray], *, background: int = 0) -> np.ndarray:
    """Stacks HxWx3 uint8 images vertically, padding narrower ones on the right."""
    if not rows:
        raise ValueError("stack_rows needs at least one row")
    width = max(row.shape[1] for row in rows)
    padded = [
        np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=background)
        for row in rows
    ]
    return np.concatenate(padded, axis=0)


def crossfade(first: np.ndarray, last: np.ndarray, num_between: int) -> list[np.ndarray]:
    """Linear blends from `first` to `last`: [first, num_between blends, last] (uint8).

    The blends are at t = k / (num_between + 1), k = 1..num_between; images must have the
    same shape.
    """
    if first.shape != last.shape:
        raise ValueError(f"cannot cross-fade images of shapes {first.shape} and {last.shape}")
    if num_between < 0:
        raise ValueError(f"num_between must be >= 0, got {num_between}")
    a, b = first.astype(np.float64), last.astype(np.float64)
    frames = [first.astype(np.uint8)]
    for k in range(1, num_between + 1):
        t = k / (num_between + 1)
        frames.append(np.clip(np.round((1 - t) * a + t * b), 0, 255).astype(np.uint8))
    frames.append(last.astype(np.uint8))
    return frames


def _pad_to(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    canvas = Image.new("RGB", size)
    canvas.paste(image, ((size[0] - image.width) // 2, (size[1] - image.height) // 2))
    return canvas


def write_gif(frames: Iterable[np.ndarray | str], path: str, *, fps: float = 10.0) -> int:
    """Writes an endlessly looping GIF and returns its number of frames.

    Args:
      frames: HxWx3 uint8 arrays or paths of image files, in order. Frames of different sizes
        are centred on a black canvas of the largest size.
      path: output file (local, or remote through tf.io.gfile).
      fps: frames per second.

    GIF stores 256 colours per frame (an adaptive palette is chosen per frame). Pillow merges
    a frame identical to the one before it into a longer frame, so identical consecutive
    inputs give fewer frames; the return value counts the frames written.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    images = []
    for frame in frames:
        if isinstance(frame, str):
            image = Image.open(io.BytesIO(files.read_bytes(frame))).convert("RGB")
        else:
            image = Image.fromarray(np.asarray(frame, np.uint8))
        images.append(image)
    if not images:
        raise ValueError("write_gif needs at least one frame")
    size = (max(i.width for i in images), max(i.height for i in images))
    images = [_pad_to(i, size).quantize(256) for i in images]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )
    files.atomic_write(path, buffer.getvalue())
    with Image.open(io.BytesIO(buffer.getvalue())) as written:
        return written.n_frames
