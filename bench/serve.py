r"""Serving benchmark: the exported SavedModel, ONNX Runtime and LiteRT versus the Keras
generator in process, and the peak memory of upscaling a 2048x2048 image tiled versus untiled.

  .venv/bin/python bench/serve.py [--output=bench/results/serve.json]

Latency/throughput: one SRResNet generator (random weights; speed does not depend on them),
the same uint8 inputs, all variants measured in one run, interleaved repetition by
repetition so machine noise hits them alike; the table reports medians and the ratio to the
in-process Keras call compiled with tf.function (the fair baseline: same graph, no
serialisation) and to the eager Keras call. The ONNX model (tf2onnx) runs in ONNX Runtime's
CPU provider and the float32 TFLite model in LiteRT (XNNPACK), each with its default threads,
exported from the same generator (`dlss-export --format=onnx,tflite`); each must agree with
the SavedModel within one grey level before anything is timed.

Memory: each mode runs in its own subprocess (ru_maxrss is a per-process high-water mark):
"baseline" loads the model and allocates the input and output arrays only; "untiled" upscales
in one call; "tiled N" upscales in N x N tiles. A lighter x2 generator is used so the untiled
run fits in RAM at all. The memory runs come first and the model is exported by a child too,
because a child's ru_maxrss starts from the parent's resident size at fork.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "bench/results/serve.json", "Where the JSON results go.")
flags.DEFINE_multi_enum("parts", ["latency", "memory"], ["latency", "memory"], "What to measure.")
flags.DEFINE_integer("scale", 4, "Latency model: upscaling factor.")
flags.DEFINE_integer("num_filters", 64, "Latency model: SRResNet filters.")
flags.DEFINE_integer("num_blocks", 16, "Latency model: SRResNet residual blocks.")
flags.DEFINE_integer("input_size", 64, "Latency: LR input side in pixels.")
flags.DEFINE_integer("repeats", 30, "Latency: timed calls per variant (batch 1).")
flags.DEFINE_integer("batch_size", 8, "Throughput: images per call.")
flags.DEFINE_integer("batch_repeats", 15, "Throughput: timed calls per variant.")
flags.DEFINE_list(
    "runtimes", ["onnxruntime", "litert"], "Other runtimes to time: onnxruntime, litert."
)
flags.DEFINE_integer("memory_size", 2048, "Memory: input side in pixels.")
flags.DEFINE_list("memory_tiles", ["256", "512"], "Memory: tile sides for the tiled runs.")
flags.DEFINE_integer("memory_tile", 256, "Memory: tile side (internal, one child).")
flags.DEFINE_integer("memory_tile_overlap", 16, "Memory: tile overlap in pixels.")
# Internal: run one memory measurement in this (child) process.
flags.DEFINE_string("memory_child", None, "baseline|untiled|tiled (internal).")
flags.DEFINE_string("export_child", None, "Export the memory model here (internal).")
flags.DEFINE_string("model", None, "SavedModel for --memory_child (internal).")

# The memory model: light enough that the untiled 2048x2048 run fits in RAM at all.
MEMORY_MODEL = {"scale": 2, "num_filters": 32, "num_blocks": 4}


def _test_image(size: int):
    """A size x size uint8 photograph (scikit-image's astronaut, tiled/cropped)."""
    import numpy as np
    from skimage import data

    photo = data.astronaut()
    reps = -(-size // photo.shape[0])
    return np.ascontiguousarray(np.tile(photo, (reps, reps, 1))[:size, :size])


def _build_generator(scale: int, num_filters: int, num_blocks: int):
    import numpy as np

    from dlss_dist.models.generators import srresnet_generator

    generator = srresnet_generator(scale, num_filters=num_filters, num_blocks=num_blocks)
    rng = np.random.default_rng(0)
    for variable in generator.weights:
        variable.assign(rng.normal(0, 0.02, variable.shape).astype(np.float32))
    return generator


def memory_child() -> None:
    """Measures one mode and prints {"mode", "max_rss_mb", "seconds"} as JSON."""
    import numpy as np

    from dlss_dist import serving

    upscaler = serving.load_upscaler(FLAGS.model)
    image = _test_image(FLAGS.memory_size)
    start = time.perf_counter()
    if FLAGS.memory_child == "baseline":
        side = FLAGS.memory_size * upscaler.scale
        out = np.ones((side, side, 3), np.uint8)  # touch the pages, as a real output would
    elif FLAGS.memory_child == "untiled":
        out = upscaler.upscale_batch(image[None])[0]
    else:
        out = upscaler(image, tile=FLAGS.memory_tile, tile_overlap=FLAGS.memory_tile_overlap)
    seconds = time.perf_counter() - start
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    # VmHWM is the same high-water mark for this program's own address space only (ru_maxrss
    # also counts the parent's pages at fork); both are reported as a cross-check.
    with open("/proc/self/status") as f:
        vm_hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    mode = FLAGS.memory_child
    print(
        json.dumps(
            {
                "mode": f"tiled {FLAGS.memory_tile}" if mode == "tiled" else mode,
                "max_rss_mb": round(max_rss_mb, 1),
                "vm_hwm_mb": round(vm_hwm_kb / 1024, 1),
                "seconds": round(seconds, 2),
                "output_shape": list(out.shape),
                "output_checksum": int(out[:: max(1, out.shape[0] // 512)].astype(np.int64).sum()),
            }
        )
    )


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latency_and_throughput(workdir: str) -> dict:
    import numpy as np
    import tensorflow as tf

    from dlss_dist import export, serving

    generator = _build_generator(FLAGS.scale, FLAGS.num_filters, FLAGS.num_blocks)
    path = export.export_generator(
        generator, os.path.join(workdir, "latency", "1"), scale=FLAGS.scale
    )
    upscaler = serving.load_upscaler(path)
    serving_default = upscaler.runtime.signatures["serving_default"]

    def keras_eager(images):
        sr = generator(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False)
        return tf.cast(tf.round((tf.clip_by_value(sr, -1.0, 1.0) + 1.0) * 127.5), tf.uint8).numpy()

    keras_function = tf.function(
        lambda images: tf.cast(
            tf.round(
                (
                    tf.clip_by_value(
                        generator(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False),
                        -1.0,
                        1.0,
                    )
                    + 1.0
                )
                * 127.5
            ),
            tf.uint8,
        ),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
    )

    photo = _test_image(512)
    size = FLAGS.input_size
    rng = np.random.default_rng(0)
    batch = np.stack(
        [
            photo[y : y + size, x : x + size]
            for y, x in rng.integers(0, 512 - size, (FLAGS.batch_size, 2))
        ]
    )
    single = batch[:1]
    png = tf.constant([tf.io.encode_png(single[0]).numpy()])

    variants = {
        "keras_eager": lambda images: keras_eager(images),
        "keras_tf_function": lambda images: keras_function(images).numpy(),
        "savedmodel_upscale": upscaler.upscale_batch,
    }
    variants.update(_other_runtimes(generator, os.path.join(workdir, "latency", "1")))
    # Same numbers from every variant, or the comparison is meaningless.
    reference = variants["keras_tf_function"](single)
    for name, fn in variants.items():
        assert np.abs(fn(single).astype(int) - reference).max() <= 1, name
        fn(batch)  # warm-up at both shapes

    def serving_png(_images):
        return serving_default(image_bytes=png)["image_bytes"].numpy()

    serving_png(None)
    latency = {name: [] for name in [*variants, "savedmodel_serving_default_png"]}
    # CPU time of the whole process per call (all threads): on a machine shared with other
    # jobs, wall time measures the load as much as the runtime; CPU time measures the work.
    cpu = {name: [] for name in variants}
    for _ in range(FLAGS.repeats):
        for name, fn in variants.items():
            cpu_start = time.process_time()
            latency[name].append(_timed(lambda fn=fn: fn(single)))
            cpu[name].append(time.process_time() - cpu_start)
        latency["savedmodel_serving_default_png"].append(_timed(lambda: serving_png(None)))
    throughput = {name: [] for name in variants}
    for _ in range(FLAGS.batch_repeats):
        for name, fn in variants.items():
            throughput[name].append(_timed(lambda fn=fn: fn(batch)))

    base = statistics.median(latency["keras_tf_function"])
    base_eager = statistics.median(latency["keras_eager"])
    base_batch = statistics.median(throughput["keras_tf_function"])
    # Minimums too: on a shared machine noise only ever adds time, so the fastest call is the
    # steadiest estimate of what each variant costs.
    base_savedmodel = statistics.median(latency["savedmodel_upscale"])
    base_savedmodel_batch = statistics.median(throughput["savedmodel_upscale"])
    base_min = min(latency["keras_tf_function"])
    base_batch_min = min(throughput["keras_tf_function"])
    rows = []
    for name, times in latency.items():
        median = statistics.median(times)
        row = {
            "variant": name,
            "latency_ms_median": round(1000 * median, 1),
            "latency_ms_min": round(1000 * min(times), 1),
            "latency_vs_keras_tf_function": round(median / base, 3),
            "latency_min_vs_keras_tf_function": round(min(times) / base_min, 3),
            "latency_vs_keras_eager": round(median / base_eager, 3),
            "latency_vs_savedmodel_upscale": round(median / base_savedmodel, 3),
        }
        if name in cpu:
            row["cpu_ms_median"] = round(1000 * statistics.median(cpu[name]), 1)
            row["cpu_vs_savedmodel_upscale"] = round(
                statistics.median(cpu[name]) / statistics.median(cpu["savedmodel_upscale"]), 3
            )
        if name in throughput:
            batch_median = statistics.median(throughput[name])
            row["throughput_images_per_s"] = round(FLAGS.batch_size / batch_median, 2)
            row["throughput_time_vs_keras_tf_function"] = round(batch_median / base_batch, 3)
            row["throughput_time_vs_savedmodel_upscale"] = round(
                batch_median / base_savedmodel_batch, 3
            )
            row["throughput_min_time_vs_keras_tf_function"] = round(
                min(throughput[name]) / base_batch_min, 3
            )
        rows.append(row)
    return {
        "model": {
            "network": "srresnet_generator",
            "scale": FLAGS.scale,
            "num_filters": FLAGS.num_filters,
            "num_blocks": FLAGS.num_blocks,
        },
        "input": f"{size}x{size} uint8, batch 1 (latency) / batch {FLAGS.batch_size} (throughput)",
        "repeats": FLAGS.repeats,
        "batch_repeats": FLAGS.batch_repeats,
        "rows": rows,
    }


def _other_runtimes(generator, version_dir: str) -> dict:
    """{variant name: uint8 NHWC batch -> uint8 NHWC batch} for --runtimes."""
    from dlss_dist import exporters

    formats = {"onnxruntime": "onnx", "litert": "tflite"}
    unknown = set(FLAGS.runtimes) - set(formats)
    if unknown:
        raise app.UsageError(f"--runtimes: unknown {sorted(unknown)}; choose from {list(formats)}")
    paths = exporters.export_files(
        generator,
        version_dir,
        scale=FLAGS.scale,
        formats=[formats[r] for r in FLAGS.runtimes],
        tflite_variants=("float32",),
    )
    variants = {}
    if "onnx" in paths:
        from dlss_dist.serving.onnx_file import OnnxRuntime

        # As dlss_dist exports and runs it (worker threads do not spin), the export without
        # its rewrites, ONNX Runtime's own default (threads spin while waiting: on a shared,
        # loaded machine that competes with the work), and one thread.
        variants["onnxruntime"] = OnnxRuntime(paths["onnx"]).upscale_batch
        # The same model as tf2onnx converts it, without dlss_dist's rewrites for ONNX
        # Runtime's blocked CPU layout (`dlss_dist.exporters.onnx_rewrites`).
        from dlss_dist.exporters import onnx_model

        as_converted = onnx_model.export_onnx(
            generator,
            os.path.join(version_dir, "as_converted.onnx"),
            scale=FLAGS.scale,
            cpu_rewrites=False,
        )
        variants["onnxruntime_as_converted"] = OnnxRuntime(as_converted).upscale_batch
        variants["onnxruntime_spinning"] = OnnxRuntime(paths["onnx"], spinning=True).upscale_batch
        variants["onnxruntime_1_thread"] = OnnxRuntime(paths["onnx"], threads=1).upscale_batch
    if "tflite_float32" in paths:
        from dlss_dist.serving.tflite_file import TFLiteRuntime

        variants["litert_tflite_float32"] = TFLiteRuntime(paths["tflite_float32"]).upscale_batch
    return variants


def export_child() -> None:
    """Exports the memory model to --export_child (keeps TF out of the parent process)."""
    from dlss_dist import export

    generator = _build_generator(**MEMORY_MODEL)
    export.export_generator(
        generator,
        FLAGS.export_child,
        scale=MEMORY_MODEL["scale"],
        max_input_pixels=FLAGS.memory_size**2,
    )


def _run_child(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, os.path.abspath(__file__), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def peak_memory(workdir: str) -> dict:
    """Runs before anything imports TensorFlow here: a child's ru_maxrss starts from the
    parent's resident size at fork, so the parent must stay small."""
    path = os.path.join(workdir, "memory", "1")
    exported = _run_child(f"--export_child={path}", f"--memory_size={FLAGS.memory_size}")
    if exported.returncode:
        raise RuntimeError(f"exporting the memory model failed:\n{exported.stderr[-3000:]}")
    runs = [("baseline", 0)] + [("tiled", int(t)) for t in FLAGS.memory_tiles] + [("untiled", 0)]
    rows = []
    for mode, tile in runs:
        logging.info("Memory: %s %s", mode, tile or "")
        result = _run_child(
            f"--memory_child={mode}",
            f"--model={path}",
            f"--memory_size={FLAGS.memory_size}",
            f"--memory_tile={tile or 256}",
            f"--memory_tile_overlap={FLAGS.memory_tile_overlap}",
        )
        if result.returncode:
            rows.append({"mode": mode, "error": result.stderr[-2000:]})
            continue
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return {
        "model": {"network": "srresnet_generator", **MEMORY_MODEL},
        "input": f"{FLAGS.memory_size}x{FLAGS.memory_size} uint8",
        "tile_overlap": FLAGS.memory_tile_overlap,
        "rows": rows,
    }


def markdown(results: dict) -> str:
    lines = []
    if "latency" in results:
        speed = results["latency"]
        m = speed["model"]
        lines += [
            f"SRResNet x{m['scale']} ({m['num_filters']} filters, {m['num_blocks']} blocks), "
            f"{speed['input']}; {speed['repeats']} / {speed['batch_repeats']} interleaved calls "
            "per variant; ratios are to the in-process Keras generator in a tf.function "
            "(median, and min in brackets).",
            "",
            "| variant | latency median (min), ms | latency ratio | throughput, img/s | "
            "batch time ratio |",
            "|---|---|---|---|---|",
        ]
        for r in speed["rows"]:
            batch = "-"
            if "throughput_time_vs_keras_tf_function" in r:
                batch = (
                    f"{r['throughput_time_vs_keras_tf_function']}x "
                    f"({r['throughput_min_time_vs_keras_tf_function']}x)"
                )
            lines.append(
                f"| {r['variant']} | {r['latency_ms_median']} ({r['latency_ms_min']}) | "
                f"{r['latency_vs_keras_tf_function']}x ({r['latency_min_vs_keras_tf_function']}x)"
                f" | {r.get('throughput_images_per_s', '-')} | {batch} |"
            )
        others = [r for r in speed["rows"] if r["variant"].startswith(("onnxruntime", "litert"))]
        if others:
            lines += [
                "",
                "Other runtimes against the SavedModel's `upscale` signature (median time ratio, "
                "min over min in brackets; below 1 = faster):",
                "",
                "| runtime | latency vs SavedModel | batch time vs SavedModel | CPU time per call "
                "vs SavedModel |",
                "|---|---|---|---|",
            ]
            savedmodel = next(r for r in speed["rows"] if r["variant"] == "savedmodel_upscale")
            for r in others:
                min_ratio = r["latency_ms_min"] / savedmodel["latency_ms_min"]
                lines.append(
                    f"| {r['variant']} | {r['latency_vs_savedmodel_upscale']}x "
                    f"({min_ratio:.3f}x) | {r['throughput_time_vs_savedmodel_upscale']}x | "
                    f"{r.get('cpu_vs_savedmodel_upscale', '-')}x |"
                )
    if "memory" in results:
        memory = results["memory"]
        mm = memory["model"]
        lines += [
            "",
            f"Peak memory (one subprocess each), {memory['input']} with SRResNet x{mm['scale']} "
            f"({mm['num_filters']} filters, {mm['num_blocks']} blocks), tile overlap "
            f"{memory['tile_overlap']} px; baseline = load the model, allocate input and output:",
            "",
            "| mode | peak RSS, ru_maxrss (MB) | VmHWM (MB) | time (s) |",
            "|---|---|---|---|",
        ]
        for r in memory["rows"]:
            if "error" in r:
                lines.append(f"| {r['mode']} | failed | - | - |")
            else:
                lines.append(
                    f"| {r['mode']} | {r['max_rss_mb']} | {r['vm_hwm_mb']} | {r['seconds']} |"
                )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.memory_child:
        memory_child()
        return
    if FLAGS.export_child:
        export_child()
        return
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        if "memory" in FLAGS.parts:
            results["memory"] = peak_memory(workdir)  # first, while this process is small
        if "latency" in FLAGS.parts:
            results["latency"] = latency_and_throughput(workdir)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)
    print(markdown(results))
    print(f"\nWrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
