r"""Peak memory: the `Upscaler` across input sizes (--part=sizes), and the `serving_default`
signature on image bombs (--part=bombs, the default), one process per case.

Sizes: a starter model (default realworld_x4) upscales a photograph of 0.3, 1, 4 and 16
megapixels in a fresh process each, through `dlss_dist.serving.load_upscaler` with the default
memory budget (tiles chosen automatically) and, for the sizes in --untiled_sizes, in one untiled
call (the old default below the export's 4 MP limit). Each row: peak resident memory of the
process (VmHWM; it includes the input, the output array and the loaded runtime) and seconds:

  nice -n 10 .venv/bin/python bench/serving_memory.py --part=sizes --sizes=0.3,1,4 \
      --untiled_sizes=0.3 --formats=savedmodel,onnx --out=bench/results/upscaler_memory.json

Speed (--part=speed): tiled by the budget against one untiled call on the same image, in one
process per format, interleaved round by round (round 1 is each mode's first call at its
shapes, and the automatic one also measures the model's memory cost then):

  nice -n 10 .venv/bin/python bench/serving_memory.py --part=speed --sizes=0.3 --rounds=4 \
      --formats=savedmodel,onnx --out=bench/results/upscaler_speed.json

Bombs:

Exports a small generator with whatever `dlss_dist` is importable, then, for each input, starts
a fresh process that loads the SavedModel, warms up on a 16x16 PNG, sends the input and
records the growth of its peak resident size (ru_maxrss) and the outcome. Run it once with
the old code and once with the new to compare:

  PYTHONPATH=OLD python bench/serving_memory.py --out=bench/results/serving_memory_old.json
  PYTHONPATH=$PWD python bench/serving_memory.py --out=bench/results/serving_memory_new.json

Cases: a 49 KB PNG claiming 20000x20000 pixels (over the limit), a 735 KB GIF of 400 frames
of 1000x1000 (each at the limit), and the same GIF with one frame (the cost of upscaling one
1000x1000 image, the floor for the GIF); ``--bomb_side``/``--bomb_frames`` shrink the GIF (the
test suite runs a smoke size). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import image_bombs  # noqa: E402

MAX_INPUT_PIXELS = 1_000_000

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import tensorflow as tf
    serving = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    data = open(sys.argv[2], "rb").read()
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    serving(image_bytes=tf.constant([tf.io.encode_png(tf.zeros([16, 16, 3], tf.uint8)).numpy()]))
    before, started = peak(), time.perf_counter()
    try:
        serving(image_bytes=tf.constant([data]))
        outcome = "upscaled"
    except tf.errors.InvalidArgumentError as error:
        outcome = "refused: " + error.message.split("assertion failed: [")[-1][:90]
    print(json.dumps({"peak_growth_mb": round(peak() - before), "seconds":
                      round(time.perf_counter() - started, 2), "outcome": outcome}))
    """
)


SIZES_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from skimage import data
    from dlss_dist import serving
    from dlss_dist.serving import memory
    model, megapixels, mode, max_memory = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    upscaler = serving.load_upscaler(model, max_memory=max_memory)
    if upscaler.format == "savedmodel" and mode == "untiled":
        upscaler.runtime.max_input_pixels = None  # the old default: one call up to the limit
    photo = data.astronaut()
    side = int((megapixels * 1e6) ** 0.5)
    reps = -(-side // photo.shape[0])
    image = np.ascontiguousarray(np.tile(photo, (reps, reps, 1))[:side, :side])
    loaded = memory.peak_rss()
    started = time.perf_counter()
    if mode == "untiled":
        out = upscaler.upscale_batch(image[None])[0]
        tile = side
    else:
        out = upscaler(image)
        tile = max(upscaler.auto_tile(side, side, serving.DEFAULT_TILE_OVERLAP))
    seconds = time.perf_counter() - started
    print(json.dumps({"format": upscaler.format, "mode": mode, "megapixels": megapixels,
                      "input": f"{side}x{side}", "output": f"{out.shape[1]}x{out.shape[0]}",
                      "tile": tile, "loaded_mb": round(loaded / 2**20),
                      "peak_mb": round(memory.peak_rss() / 2**20), "seconds": round(seconds, 1),
                      "max_memory_mb": round(upscaler.max_memory / 2**20)}))
    """
)


SPEED_CHILD = textwrap.dedent(
    """
    import json, statistics, sys, time
    import numpy as np
    from skimage import data
    from dlss_dist import serving
    model, megapixels, rounds, max_memory = sys.argv[1], float(sys.argv[2]), *sys.argv[3:5]
    rounds = int(rounds)
    upscaler = serving.load_upscaler(model, max_memory=max_memory)
    upscaler.runtime.max_input_pixels = None  # the old default: one call up to the limit
    photo = data.astronaut()
    side = int((megapixels * 1e6) ** 0.5)
    reps = -(-side // photo.shape[0])
    image = np.ascontiguousarray(np.tile(photo, (reps, reps, 1))[:side, :side])
    times = {"auto": [], "untiled": []}
    outputs = {}
    for r in range(rounds):
        for mode in (("auto", "untiled") if r % 2 == 0 else ("untiled", "auto")):
            started = time.perf_counter()
            if mode == "auto":
                outputs[mode] = upscaler(image)
            else:
                outputs[mode] = upscaler.upscale_batch(image[None])[0]
            times[mode].append(time.perf_counter() - started)
    difference = np.abs(outputs["auto"].astype(int) - outputs["untiled"]).max()
    later = {m: statistics.median(t[1:]) for m, t in times.items()}
    print(json.dumps({"format": upscaler.format, "megapixels": megapixels,
                      "input": f"{side}x{side}",
                      "tile": max(upscaler.auto_tile(side, side, serving.DEFAULT_TILE_OVERLAP)),
                      "auto_s": [round(t, 2) for t in times["auto"]],
                      "untiled_s": [round(t, 2) for t in times["untiled"]],
                      "first_ratio": round(times["auto"][0] / times["untiled"][0], 3),
                      "later_median_ratio": round(later["auto"] / later["untiled"], 3),
                      "max_abs_difference": int(difference)}))
    """
)


def _child_row(script: str, argv: list[str], identity: dict) -> dict:
    """Runs `script` in a fresh process (its peak memory is its own) and returns the JSON row
    it prints last, or `identity` with the child's last error line; prints the row too."""
    child = subprocess.run(
        [sys.executable, "-c", script, *argv],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode:
        row = {**identity, "error": child.stderr.strip().splitlines()[-1][:200]}
    else:
        row = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def speed(args) -> dict:
    """Automatic tiles against one untiled call, interleaved in one process per format."""
    from dlss_dist import serving

    source = serving.locate(args.model)
    paths = {"savedmodel": source.path, "onnx": os.path.join(source.path, "model.onnx")}
    rows = []
    for megapixels in [float(m) for m in args.sizes.split(",")]:
        for fmt in args.formats.split(","):
            rows.append(
                _child_row(
                    SPEED_CHILD,
                    [paths[fmt], str(megapixels), str(args.rounds), args.max_memory],
                    {"format": fmt, "megapixels": megapixels},
                )
            )
    return {"model": args.model, "max_memory": args.max_memory, "rows": rows}


def sizes(args) -> dict:
    """The Upscaler across input sizes: one fresh process per (format, size, mode)."""
    from dlss_dist import serving

    source = serving.locate(args.model)
    paths = {"savedmodel": source.path, "onnx": os.path.join(source.path, "model.onnx")}
    rows = []
    for fmt in args.formats.split(","):
        for megapixels in [float(m) for m in args.sizes.split(",")]:
            untiled = [float(m) for m in args.untiled_sizes.split(",") if m]
            modes = ["auto"] + (["untiled"] if megapixels in untiled else [])
            for mode in modes:
                rows.append(
                    _child_row(
                        SIZES_CHILD,
                        [paths[fmt], str(megapixels), mode, args.max_memory],
                        {"format": fmt, "megapixels": megapixels, "mode": mode},
                    )
                )
    return {"model": args.model, "max_memory": args.max_memory, "rows": rows}


def markdown(result: dict) -> str:
    lines = [
        "| format | input (MP) | mode | tile | peak RSS (MB) | after load (MB) | seconds |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(
                f"| {r['format']} | {r['megapixels']} | {r['mode']} | failed: {r['error']} |"
            )
            continue
        lines.append(
            f"| {r['format']} | {r['megapixels']} ({r['input']}) | {r['mode']} | {r['tile']} | "
            f"{r['peak_mb']} | {r['loaded_mb']} | {r['seconds']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--part", choices=["bombs", "sizes", "speed"], default="bombs")
    parser.add_argument("--model", default="realworld_x4", help="sizes: the model")
    parser.add_argument("--sizes", default="0.3,1,4,16", help="sizes: megapixels")
    parser.add_argument("--untiled_sizes", default="0.3", help="sizes: also run these untiled")
    parser.add_argument("--formats", default="savedmodel,onnx", help="sizes: savedmodel, onnx")
    parser.add_argument("--max_memory", default="2G", help="sizes: the Upscaler's budget")
    parser.add_argument("--rounds", type=int, default=4, help="speed: interleaved rounds")
    parser.add_argument("--bomb_side", type=int, default=1000, help="bombs: GIF frame side")
    parser.add_argument("--bomb_frames", type=int, default=400, help="bombs: GIF frame count")
    args = parser.parse_args()
    if args.part == "speed":
        result = speed(args)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        return
    if args.part == "sizes":
        result = sizes(args)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(markdown(result))
        return

    from dlss_dist import export
    from dlss_dist.models.generators import srresnet_generator

    side, frames = args.bomb_side, args.bomb_frames
    cases = {
        "png_20000x20000": image_bombs.png_bomb(20_000, 20_000),
        f"gif_{side}x{side}_{frames}_frames": image_bombs.gif_bomb(side, side, frames),
        f"gif_{side}x{side}_1_frame": image_bombs.gif_bomb(side, side, 1),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "1")
        generator = srresnet_generator(2, num_filters=8, num_blocks=1)
        export.export_generator(generator, model, scale=2, max_input_pixels=MAX_INPUT_PIXELS)
        results = {"max_input_pixels": MAX_INPUT_PIXELS, "dlss_dist": export.__file__}
        for name, data in cases.items():
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            child = subprocess.run(
                [sys.executable, "-c", CHILD, model, path],
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                capture_output=True,
                text=True,
                check=True,
            )
            results[name] = {"file_bytes": len(data), **json.loads(child.stdout.splitlines()[-1])}
            print(name, results[name], flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("| input | file bytes | peak growth (MB) | seconds | outcome |")
    print("|---|---:|---:|---:|---|")
    for name in cases:
        r = results[name]
        cells = [name, r["file_bytes"], r["peak_growth_mb"], r["seconds"], r["outcome"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
