"""Benchmark: dlss-preprocess (1 and 2 workers) against the script a user would write.

Synthesises CelebA-sized (178x218) JPEGs from scikit-image's photographs, then runs each
contender as a fresh process, timed end to end (interpreter start, imports, work, metadata,
exit), in wall time and in CPU time (user + system of the process and every process it
waited for, from ``os.wait4``: far less sensitive than wall time to other load on the
machine):

  plain    what a user writes instead of our job (``plain_script`` below): Pillow open,
           centre crop, ``Image.resize(BICUBIC)`` to 128 and to 32, Pillow's default PNG,
           ``tf.train.Example`` and ``tf.io.TFRecordWriter``, one file per split
  beam_1   dlss-preprocess --direct_num_workers=1 (the in-process FnApiRunner)
  beam_2   dlss-preprocess --direct_num_workers=2 --direct_running_mode=multi_processing

at each of ``--sizes`` (default 500, 3000, 10000 images), in ``--rounds`` interleaved rounds
(every round runs every size and contender once, in a rotating order, so each meets the
same load). Per contender it reports the best time at each size, the ratio to ``plain``
(> 1: faster than the script) and to ``beam_1``, and a straight-line fit
``seconds = fixed + per_image * images`` over the sizes: the fixed cost (start-up and
tear-down) and the per-image cost, separately. ``--breakdown`` also times the phases of one
small run per worker count (wall-clock stamps at phase boundaries inside the process) and
lists what the launcher's imports cost (``python -X importtime``). Writes JSON.

  nice -n 10 .venv/bin/python bench/preprocess.py --sizes=500,3000,10000 --rounds=2 \\
      --breakdown --output_json=bench/results/preprocess.json

``--sizes=20,60 --rounds=1 --contenders=beam_1`` is a quick check (the test suite runs that);
``--rounds=0 --breakdown`` the breakdown alone. ``--baseline_repo=DIR`` adds ``base_1`` and
``base_2``: the same job run from another checkout (e.g. ``git worktree add --detach DIR
<commit before a change>``), interleaved with the others, in the breakdown too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HR_SIZE = 128
SCALE = 4
CONTENDERS = ("plain", "beam_1", "beam_2")
BASELINE_CONTENDERS = ("base_1", "base_2")  # beam_1, beam_2 run from --baseline_repo
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE_REPO = None  # set by --baseline_repo


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


def job_command(input_dir: str, output_dir: str, *extra: str) -> list[str]:
    """The dlss-preprocess command line (as ``python -m``) for this bench's images."""
    return [
        sys.executable,
        "-m",
        "beam_jobs.images_to_tfrecords",
        "--source=folder",
        f"--input_dir={input_dir}",
        f"--output_dir={output_dir}",
        f"--scale={SCALE}",
        f"--hr_size={HR_SIZE}",
        "--overwrite",
        *extra,
    ]


def contender_command(name: str, input_dir: str, output_dir: str) -> list[str]:
    if name == "plain":
        return [sys.executable, os.path.abspath(__file__), "--_plain", input_dir, output_dir]
    if name in ("beam_1", "base_1"):
        return job_command(input_dir, output_dir, "--direct_num_workers=1")
    if name in ("beam_2", "base_2"):
        return job_command(
            input_dir,
            output_dir,
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        )
    raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")


def repo_of(name: str) -> str:
    """The checkout a contender runs from: ``--baseline_repo`` for base_*, else this one."""
    return BASELINE_REPO if name.startswith("base_") else REPO


def _env(repo: str = REPO) -> dict[str, str]:
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=path)


def timed(command: list[str], repo: str = REPO) -> tuple[float, float]:
    """Runs ``command`` from checkout ``repo`` (working directory and first on the Python
    path) to completion; returns (wall seconds, CPU seconds).

    CPU is user + system time of the process and of every descendant it waited for (Beam's
    worker processes included), from ``os.wait4``.
    """
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, env=_env(repo), stdout=subprocess.DEVNULL, stderr=errors, cwd=repo
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime


def fit_line(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares ``seconds = fixed + per_image * size``; returns (fixed s, per-image s)."""
    n = len(sizes)
    mean_x = sum(sizes) / n
    mean_y = sum(seconds) / n
    sxx = sum((x - mean_x) ** 2 for x in sizes)
    per_image = sum((x - mean_x) * (y - mean_y) for x, y in zip(sizes, seconds, strict=True)) / sxx
    return mean_y - per_image * mean_x, per_image


def measure(inputs: dict[int, str], work: str, contenders: list[str], rounds: int) -> dict:
    """Every contender at every size, ``rounds`` times, interleaved; all (wall, cpu) pairs."""
    runs = {name: {size: [] for size in inputs} for name in contenders}
    for round_index in range(rounds):
        for size_index, (size, input_dir) in enumerate(inputs.items()):
            shift = (round_index + size_index) % len(contenders)
            for name in contenders[shift:] + contenders[:shift]:
                output_dir = os.path.join(work, f"out_{name}_{size}")
                wall, cpu = timed(contender_command(name, input_dir, output_dir), repo_of(name))
                shutil.rmtree(output_dir, ignore_errors=True)
                runs[name][size].append((wall, cpu))
                print(
                    f"round {round_index + 1} {name:<7} {size:>6} images "
                    f"{wall:7.2f} s wall {cpu:7.2f} s CPU",
                    flush=True,
                )
    return runs


def summarise(runs: dict, sizes: list[int]) -> dict:
    """Best times, ratios, and the fixed / per-image split for wall and CPU time."""
    result = {}
    for kind, index in (("wall", 0), ("cpu", 1)):
        best = {
            n: {s: min(r[index] for r in by_size[s]) for s in sizes} for n, by_size in runs.items()
        }
        table = {"best_seconds": best}
        if len(sizes) >= 2:
            table["fit"] = {}
            for name in best:
                fixed, per_image = fit_line(sizes, [best[name][s] for s in sizes])
                table["fit"][name] = {"fixed_seconds": fixed, "per_image_ms": per_image * 1e3}
        for reference in ("plain", "beam_1"):
            if reference in best:
                table[f"ratio_to_{reference}"] = {
                    n: {s: best[reference][s] / best[n][s] for s in sizes} for n in best
                }
        result[kind] = table
    return result


# -- breakdown: where a run's seconds go ----------------------------------------------------


def _traced(trace_json: str, argv: list[str]) -> None:
    """Runs the CLI as ``dlss-preprocess`` does, stamping wall-clock times at phase
    boundaries (by wrapping the job's functions); writes them to ``trace_json`` at exit."""
    import atexit

    stamps = {"tracer_start": time.time()}
    bundles = []

    def stamp(name):
        stamps.setdefault(name, time.time())

    def wrap(owner, attribute, name):
        original = getattr(owner, attribute, None)
        if original is None:  # renamed since: that stamp is left out
            return

        def wrapper(*args, **kwargs):
            stamp(f"{name}:begin")
            try:
                return original(*args, **kwargs)
            finally:
                stamp(f"{name}:end")

        setattr(owner, attribute, wrapper)

    from beam_jobs.images_to_tfrecords import cli

    stamp("imported_cli")
    from beam_jobs.images_to_tfrecords import job
    from beam_jobs.images_to_tfrecords import manifest as manifest_lib

    stamp("imported_job")
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers

    wrap(cli, "options_from_flags", "parse_options")
    wrap(job, "preflight", "preflight")
    wrap(job, "_take_lock", "lock")
    wrap(job, "choose_workers", "choose_workers")
    wrap(manifest_lib, "tfds_metadata", "metadata")
    wrap(job, "_publish", "publish")
    wrap(beam.Pipeline, "run", "pipeline_run")
    wrap(worker_handlers.WorkerHandlerManager, "close_all", "close_workers")
    execute_bundle = fn_runner.FnApiRunner._execute_bundle

    def timed_bundle(self, context, manager, bundle_input):
        start = time.time()
        try:
            return execute_bundle(self, context, manager, bundle_input)
        finally:
            bundles.append((start, time.time()))

    fn_runner.FnApiRunner._execute_bundle = timed_bundle

    def dump():
        stamp("exit_handlers")
        with open(trace_json, "w") as f:
            json.dump({"stamps": stamps, "bundles": bundles}, f)

    atexit.register(dump)
    if os.environ.get("BENCH_PLAIN_TENSORFLOW_IMPORT"):
        from dlss_dist import console

        console.import_tensorflow_quietly = lambda: __import__("tensorflow")
    sys.argv = [sys.argv[0], *argv]
    cli.run()


def _phases(t0: float, end: float, trace: dict) -> dict[str, float]:
    """Seconds per phase from a trace (``t0``: the parent's time just before starting it)."""
    s = trace["stamps"]
    bundles = trace["bundles"]
    first_stage = bundles[0][1] - bundles[0][0] if bundles else 0.0
    stages = sum(b - a for a, b in bundles)
    run_begin, run_end = s["pipeline_run:begin"], s["pipeline_run:end"]
    close = s.get("close_workers:end", run_end) - s.get("close_workers:begin", run_end)
    phases = {
        "python start (interpreter, site)": s["tracer_start"] - t0,
        "imports (dlss-preprocess, Beam)": s["imported_job"] - s["tracer_start"],
        "options, preflight": s["lock:begin"] - s["parse_options:begin"],
        "run lock": s["lock:end"] - s["lock:begin"],
        "worker choice, pipeline construction": run_begin - s["lock:end"],
        "runner set-up": bundles[0][0] - run_begin if bundles else 0.0,
        "first stage (starts the workers; lists the inputs)": first_stage,
        "other stages (the images, shards, accounting)": stages - first_stage,
        "closing the workers": close,
        "runner, rest": (run_end - run_begin) - stages - close - (bundles[0][0] - run_begin),
        "metadata, publish, lock release": s["exit_handlers"] - run_end,
        "exit": end - s["exit_handlers"],
    }
    return {name: round(seconds, 3) for name, seconds in phases.items()}


def breakdown(input_dir: str, work: str, contenders: list[str]) -> dict:
    """Phases of one run per worker count (of ``contenders``), and the launcher's imports by
    package."""
    result = {"images": len(os.listdir(input_dir))}
    for name in (c for c in ("beam_1", "beam_2", *BASELINE_CONTENDERS) if c in contenders):
        trace_json = os.path.join(work, f"trace_{name}.json")
        output_dir = os.path.join(work, f"trace_out_{name}")
        argv = contender_command(name, input_dir, output_dir)[3:]
        t0 = time.time()
        wall, cpu = timed(
            [sys.executable, os.path.abspath(__file__), "--_traced", trace_json, *argv],
            repo_of(name),
        )
        end = time.time()
        shutil.rmtree(output_dir, ignore_errors=True)
        with open(trace_json) as f:
            trace = json.load(f)
        result[name] = {"wall": wall, "cpu": cpu, "phases": _phases(t0, end, trace)}
    result["launcher_imports_ms"] = import_costs(input_dir, work, REPO)
    if any(c in BASELINE_CONTENDERS for c in contenders):
        result["baseline_launcher_imports_ms"] = import_costs(input_dir, work, BASELINE_REPO)
    return result


def import_costs(input_dir: str, work: str, repo: str) -> dict[str, float]:
    """Milliseconds of the launcher's imports during a 1-worker run, by top-level package:
    the sum of each module's own time (``python -X importtime``), the 12 largest and the
    total. ``--verbosity=1`` keeps stderr out of the job's log file, and TensorFlow, where a
    checkout imports it, is imported plainly (its quiet import hides its lines)."""
    output_dir = os.path.join(work, "importtime_out")
    argv = job_command(input_dir, output_dir, "--direct_num_workers=1", "--verbosity=1")[3:]
    trace_json = os.path.join(work, "importtime_trace.json")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", os.path.abspath(__file__), "--_traced", trace_json]
        + argv,
        env=dict(_env(repo), BENCH_PLAIN_TENSORFLOW_IMPORT="1"),
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(output_dir, ignore_errors=True)
    by_package: dict[str, float] = {}
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)$", line)
        if match:  # a module's own ("self") time, summed per top-level package
            package = match.group(2).split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(match.group(1)) / 1e3
    top = sorted(by_package.items(), key=lambda item: -item[1])
    costs = {name: round(ms, 1) for name, ms in top[:12]}
    costs["total"] = round(sum(by_package.values()), 1)
    return costs


# -- main -----------------------------------------------------------------------------------


def _print_report(result: dict) -> None:
    sizes = result["sizes"]
    for kind in (k for k in ("wall", "cpu") if k in result):
        table = result[kind]
        best = table["best_seconds"]
        print(f"\n{kind} time, best of {result['rounds']} (s; ratio to plain / to beam_1):")
        print(f"{'contender':<9}" + "".join(f"{s:>22}" for s in sizes) + "   fixed s  per image ms")
        for name in best:
            cells = ""
            for size in sizes:
                ratios = "/".join(
                    f"{table[f'ratio_to_{r}'][name][size]:.2f}"
                    for r in ("plain", "beam_1")
                    if f"ratio_to_{r}" in table
                )
                cells += f"{best[name][size]:>10.2f} ({ratios:>9})"
            fit = table.get("fit", {}).get(name)
            fitted = f"{fit['fixed_seconds']:>10.2f} {fit['per_image_ms']:>13.2f}" if fit else ""
            print(f"{name:<9}{cells} {fitted}")
    if "breakdown" in result:
        b = result["breakdown"]
        print(f"\nbreakdown of one run over {b['images']} images (wall s):")
        names = [n for n in ("beam_1", "beam_2", *BASELINE_CONTENDERS) if n in b]
        print(f"{'phase':<52}" + "".join(f"{n:>8}" for n in names))
        for phase in b[names[0]]["phases"]:
            print(f"{phase:<52}" + "".join(f"{b[n]['phases'][phase]:>8.2f}" for n in names))
        print(f"{'total (wall)':<52}" + "".join(f"{b[n]['wall']:>8.2f}" for n in names))
        print(f"{'total (CPU)':<52}" + "".join(f"{b[n]['cpu']:>8.2f}" for n in names))
        print(f"launcher imports by package (ms): {b['launcher_imports_ms']}")
        if "baseline_launcher_imports_ms" in b:
            print(f"baseline's (ms): {b['baseline_launcher_imports_ms']}")
    if result.get("per_image_ms_in_process"):
        print(f"per image, in one process (ms): {result['per_image_ms_in_process']}")
    print(f"load average before/after: {result['load_average_before_after']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,3000,10000", help="image counts, e.g. 500,3000")
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds (best of N); 0: none"
    )
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="which to run")
    parser.add_argument("--breakdown", action="store_true", help="also time the phases")
    parser.add_argument("--breakdown_size", type=int, default=200, help="images for it")
    parser.add_argument(
        "--per_image", type=int, default=0, help="images for an in-process per-image timing"
    )
    parser.add_argument(
        "--baseline_repo",
        help="another checkout (e.g. a worktree of main before a change): adds contenders "
        "base_1 and base_2, our job run from there, interleaved with the rest",
    )
    parser.add_argument("--output_json", default="bench/results/preprocess.json")
    parser.add_argument("--_plain", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_traced", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._plain:
        plain_script(*args._plain)
        return
    if args._traced:
        _traced(args._traced[0], args._traced[1:])
        return

    sizes = sorted(int(s) for s in args.sizes.split(","))
    contenders = [c for c in args.contenders.split(",") if c]
    known = CONTENDERS
    if args.baseline_repo:
        global BASELINE_REPO
        BASELINE_REPO = os.path.abspath(args.baseline_repo)
        known = CONTENDERS + BASELINE_CONTENDERS
        contenders += [c for c in BASELINE_CONTENDERS if c not in contenders]
    for name in contenders:
        if name not in known:
            parser.error(f"unknown contender {name!r}; choose from {', '.join(known)}")
    work = tempfile.mkdtemp(prefix="bench_preprocess_")
    if args.rounds == 0:  # the breakdown (or per-image timing) alone
        sizes = sizes[-1:] if args.per_image else []
    try:
        inputs = {}
        for size in sizes:
            inputs[size] = os.path.join(work, f"images_{size}")
            synthesise(inputs[size], size)
        load_before = os.getloadavg()[0]
        result = {
            "image_size": "178x218 JPEG -> HR 128, LR 32",
            "cpu_count": os.cpu_count(),
            "sizes": sizes,
            "rounds": args.rounds,
            "contenders": contenders,
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        }
        if args.breakdown:
            small = os.path.join(work, "images_breakdown")
            synthesise(small, args.breakdown_size)
            result["breakdown"] = breakdown(small, work, contenders)
        if args.per_image:
            result["per_image_ms_in_process"] = per_image_milliseconds(
                inputs[sizes[-1]], args.per_image
            )
        if args.rounds:
            runs = measure(inputs, work, contenders, args.rounds)
            result["all_runs_wall_cpu_seconds"] = runs
            result.update(summarise(runs, sizes))
        result["load_average_before_after"] = [load_before, os.getloadavg()[0]]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
    with open(args.output_json, "w") as f:
        json.dump(result, f, indent=2)
    _print_report(result)
    print(f"JSON: {args.output_json}")


if __name__ == "__main__":
    main()
