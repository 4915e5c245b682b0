"""Benchmark: the dlss-preprocess Beam job (1 and 2 workers) vs a bare PIL loop.

Synthesises ``--num_images`` CelebA-sized (178x218) JPEGs from scikit-image's
photographs, then runs, each in a fresh process and timed end to end (interpreter
start, imports, work, TFDS metadata):

  bare       one process: list, decode, centre crop, resize to 128, degrade x4, PNG
             encode, serialise, write TFRecords sharded like the job, TFDS metadata
  beam_1     dlss-preprocess with the in-process FnApiRunner (1 worker)
  beam_2     dlss-preprocess --direct_num_workers=2 --direct_running_mode=multi_processing

Prints a table and writes JSON (images/s and ratios to the bare loop).

  .venv/bin/python bench/preprocess.py --num_images=2000 --repeats=3 \
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


def bare_loop(input_dir: str, output_dir: str) -> None:
    """The same per-image work as the job in one plain Python loop (no Beam)."""
    from beam_jobs import images_to_tfrecords, transforms
    from dlss_dist import imaging
    from dlss_dist.data import schema

    ratios = (0.9, 0.05, 0.05)
    config = transforms.ExampleConfig(source="folder", scale=SCALE, hr_size=HR_SIZE)
    per_split: dict[str, list[tuple[str, bytes]]] = {s: [] for s in schema.SPLITS}
    for name in sorted(os.listdir(input_dir)):
        key = name
        with open(os.path.join(input_dir, name), "rb") as f:
            image = imaging.decode_image(f.read())
        hr = transforms.make_hr(image, config)
        lr = imaging.degrade_bicubic(hr, config.scale)
        split = transforms.split_for_key(key, ratios)
        per_split[split].append((key, schema.serialize_example(lr=lr, hr=hr, key=key)))
    os.makedirs(output_dir, exist_ok=True)
    splits = {}
    for split, records in per_split.items():
        num_shards = transforms.default_num_shards(len(records), 1000) if records else 0
        shards: list[list[tuple[str, bytes]]] = [[] for _ in range(num_shards)]
        for key, record in records:
            shards[transforms.shard_for_key(key, num_shards)].append((key, record))
        lengths, num_bytes = [], 0
        for index, shard in enumerate(shards):
            path = schema.shard_path(output_dir, "dlss_sr", split, index, num_shards)
            num_bytes += transforms.write_tfrecord_file(path, (r for _, r in sorted(shard)))
            lengths.append(len(shard))
        splits[split] = {"examples": len(records), "shard_lengths": lengths, "num_bytes": num_bytes}
    manifest = {
        "scale": SCALE,
        "hr_size": HR_SIZE,
        "source": "folder",
        "degradation": imaging.DEGRADATION,
        "splits": splits,
    }
    images_to_tfrecords.write_tfds_metadata(output_dir, manifest)


def timed(command: list[str]) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs per contender")
    parser.add_argument("--output_json", default="bench/results/preprocess.json")
    parser.add_argument("--_bare", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._bare:
        bare_loop(*args._bare)
        return

    work = tempfile.mkdtemp(prefix="bench_preprocess_")
    images = os.path.join(work, "images")
    synthesise(images, args.num_images)
    job = [
        sys.executable,
        "-m",
        "beam_jobs.images_to_tfrecords",
        "--source=folder",
        f"--input_dir={images}",
        f"--scale={SCALE}",
        f"--hr_size={HR_SIZE}",
        "--overwrite",
    ]
    contenders = {
        "bare": lambda out: [sys.executable, os.path.abspath(__file__), "--_bare", images, out],
        "beam_1": lambda out: [*job, f"--output_dir={out}"],
        "beam_2": lambda out: [
            *job,
            f"--output_dir={out}",
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        ],
    }
    # Round robin, best of --repeats: the machines are shared, so load changes during a
    # run; interleaving gives every contender the same chances.
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(args.repeats):
        for name, command in contenders.items():
            runs[name].append(timed(command(os.path.join(work, f"{name}_{repeat}"))))
    seconds = {name: min(times) for name, times in runs.items()}
    result = {
        "num_images": args.num_images,
        "image_size": "178x218 JPEG -> HR 128, LR 32",
        "cpu_count": os.cpu_count(),
        "seconds": seconds,
        "all_runs_seconds": runs,
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "images_per_second": {k: args.num_images / v for k, v in seconds.items()},
        "ratio_to_bare": {k: seconds["bare"] / v for k, v in seconds.items()},
        "aims": {"beam_1": 0.8, "beam_2": 1.5},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
    with open(args.output_json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{'contender':<10} {'seconds':>8} {'images/s':>9} {'x bare':>7}")
    for name in contenders:
        print(
            f"{name:<10} {seconds[name]:8.2f} {result['images_per_second'][name]:9.1f} "
            f"{result['ratio_to_bare'][name]:7.2f}"
        )
    print(f"JSON: {args.output_json}")


if __name__ == "__main__":
    main()
