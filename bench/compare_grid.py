r"""A comparison grid a person can judge: crops at 1:1 of several SR results beside LR and HR.

  .venv/bin/python bench/compare_grid.py --hr_dir=photos/test --lr_dir=E/lr \
      --sr="SPAN x4=A/span_x4" --sr="Real-ESRGAN x4plus=A/realesrgan_x4plus" \
      --sr="ours=E2/sr" --output=grid.png

Columns: LR (nearest, enlarged 4x), bicubic, each --sr folder in the order given, HR. Rows:
one crop each. Every folder holds ``<key>.png`` (the LR file names); the HR image
``<key>.<ext>`` in --hr_dir is cropped to a multiple of the scale at the top left, as
dlss-eval does, so it lines up with the SR images. Crops are ``--crop`` HR pixels square at
multiples of the scale; by default the ``--num_crops`` most detailed ones are chosen, one
per image (detail = mean absolute Laplacian of the HR's luma, on a grid of candidate
positions; deterministic), or name them with ``--crops=key:x:y,...`` (HR pixels).
Labels use a scalable font (``--font_size``) so they stay readable when the grid is viewed
whole. Nothing is resampled: every cell is 1:1 except the LR column (nearest, 4x).
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags, logging
from PIL import Image

from dlss_dist import imaging, pictures

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("hr_dir", None, "HR images (the --data folder dlss-eval was given).")
    flags.DEFINE_string("lr_dir", None, "LR images <key>.png (dlss-eval's <output_dir>/lr).")
    flags.DEFINE_multi_string("sr", [], "LABEL=DIR of SR images <key>.png; repeat, in order.")
    flags.DEFINE_string("output", "comparison_grid.png", "The grid PNG to write.")
    flags.DEFINE_integer("scale", 4, "SR factor.", lower_bound=2)
    flags.DEFINE_integer("crop", 192, "Crop side in HR pixels.", lower_bound=16)
    flags.DEFINE_integer("num_crops", 6, "Crops to choose automatically.", lower_bound=1)
    flags.DEFINE_list("crops", None, "key:x:y crops (HR pixels) instead of choosing.")
    flags.DEFINE_integer("font_size", 22, "Label height in pixels.", lower_bound=8)


def detail_score(hr: np.ndarray) -> np.ndarray:
    """Mean absolute Laplacian of the luma per pixel (HxW float), a cheap texture measure."""
    y = hr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = np.zeros_like(y)
    lap[1:-1, 1:-1] = np.abs(
        4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    )
    return lap


def choose_crops(hrs: dict[str, np.ndarray], crop: int, count: int, scale: int) -> list:
    """The ``count`` most detailed crops, at most one per image: [(key, x, y)]."""
    best = []
    step = max(scale, crop // 2 // scale * scale)
    for key, hr in hrs.items():
        height, width = hr.shape[:2]
        if height < crop or width < crop:
            continue
        score = detail_score(hr)
        integral = np.pad(score, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        candidates = [
            (integral[y + crop, x + crop] - integral[y, x + crop] - integral[y + crop, x]
             + integral[y, x], x, y)
            for y in range(0, height - crop + 1, step)
            for x in range(0, width - crop + 1, step)
        ]  # fmt: skip
        value, x, y = max(candidates)
        best.append((value, key, x, y))
    best.sort(key=lambda item: (-item[0], item[1]))
    return [(key, x, y) for _, key, x, y in best[:count]]


def _read_hr(hr_dir: str, key: str, scale: int) -> np.ndarray:
    for name in sorted(os.listdir(hr_dir)):
        if os.path.splitext(name)[0] == key:
            hr = imaging.read_image(os.path.join(hr_dir, name))
            return hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    raise FileNotFoundError(f"no HR image {key}.* in {hr_dir}")


def build_grid(
    hr_dir: str,
    lr_dir: str,
    sr_dirs: list[tuple[str, str]],
    *,
    scale: int = 4,
    crop: int = 192,
    num_crops: int = 6,
    crops: list[tuple[str, int, int]] | None = None,
    font_size: int = 22,
) -> np.ndarray:
    """The grid (HxWx3 uint8): rows of crops, columns LR | bicubic | each SR | HR."""
    keys = sorted(os.path.splitext(n)[0] for n in os.listdir(lr_dir) if n.endswith(".png"))
    if not keys:
        raise FileNotFoundError(f"no .png files in {lr_dir}")
    hrs = {key: _read_hr(hr_dir, key, scale) for key in keys}
    crops = crops or choose_crops(hrs, crop, num_crops, scale)
    if not crops:
        raise ValueError(f"no HR image is at least {crop}x{crop}: lower --crop")
    rows, row_labels = [], []
    for key, x, y in crops:
        if x % scale or y % scale:
            raise ValueError(f"crop {key}:{x}:{y}: x and y must be multiples of {scale}")
        hr = hrs[key]
        lr = imaging.read_image(os.path.join(lr_dir, f"{key}.png"))
        if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
            raise ValueError(f"{key}: LR {lr.shape[:2]} x{scale} does not match HR {hr.shape[:2]}")
        cells = [
            imaging.upscale_nearest(lr, scale),
            imaging.imresize(lr, hr.shape[0], hr.shape[1]),
        ]
        for label, folder in sr_dirs:
            sr = imaging.read_image(os.path.join(folder, f"{key}.png"))
            if sr.shape != hr.shape:
                raise ValueError(f"{label}: {key}.png is {sr.shape}, the HR is {hr.shape}")
            cells.append(sr)
        cells.append(hr)
        rows.append([cell[y : y + crop, x : x + crop] for cell in cells])
        row_labels.append(f"{key}  (x={x}, y={y}, {crop}x{crop} HR px, 1:1)")
        logging.info("crop %s at (%d, %d)", key, x, y)
    labels = ["LR (nearest)", "bicubic", *[label for label, _ in sr_dirs], "HR"]
    return pictures.labelled_grid(
        rows, column_labels=labels, row_labels=row_labels, font_size=font_size
    )


def _parse_crops(values: list[str] | None) -> list[tuple[str, int, int]] | None:
    if not values:
        return None
    parsed = []
    for value in values:
        key, x, y = value.rsplit(":", 2)
        parsed.append((key, int(x), int(y)))
    return parsed


def main(argv):
    del argv
    if not FLAGS.hr_dir or not FLAGS.lr_dir:
        raise app.UsageError("--hr_dir and --lr_dir are required")
    sr_dirs = []
    for value in FLAGS.sr:
        if "=" not in value:
            raise app.UsageError(f"--sr={value!r}: expected LABEL=DIR")
        label, folder = value.split("=", 1)
        sr_dirs.append((label, folder))
    grid = build_grid(
        FLAGS.hr_dir,
        FLAGS.lr_dir,
        sr_dirs,
        scale=FLAGS.scale,
        crop=FLAGS.crop,
        num_crops=FLAGS.num_crops,
        crops=_parse_crops(FLAGS.crops),
        font_size=FLAGS.font_size,
    )
    Image.fromarray(grid).save(FLAGS.output)
    print(f"Wrote {FLAGS.output} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    define_flags()
    app.run(main)
