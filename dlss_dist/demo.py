"""The end-to-end demo: photographs -> Beam -> 2-replica training -> export -> evaluation.

Twelve bundled photographs are cut into patches for training and validation; three others
are held out entirely and evaluated whole, as a plain folder of HR images.

Everything runs locally on scikit-image's bundled photographs (nothing is downloaded). The
result is `<output_dir>/report.md` with the metrics table and a comparison picture.
"""

from __future__ import annotations

import json
import math
import os
import time

import gin
import numpy as np
from absl import logging
from PIL import Image

from dlss_dist import distribute, files, model_dir
from dlss_dist.evaluation import evaluate as evaluate_lib
from dlss_dist.training import loop

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
# What a run wrote, so that --overwrite removes exactly that and nothing of the user's.
MANIFEST_FILE = ".dlss-demo.json"
# The previous run's outputs wait here until the new run has succeeded.
PREVIOUS_DIR = ".dlss-demo-previous"


class DemoOutputs:
    """The demo's entries in `output_dir`: which exist, which the demo wrote, replacing them.

    ``<output_dir>/.dlss-demo.json`` records ``{"tool": "dlss-demo", "complete": bool,
    "entries": [...], "files": [...]}``: the entries (of `DEMO_OUTPUTS`) a run created,
    written before it creates them, and at the end every file under them. With overwrite,
    `prepare` refuses (before touching anything) when an existing entry was not created by
    the demo, or when a finished run's entry holds a file it did not write (a user's photo
    dropped into ``photos/``); otherwise the old entries move to ``.dlss-demo-previous/``,
    are deleted by `commit` after a successful run, and are put back by `rollback` (after
    removing the failed run's partial outputs), so a run that stops loses nothing.
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.manifest_path = os.path.join(output_dir, MANIFEST_FILE)
        self.previous = os.path.join(output_dir, PREVIOUS_DIR)
        self._aside = files.SetAside(output_dir, self.previous)

    def _path(self, name: str) -> str:
        return os.path.join(self.output_dir, name)

    def _read_manifest(self) -> dict | None:
        if not os.path.exists(self.manifest_path):
            return None
        try:
            with open(self.manifest_path) as f:
                manifest = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"{self.manifest_path} is unreadable ({error}): remove it") from error
        return manifest if manifest.get("tool") == "dlss-demo" else None

    def _files_under(self, names) -> list[str]:
        files = []
        for name in names:
            path = self._path(name)
            if os.path.isdir(path) and not os.path.islink(path):
                for root, _, filenames in os.walk(path):
                    files += [
                        os.path.relpath(os.path.join(root, f), self.output_dir) for f in filenames
                    ]
            elif os.path.lexists(path):
                files.append(name)
        return sorted(files)

    def _write_manifest(self, *, complete: bool) -> None:
        manifest = {"tool": "dlss-demo", "complete": complete, "entries": list(DEMO_OUTPUTS)}
        if complete:
            manifest["files"] = self._files_under(DEMO_OUTPUTS)
        files.atomic_write_json(self.manifest_path, manifest)

    def _is_unrecorded_demo_run(self) -> bool:
        """A complete run of a dlss-demo that kept no record (written before records
        existed): the demo's report heading, and photo folders holding exactly its photos."""
        try:
            with open(self._path("report.md")) as f:
                if not f.readline().startswith("# dlss_dist demo report"):
                    return False
        except OSError:
            return False
        for folder, names in (("photos", TRAINING_PHOTOGRAPHS), ("held_out", HELD_OUT_PHOTOGRAPHS)):
            path = self._path(folder)
            if not os.path.isdir(path) or set(os.listdir(path)) != {f"{n}.png" for n in names}:
                return False
        return True

    def prepare(self, *, overwrite: bool) -> None:
        """Checks the folder and moves a previous demo run aside; raises before any change."""
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise ValueError(f"--output_dir={self.output_dir} is a file, not a folder")
        if os.path.lexists(self.previous):
            raise ValueError(
                f"{self.previous} holds the outputs of a demo run that was killed while "
                f"replacing them: move its contents back into {self.output_dir} (or delete "
                "it) and run again"
            )
        existing = [name for name in DEMO_OUTPUTS if os.path.lexists(self._path(name))]
        if existing and not overwrite:
            raise FileExistsError(
                f"{self.output_dir} already holds demo outputs ({', '.join(existing)}); "
                "pass --overwrite or choose another --output_dir."
            )
        manifest = self._read_manifest() if existing else None
        recorded = set(manifest.get("entries", [])) if manifest else set()
        if existing and manifest is None and self._is_unrecorded_demo_run():
            recorded = set(DEMO_OUTPUTS)
        foreign = [name for name in existing if name not in recorded]
        if foreign:
            raise ValueError(
                f"--overwrite refused: {', '.join(foreign)} in {self.output_dir} were not "
                f"written by dlss-demo (no record in {MANIFEST_FILE}); move them away or "
                "choose another --output_dir"
            )
        if manifest and manifest.get("complete"):
            written = set(manifest.get("files", []))
            extra = [f for f in self._files_under(existing) if f not in written]
            if extra:
                shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
                raise ValueError(
                    f"--overwrite refused: {len(extra)} file(s) in the demo's folders were "
                    f"not written by dlss-demo ({shown}); move them away first"
                )
        if existing:
            self._aside.move(existing)
        os.makedirs(self.output_dir, exist_ok=True)
        self._write_manifest(complete=False)

    def commit(self) -> None:
        """The run succeeded: record its files and delete the previous run's outputs."""
        self._write_manifest(complete=True)
        self._aside.discard()

    def rollback(self) -> None:
        """The run failed: remove its partial outputs and put the previous run's back."""
        restored = bool(self._aside.moved)
        for name in DEMO_OUTPUTS:
            files.remove_tree(self._path(name))
        self._aside.restore()
        if restored:
            self._write_manifest(complete=True)
        elif os.path.exists(self.manifest_path):
            os.remove(self.manifest_path)


def check_demo_settings(
    *, scale, dataset_hr_size, patches_per_image, split_ratios, beam_workers
) -> None:
    """Raises ValueError naming the `run_demo.*` binding of the first bad setting."""
    for name, value in (
        ("scale", scale),
        ("dataset_hr_size", dataset_hr_size),
        ("patches_per_image", patches_per_image),
        ("beam_workers", beam_workers),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"run_demo.{name} must be a positive integer, got {value!r}")
    if dataset_hr_size % scale:
        raise ValueError(
            f"run_demo.dataset_hr_size = {dataset_hr_size} is not divisible by "
            f"run_demo.scale = {scale}"
        )
    ratios = list(split_ratios) if isinstance(split_ratios, list | tuple) else None
    if (
        ratios is None
        or len(ratios) != 3
        or not all(
            isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r) and r >= 0
            for r in ratios
        )
        or ratios[0] <= 0
    ):
        raise ValueError(
            "run_demo.split_ratios must be three finite, non-negative numbers "
            f"(train, validation, test) with train > 0, got {split_ratios!r}"
        )


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
    """Runs the Beam job (DirectRunner, multi_processing) on the photographs; returns the
    dataset's manifest (``manifest["splits"][split]["examples"]``)."""
    from beam_jobs.images_to_tfrecords.job import JobOptions, run_job

    return run_job(
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


# The demo's story, one header per stage (`stage_header`); the CLI prints the last one.
STAGES = ("Photos", "Preprocessing", "Training", "Export", "Evaluation", "Report")

# The explained table's rows: method -> what it is.
METHOD_NOTES = {
    "model": "the network trained above",
    "bicubic": "smooth interpolation, the classic upscaler: the baseline to beat",
    "nearest": "each pixel repeated: the floor",
}


def stage_header(number: int) -> str:
    """``== 3/6 Training ==``: the header of stage `number` (1-based) of `STAGES`."""
    return f"== {number}/{len(STAGES)} {STAGES[number - 1]} =="


def _tell_stage(number: int, *sentences: str) -> None:
    logging.info(stage_header(number))
    for sentence in sentences:
        logging.info(sentence)


def verdict(summary: dict) -> str:
    """What the table says, in one sentence: the model's PSNR against bicubic's."""
    model = summary["metrics"]["model"]["psnr_rgb"]
    bicubic = summary["metrics"]["bicubic"]["psnr_rgb"]
    if model is None:  # identical images: infinite PSNR
        return "The model's output equals the photographs exactly."
    if bicubic is None:
        return "Bicubic restores these photographs exactly: there is nothing to gain."
    gain = model - bicubic
    more = "more steps (train_loop.total_steps) would widen the gap"
    if gain >= 0.3:
        return (
            f"The model beats bicubic by {gain:.2f} dB: it restores detail that interpolation "
            "cannot."
        )
    if gain > 0.005:
        return (
            f"The model is {gain:.2f} dB above bicubic: it has learned a little beyond "
            f"interpolation in this short run; {more}."
        )
    if gain > -0.005:
        return (
            "The model scores as bicubic: the network starts as bicubic interpolation and "
            "learns a correction on top, which this run was too short to find; more steps "
            "(train_loop.total_steps) give it the time."
        )
    return (
        f"The model is {-gain:.2f} dB below bicubic: it has not yet learned to beat "
        "interpolation; more steps (train_loop.total_steps) should close the gap."
    )


def explained_table(summary: dict, *, picture: str = "the comparison picture in the report") -> str:
    """The evaluation as ONE table a newcomer can read: what each row is, what PSNR and SSIM
    measure, and what the numbers say (`verdict`). Markdown, for the console and report.md;
    `picture` names where the comparison picture is."""
    lines = [
        f"How closely each method restores the {summary['num_images']} held-out photographs "
        f"from copies {summary['scale']}x smaller (higher is better in both columns):",
        "",
        "| method | what it is | PSNR (dB) | SSIM |",
        "|---|---|---:|---:|",
    ]
    for method in summary.get("methods", list(METHOD_NOTES)):
        values = summary["metrics"][method]
        psnr, ssim = values["psnr_rgb"], values["ssim_rgb"]
        note = METHOD_NOTES.get(method, "a compared method")
        lines.append(
            f"| {method} | {note} | {'inf' if psnr is None else f'{psnr:.2f}'} | {ssim:.3f} |"
        )
    lines += [
        "",
        "PSNR (peak signal-to-noise ratio) compares every pixel with the original: "
        "10 log10(255^2 / mean squared error), so +1 dB is about 21% less squared error. "
        "SSIM (structural similarity) compares local brightness, contrast and structure, "
        "as the eye does: 1 is identical.",
        verdict(summary),
        f"Both reward faithfulness, not sharpness: look at {picture} too.",
    ]
    return "\n".join(lines)


def write_report(output_dir: str, summary: dict, timings: dict[str, float], steps: int) -> str:
    """Writes report.md (the explained table, every metric, picture, timings) and returns
    its path."""
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
        explained_table(summary, picture="the comparison picture below"),
        "",
        "Every metric (RGB, and Y: the luma channel, as super-resolution papers report):",
        "",
        evaluate_lib.format_table(summary),
        "",
    ]
    if picture:
        lines += [f"![LR (nearest) | bicubic | SR | HR]({picture})", ""]
    lines += ["| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in timings.items()]
    path = os.path.join(output_dir, "report.md")
    files.atomic_write(path, "\n".join(lines) + "\n")
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
    check_demo_settings(
        scale=scale,
        dataset_hr_size=dataset_hr_size,
        patches_per_image=patches_per_image,
        split_ratios=split_ratios,
        beam_workers=beam_workers,
    )
    outputs = DemoOutputs(output_dir)
    outputs.prepare(overwrite=overwrite)
    try:
        report, summary = _run_stages(
            output_dir,
            scale=scale,
            dataset_hr_size=dataset_hr_size,
            patches_per_image=patches_per_image,
            split_ratios=split_ratios,
            beam_workers=beam_workers,
        )
    except BaseException:
        logging.error("The demo stopped: removing its partial outputs, restoring any previous run")
        outputs.rollback()
        raise
    outputs.commit()
    return report, summary


def _training_plan() -> str:
    """ "800 steps on pixel loss alone, then 200 as a GAN", as configured in gin (what was
    trained is read back from the model directory afterwards)."""
    try:
        total = gin.query_parameter("train_loop.total_steps")
    except ValueError:
        total = None
    try:
        warmup = gin.query_parameter("train_loop.warmup_steps")
    except ValueError:
        warmup = 0  # train_loop's default
    if not (isinstance(total, int) and isinstance(warmup, int)):
        return "first on pixel loss alone, then as a GAN"
    warmup = min(warmup, total)
    return f"{warmup} steps on pixel loss alone, then {total - warmup} as a GAN"


def _run_stages(
    output_dir, *, scale, dataset_hr_size, patches_per_image, split_ratios, beam_workers
):
    # Logical CPU devices can only be made before TensorFlow initialises: strategy first.
    strategy = distribute.create_strategy()
    paths = {name: os.path.join(output_dir, name) for name in DEMO_OUTPUTS}
    timings = {}

    started = time.perf_counter()
    write_photographs(paths["photos"], TRAINING_PHOTOGRAPHS)
    write_photographs(paths["held_out"], HELD_OUT_PHOTOGRAPHS)
    _tell_stage(
        1,
        f"{len(TRAINING_PHOTOGRAPHS) + len(HELD_OUT_PHOTOGRAPHS)} photographs bundled with "
        "scikit-image (nothing is downloaded): "
        f"{len(TRAINING_PHOTOGRAPHS)} to learn from ({', '.join(TRAINING_PHOTOGRAPHS)}) in "
        f"{paths['photos']}, and {len(HELD_OUT_PHOTOGRAPHS)} held out, never seen in training, "
        f"to judge the result ({', '.join(HELD_OUT_PHOTOGRAPHS)}) in {paths['held_out']}.",
    )
    lr_size = dataset_hr_size // scale
    _tell_stage(
        2,
        f"Apache Beam ({beam_workers} worker processes) cuts {patches_per_image} random "
        f"{dataset_hr_size}x{dataset_hr_size} px patches from each photograph and shrinks "
        f"each {scale}x ({lr_size}x{lr_size} px, bicubic): pairs of a low-resolution input "
        "and its original for the network to learn from. Each photograph goes whole to "
        "training or to validation.",
    )
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

    _tell_stage(
        3,
        f"The generator network learns to upscale {scale}x on "
        f"{strategy.num_replicas_in_sync} replicas in sync (each step splits a batch between "
        f"them): {_training_plan()}, where a second network, the discriminator, pushes it "
        "towards realistic texture. At each validation it is scored on the validation "
        "patches, and the best steps are exported.",
    )
    started = time.perf_counter()
    loop.train_loop(strategy=strategy, model_dir=paths["model"], data_dir=paths["dataset"])
    timings["training + exports"] = time.perf_counter() - started
    trained = model_dir.ModelDir(paths["model"])
    steps = model_dir.checkpoint_step(trained.latest_checkpoint())  # what was trained, as a value
    exports = model_dir.read_exports(trained.export_root)
    logging.info("Trained %d steps in %.0f s.", steps, timings["training + exports"])

    best = exports[0] if exports else None
    _tell_stage(
        4,
        "Kept exports (SavedModels that TF Serving and dlss-upscale run; dlss-export "
        "converts them to ONNX and TFLite with the `export` extra): "
        + (
            ", ".join(f"step {e['step']} ({e['psnr']:.2f} dB)" for e in exports)
            + f" in {trained.export_root}."
            if exports
            else "none."
        ),
    )
    if best:
        logging.info(
            "The best, step %d, goes on to evaluation. (Its %.2f dB is measured on the "
            "validation patches, small crops of the validation photographs: a progress "
            "check, not comparable with the table below.)",
            best["step"],
            best["psnr"],
        )

    _tell_stage(
        5,
        f"Each held-out photograph is shrunk {scale}x (bicubic) and brought back to full size "
        "by the model, by bicubic and by nearest-neighbour interpolation; each result is "
        "compared with the original.",
    )
    started = time.perf_counter()
    summary = evaluate_lib.evaluate(
        model=trained.export_root,
        data=paths["held_out"],
        output_dir=paths["evaluation"],
    )
    timings["evaluation"] = time.perf_counter() - started
    report = write_report(output_dir, summary, timings, steps)
    return report, summary
