"""The end-to-end demo: photographs -> Beam -> 2-replica training -> export -> evaluation.

Twelve bundled photographs are cut into patches for training and validation; three others
are held out entirely and evaluated whole, as a plain folder of HR images.

Everything runs locally on scikit-image's bundled photographs (nothing is downloaded). The
result is `<output_dir>/report.md` with the metrics table and a comparison picture.
"""

from __future__ import annotations

import os
import shutil
import time

import gin
import numpy as np
from absl import logging
from PIL import Image

from dlss_dist import distribute
from dlss_dist.evaluation import evaluate as evaluate_lib
from dlss_dist.training import loop, model_dir

# scikit-image's bundled photographs (grayscale ones become RGB in the Beam job).
TRAINING_PHOTOGRAPHS = (
    "brick",
    "camera",
    "cell",
    "clock",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
)
# Never seen in training: the evaluation's images.
HELD_OUT_PHOTOGRAPHS = ("astronaut", "chelsea", "coffee")
DEMO_OUTPUTS = ("photos", "held_out", "dataset", "model", "evaluation", "report.md")


def write_photographs(folder: str, names: tuple[str, ...]) -> list[str]:
    """Saves bundled photographs as PNG files in `folder`; returns their paths."""
    from skimage import data  # the demo extra; imported here so the library does not need it

    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in names:
        path = os.path.join(folder, f"{name}.png")
        Image.fromarray(np.asarray(getattr(data, name)())).save(path)
        paths.append(path)
    return paths


def preprocess(photos: str, dataset: str, *, scale, hr_size, patches, split_ratios, workers):
    """Runs the Beam job (DirectRunner, multi_processing) on the photographs."""
    from beam_jobs.images_to_tfrecords.job import JobOptions, run_job

    run_job(
        JobOptions(
            source="folder",
            inputs={"input_dir": photos},
            output_dir=dataset,
            scale=scale,
            hr_size=hr_size,
            patches_per_image=patches,
            split_ratios=tuple(split_ratios),
            beam_args=(
                f"--direct_num_workers={workers}",
                "--direct_running_mode=multi_processing",
            ),
        ),
        worker_log_to_file=True,  # Beam's worker processes' chatter: a file, kept on failure
    )


def write_report(output_dir: str, summary: dict, timings: dict[str, float], steps: int) -> str:
    """Writes report.md (table, picture, timings) and returns its path."""
    grids = sorted(os.listdir(os.path.join(output_dir, "evaluation", "grids")))
    picture = os.path.join("evaluation", "grids", grids[0]) if grids else None
    lines = [
        "# dlss_dist demo report",
        "",
        f"{summary['scale']}x super-resolution of {summary['num_images']} photographs the "
        f"model never saw ({', '.join(HELD_OUT_PHOTOGRAPHS)}; LR made by "
        f"`{summary['degradation']}`, border crop {summary['border_crop']} px), after "
        f"{steps} training steps on two logical CPU replicas. Model: "
        f"`{os.path.relpath(summary['model'], output_dir)}`, the kept export with the best "
        "validation PSNR.",
        "",
        evaluate_lib.format_table(summary),
        "",
    ]
    if picture:
        lines += [f"![LR (nearest) | bicubic | SR | HR]({picture})", ""]
    lines += ["| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in timings.items()]
    path = os.path.join(output_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


@gin.configurable(denylist=["output_dir", "overwrite"])
def run_demo(
    output_dir: str,
    *,
    overwrite: bool = False,
    scale: int = gin.REQUIRED,
    dataset_hr_size: int = 128,
    patches_per_image: int = 24,
    split_ratios: tuple[float, float, float] = (0.85, 0.15, 0.0),
    beam_workers: int = 2,
) -> tuple[str, dict]:
    """Runs the whole pipeline into `output_dir`.

    Args:
      output_dir: where photos/, dataset/, model/, evaluation/ and report.md go.
      overwrite: replace the outputs of an earlier demo run in `output_dir`.
      scale: super-resolution factor (the gin SCALE macro).
      dataset_hr_size: side of the HR patches the Beam job writes, in pixels.
      patches_per_image: patches cut from each photograph.
      split_ratios: train/validation/test fractions (by photograph); the evaluation
        uses separate held-out photographs, so the test split may stay empty.
      beam_workers: DirectRunner worker processes.

    Returns:
      (path of report.md, the evaluation summary).
    """
    existing = [name for name in DEMO_OUTPUTS if os.path.exists(os.path.join(output_dir, name))]
    if existing and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds demo outputs ({', '.join(existing)}); "
            "pass --overwrite or choose another --output_dir."
        )
    for name in existing:
        path = os.path.join(output_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    # Logical CPU devices can only be made before TensorFlow initialises: strategy first.
    strategy = distribute.create_strategy()
    paths = {name: os.path.join(output_dir, name) for name in DEMO_OUTPUTS}
    timings = {}

    started = time.perf_counter()
    write_photographs(paths["photos"], TRAINING_PHOTOGRAPHS)
    write_photographs(paths["held_out"], HELD_OUT_PHOTOGRAPHS)
    preprocess(
        paths["photos"],
        paths["dataset"],
        scale=scale,
        hr_size=dataset_hr_size,
        patches=patches_per_image,
        split_ratios=split_ratios,
        workers=beam_workers,
    )
    timings["Beam preprocessing"] = time.perf_counter() - started

    started = time.perf_counter()
    loop.train_loop(strategy=strategy, model_dir=paths["model"], data_dir=paths["dataset"])
    timings["training + exports"] = time.perf_counter() - started
    steps = gin.query_parameter("train_loop.total_steps")

    started = time.perf_counter()
    summary = evaluate_lib.evaluate(
        model=model_dir.ModelDir(paths["model"]).export_root,
        data=paths["held_out"],
        output_dir=paths["evaluation"],
    )
    timings["evaluation"] = time.perf_counter() - started
    report = write_report(output_dir, summary, timings, steps)
    logging.info("Wrote %s", report)
    return report, summary
