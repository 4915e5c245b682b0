"""Benchmark: dlss-preprocess (1 and 2 workers) against the script a user would write.

Synthesises CelebA-sized (178x218) JPEGs from scikit-image's photographs, then runs, each
in a fresh process and timed end to end (interpreter start, imports, work, metadata),
round-robin so every contender meets the same load:

  plain    what a user writes instead of our job (``plain_script`` below): Pillow open,
           centre crop, ``Image.resize(BICUBIC)`` to 128 and to 32, Pillow's default PNG,
           ``tf.train.Example`` and ``tf.io.TFRecordWriter``, one file per split
  beam_1   dlss-preprocess, the in-process FnApiRunner (1 worker)
  beam_2   dlss-preprocess --direct_num_workers=2 --direct_running_mode=multi_processing

at each ``--sizes`` (default 2000 and 10000 images). First it times the per-image work
alone, ours against the script's loop body, interleaved in this process. Then reports, per
contender, the best end-to-end seconds at each size, the ratio to ``plain`` (> 1: faster
than the script), and the steady-state rate: the extra images between the two sizes
divided by the extra seconds, which cancels fixed start-up; per worker for beam_2.
Writes JSON.

  nice -n 10 .venv/bin/python bench/preprocess.py --sizes=2000,10000 --repeats=2 \\
      --output_json=bench/results/preprocess.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HR_SIZE = 128
SCALE = 4
WORKERS = {"plain": 1, "beam_1": 1, "beam_2": 2}


def synthesise(directory: str, count: int) -> None:
    """CelebA-sized JPEGs: random 178x218 crops (and flips) of the sample photographs."""
    import numpy as np
    from PIL import Image
    from skimage import data

    photos = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera"):
        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        photos.append(image[..., :3])
    rng = np.random.default_rng(0)
    os.makedirs(directory, exist_ok=True)
    for index in range(count):
        photo = photos[index % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - 218 + 1))
        left = int(rng.integers(0, photo.shape[1] - 178 + 1))
        crop = photo[top : top + 218, left : left + 178]
        if rng.integers(2):
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).save(
            os.path.join(directory, f"{index + 1:06d}.jpg"), quality=90
        )


def plain_example(input_dir: str, name: str) -> tuple[str, bytes]:
    """The loop body of the plain script a user would write: Pillow open, centre crop,
    Pillow's bicubic resize to HR and LR, Pillow's default PNG encoding, a tf.train.Example.
    Returns (split, serialized example)."""
    import io
    import zlib

    import tensorflow as tf
    from PIL import Image

    def png(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    def feature(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    image = Image.open(os.path.join(input_dir, name)).convert("RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    hr = image.crop((left, top, left + side, top + side)).resize((HR_SIZE, HR_SIZE), Image.BICUBIC)
    lr = hr.resize((HR_SIZE // SCALE, HR_SIZE // SCALE), Image.BICUBIC)
    example = tf.train.Example(
        features=tf.train.Features(
            feature={"hr": feature(png(hr)), "lr": feature(png(lr)), "key": feature(name.encode())}
        )
    )
    bucket = zlib.crc32(name.encode()) % 20
    split = "test" if bucket == 0 else "validation" if bucket == 1 else "train"
    return split, example.SerializeToString()


def plain_script(input_dir: str, output_dir: str) -> None:
    """The plain Pillow + tf.io.TFRecordWriter script, as a user would write it."""
    import tensorflow as tf

    os.makedirs(output_dir, exist_ok=True)
    writers = {
        split: tf.io.TFRecordWriter(os.path.join(output_dir, f"{split}.tfrecord"))
        for split in ("train", "validation", "test")
    }
    for name in sorted(os.listdir(input_dir)):
        split, serialized = plain_example(input_dir, name)
        writers[split].write(serialized)
    for writer in writers.values():
        writer.close()


def per_image_milliseconds(input_dir: str, count: int, rounds: int = 3) -> dict[str, float]:
    """The per-image work alone, in this process, interleaved: ours vs the plain script's.

    ``ours`` is ``examples_for_item`` (read, decode, strict JPEG check, crop, resize,
    degrade, two PNGs at level 1, proto) plus TFRecord framing; ``plain`` is
    :func:`plain_example`, the loop body of :func:`plain_script` without the writer, plus
    a CRC of the record (as the writer's framing computes). Best of ``rounds`` per image set.
    """
    import zlib

    from beam_jobs.images_to_tfrecords import examples, sources
    from dlss_dist.data import schema

    names = sorted(os.listdir(input_dir))[:count]
    config = examples.ExampleConfig(scale=SCALE, hr_size=HR_SIZE)
    items = [sources.SourceItem(n, "train", os.path.join(input_dir, n)) for n in names]

    def ours():
        for item in items:
            for _, serialized in examples.examples_for_item(item, config):
                schema.tfrecord_frame(serialized)

    def plain():
        for name in names:
            zlib.crc32(plain_example(input_dir, name)[1])

    best = {"ours": float("inf"), "plain": float("inf")}
    for _ in range(rounds):
        for name, work in (("ours", ours), ("plain", plain)):
            start = time.perf_counter()
            work()
            best[name] = min(best[name], (time.perf_counter() - start) / len(names) * 1e3)
    return best


def timed(command: list[str]) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000", help="two image counts, small,large")
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs per contender")
    parser.add_argument("--output_json", default="bench/results/preprocess.json")
    parser.add_argument(
        "--per_image", type=int, default=300, help="images for the in-process per-image timing"
    )
    parser.add_argument("--_plain", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._plain:
        plain_script(*args._plain)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    work = tempfile.mkdtemp(prefix="bench_preprocess_")
    inputs = {}
    for size in sizes:
        inputs[size] = os.path.join(work, f"images_{size}")
        synthesise(inputs[size], size)

    def job(size, out, *extra):
        return [
            sys.executable,
            "-m",
            "beam_jobs.images_to_tfrecords",
            "--source=folder",
            f"--input_dir={inputs[size]}",
            f"--output_dir={out}",
            f"--scale={SCALE}",
            f"--hr_size={HR_SIZE}",
            "--overwrite",
            *extra,
        ]

    contenders = {
        "plain": lambda size, out: [
            sys.executable,
            os.path.abspath(__file__),
            "--_plain",
            inputs[size],
            out,
        ],
        "beam_1": lambda size, out: job(size, out),
        "beam_2": lambda size, out: job(
            size, out, "--direct_num_workers=2", "--direct_running_mode=multi_processing"
        ),
    }
    load_before = os.getloadavg()
    per_image = per_image_milliseconds(inputs[sizes[0]], args.per_image)
    print(f"per image, in process: {per_image}", flush=True)
    runs: dict[str, dict[int, list[float]]] = {n: {s: [] for s in sizes} for n in contenders}
    for _ in range(args.repeats):
        for size in sizes:
            for name, command in contenders.items():
                out = os.path.join(work, f"{name}_{size}")
                seconds = timed(command(size, out))
                runs[name][size].append(seconds)
                print(f"{name:<7} {size:>6} images {seconds:7.2f} s", flush=True)
    best = {n: {s: min(t) for s, t in by_size.items()} for n, by_size in runs.items()}
    small, large = sizes[0], sizes[-1]
    steady = {n: (large - small) / (best[n][large] - best[n][small]) for n in contenders}
    result = {
        "image_size": "178x218 JPEG -> HR 128, LR 32",
        "cpu_count": os.cpu_count(),
        "sizes": sizes,
        "best_seconds": best,
        "all_runs_seconds": runs,
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "ratio_to_plain": {
            n: {s: best["plain"][s] / best[n][s] for s in sizes} for n in contenders
        },
        "steady_images_per_second": steady,
        "steady_images_per_second_per_worker": {n: steady[n] / WORKERS[n] for n in contenders},
        "steady_ratio_to_plain": {n: steady[n] / steady["plain"] for n in contenders},
        "per_image_ms_in_process": per_image,
        "aims": {
            "beam_1 end to end at 2000": 1.0,
            "beam_1 steady": 1.3,
            "beam_2 end to end": 1.6,
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
    with open(args.output_json, "w") as f:
        json.dump(result, f, indent=2)
    header = " ".join(f"{f'{s} img s':>10} {'x plain':>7}" for s in sizes)
    print(f"\n{'contender':<9} {header} {'steady img/s':>12} {'per worker':>10} {'x plain':>7}")
    for name in contenders:
        cells = " ".join(
            f"{best[name][s]:10.2f} {result['ratio_to_plain'][name][s]:7.2f}" for s in sizes
        )
        print(
            f"{name:<9} {cells} {steady[name]:12.1f} "
            f"{result['steady_images_per_second_per_worker'][name]:10.1f} "
            f"{result['steady_ratio_to_plain'][name]:7.2f}"
        )
    print(f"per image in process (ms): {per_image}")
    print(f"load average before/after: {result['load_average_before_after']}")
    print(f"JSON: {args.output_json}")


if __name__ == "__main__":
    main()
