"""Pictures for people: labelled comparison grids, GIFs, and cross-faded frames.

Used by training (sample grids), evaluation (per-image grids) and upscaling (GIFs and
cross-fades); it imports only the ground-floor `dlss_dist.files`, so every import of it
points down.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


def labelled_grid(
    rows: Sequence[Sequence[np.ndarray]],
    *,
    column_labels: Sequence[str],
    row_labels: Sequence[str] | None = None,
    font_size: int = 22,
    gap: int = 6,
    background: int = 255,
) -> np.ndarray:
    """A table of equally sized images shown at 1:1: a header of column labels, then per row
    an optional label line above its images. Labels use a scalable font (Pillow's bundled
    one), so they stay readable when a large grid is viewed whole.

    Args:
      rows: per row, one HxWx3 uint8 image per column (all the same size).
      column_labels: one per column, drawn above the first row, wrapped at spaces to the
        column's width.
      row_labels: one per row (e.g. the image's name and crop position), or None.
      font_size: label height in pixels.
      gap: pixels between cells.
      background: grey level of the gaps and label strips.

    Returns:
      A uint8 RGB image.
    """
    if not rows or not rows[0]:
        raise ValueError("labelled_grid needs at least one row of images")
    columns = len(column_labels)
    if any(len(row) != columns for row in rows):
        raise ValueError(f"every row needs {columns} images, one per column label")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(row_labels)} row labels")
    shapes = {image.shape for row in rows for image in row}
    if len(shapes) != 1:
        raise ValueError(f"images must have one size, got {sorted(shapes)}")
    height, width, _ = rows[0][0].shape
    font = ImageFont.load_default(size=font_size)
    line = round(font_size * 1.35)
    headers = [_wrap(label, font, width - 4) for label in column_labels]
    header = line * max(len(lines) for lines in headers)
    row_label = line if row_labels is not None else 0
    canvas = Image.new(
        "RGB",
        (
            columns * width + (columns + 1) * gap,
            header + len(rows) * (row_label + height + gap) + gap,
        ),
        (background,) * 3,
    )

    def text(x: int, y: int, lines: list[str], clip_width: int) -> None:
        strip = Image.new("RGB", (clip_width, line * len(lines)), (background,) * 3)
        for i, words in enumerate(lines):
            ImageDraw.Draw(strip).text((2, 1 + i * line), words, fill=(0, 0, 0), font=font)
        canvas.paste(strip, (x, y))

    for c, lines in enumerate(headers):
        text(gap + c * (width + gap), 0, lines, width)
    y = header
    for r, row in enumerate(rows):
        if row_labels is not None:
            text(gap, y + gap, [row_labels[r]], canvas.width - 2 * gap)
        y += row_label + gap
        for c, image in enumerate(row):
            canvas.paste(Image.fromarray(np.asarray(image, np.uint8)), (gap + c * (width + gap), y))
        y += height
    return np.asarray(canvas)


def _wrap(label: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Splits a label into lines no wider than `width` at spaces (and at "\n"); a single
    word wider than that stays whole and is clipped."""
    lines = []
    for paragraph in label.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}".strip()
            if current and font.getlength(candidate) > width:
                lines.append(current)
                current = word
            else:
                current = candidate
        lines.append(current)
    return lines


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
