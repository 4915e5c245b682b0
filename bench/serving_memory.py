r"""Peak memory of the `serving_default` signature on image bombs, one process per case.

Exports a small generator with whatever `dlss_dist` is importable, then, for each input, starts
a fresh process that loads the SavedModel, warms up on a 16x16 PNG, sends the input and
records the growth of its peak resident size (ru_maxrss) and the outcome. Run it once with
the old code and once with the new to compare:

  PYTHONPATH=OLD python bench/serving_memory.py --out=bench/results/serving_memory_old.json
  PYTHONPATH=$PWD python bench/serving_memory.py --out=bench/results/serving_memory_new.json

Cases: a 49 KB PNG claiming 20000x20000 pixels (over the limit), a 735 KB GIF of 400 frames
of 1000x1000 (each at the limit), and the same GIF with one frame (the cost of upscaling one
1000x1000 image, the floor for the GIF).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    from dlss_dist import export
    from dlss_dist.models.generators import srresnet_generator

    cases = {
        "png_20000x20000": image_bombs.png_bomb(20_000, 20_000),
        "gif_1000x1000_400_frames": image_bombs.gif_bomb(1000, 1000, 400),
        "gif_1000x1000_1_frame": image_bombs.gif_bomb(1000, 1000, 1),
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


if __name__ == "__main__":
    main()
