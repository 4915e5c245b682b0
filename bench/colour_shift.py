r"""Colour shift: how far each method's mean colour is from the HR's, in 8-bit grey levels.

  .venv/bin/python bench/colour_shift.py --hr_dir=photos/test --lr_dir=E/lr \
      --sr=realesrgan_x4plus=A/realesrgan_x4plus --sr=realworld_x4_gan=S/realworld_x4_gan

For every image ``<key>.png`` of --lr_dir (dlss-eval's ``<output_dir>/lr``), the HR image of
the same key in --hr_dir is cropped at the top left to 4x the LR size, as dlss-eval crops it,
and each method's mean R, G, B is compared with the HR's. Bicubic (the project's MATLAB-style
resize of the LR) is always included. Prints, per method, the signed mean difference per
channel over the images, the mean absolute difference per image and channel, and the worst
image. A GAN that shifts colour shows it here even when PSNR and LPIPS look fine.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags

from dlss_dist import imaging

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined on demand, so tests can import this module beside other bench scripts."""
    flags.DEFINE_string("hr_dir", None, "HR images (the --data folder dlss-eval was given).")
    flags.DEFINE_string("lr_dir", None, "LR images <key>.png (dlss-eval's <output_dir>/lr).")
    flags.DEFINE_multi_string("sr", [], "NAME=DIR of SR images <key>.png; repeat.")
    flags.DEFINE_integer("scale", 4, "SR factor.", lower_bound=2)
    flags.mark_flags_as_required(["hr_dir", "lr_dir"])


def _hr_path(hr_dir: str, key: str) -> str:
    for name in sorted(os.listdir(hr_dir)):
        if os.path.splitext(name)[0] == key:
            return os.path.join(hr_dir, name)
    raise FileNotFoundError(f"no HR image named {key}.* in {hr_dir}")


def colour_shifts(hr_dir: str, lr_dir: str, sr_dirs: dict[str, str], scale: int) -> dict:
    """{method: [N, 3] array of mean(SR) - mean(HR) per image and channel}."""
    shifts = {name: [] for name in ["bicubic", *sr_dirs]}
    for name in sorted(os.listdir(lr_dir)):
        key, ext = os.path.splitext(name)
        if ext != ".png":
            continue
        lr = imaging.read_image(os.path.join(lr_dir, name))
        height, width = lr.shape[0] * scale, lr.shape[1] * scale
        hr_mean = imaging.read_image(_hr_path(hr_dir, key))[:height, :width].reshape(-1, 3).mean(0)
        images = {"bicubic": imaging.imresize(lr, height, width)}
        for method, folder in sr_dirs.items():
            images[method] = imaging.read_image(os.path.join(folder, name))
        for method, image in images.items():
            mean = image[:height, :width].reshape(-1, 3).astype(np.float64).mean(0)
            shifts[method].append(mean - hr_mean)
    return {method: np.array(values) for method, values in shifts.items()}


def main(argv):
    del argv
    sr_dirs = dict(item.split("=", 1) for item in FLAGS.sr)
    shifts = colour_shifts(FLAGS.hr_dir, FLAGS.lr_dir, sr_dirs, FLAGS.scale)
    print("| method | signed mean R, G, B | mean abs per image | worst image |")
    print("|---|---|---|---|")
    for method, values in shifts.items():
        signed = ", ".join(f"{v:+.2f}" for v in values.mean(0))
        print(f"| {method} | {signed} | {np.abs(values).mean():.2f} | {np.abs(values).max():.2f} |")


if __name__ == "__main__":
    define_flags()
    app.run(main)
