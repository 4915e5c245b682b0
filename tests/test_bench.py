"""No bench rot: every `bench/*.py` script runs end to end at a smoke size, in its own process,
and prints its table. Nothing about timing is asserted; a script that crashes, or whose
measurement quietly fails inside it, fails here.

Each case lists the flags that shrink the script's work and what its table must show.
`bench/anchors.py` needs the optional `anchors` extra (ncnn) and the anchors' model files
(`make anchors-weights`); it skips, saying which is missing.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import USER_CACHE_DIR, photo_crops, save_image
from training_helpers import REPO, train_env

from dlss_dist import imaging


def lr_hr_sr_folders(root) -> dict[str, str]:
    """HR photos (64x80), their x4 bicubic LR PNGs and a nearest x4 "SR" folder, by key."""
    folders = {name: root / name for name in ("hr", "lr", "sr")}
    for key, hr in zip(["a", "b"], photo_crops(2, 64, 80, seed=9), strict=True):
        save_image(folders["hr"] / f"{key}.png", hr)
        lr = imaging.degrade_bicubic(hr, 4)
        save_image(folders["lr"] / f"{key}.png", lr)
        save_image(folders["sr"] / f"{key}.png", imaging.upscale_nearest(lr, 4))
    return {name: str(path) for name, path in folders.items()}


def train_step_case(tmp_path):
    tiny = "--generator_filters=4 --generator_blocks=1 --discriminator_filters=4"
    tiny += " --discriminator_stages=1 --discriminator_dense=8"
    flags = f"--steps=1 --warmup_steps=1 --rounds=1 --batch_size=2 --hr_size=16 {tiny} --nojit"
    return flags.split() + [f"--output={tmp_path / 'train_step.json'}"]


def check_train_step(stdout, tmp_path):
    assert "| variant | ms/step (median)" in stdout
    rows = json.loads((tmp_path / "train_step.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["ours_memory", "ours_tfrecord", "keras_seed"]
    assert all(r["status"] == "ok" for r in rows), rows


def serve_case(tmp_path):
    flags = "--num_filters=4 --num_blocks=1 --input_size=8 --repeats=1 --batch_size=1"
    flags += " --batch_repeats=1 --memory_size=48 --memory_tiles=32 --memory_tile_overlap=4"
    return flags.split() + [f"--output={tmp_path / 'serve.json'}"]


def check_serve(stdout, tmp_path):
    assert "| variant | latency median (min), ms |" in stdout
    assert "| onnxruntime |" in stdout and "| litert_tflite_float32 |" in stdout
    assert "| tiled 32 |" in stdout and "failed" not in stdout


def preprocess_case(tmp_path):
    return [
        "--sizes=3,6",
        "--rounds=1",
        "--contenders=beam_1",
        "--breakdown",
        "--breakdown_size=3",
        f"--output_json={tmp_path / 'preprocess.json'}",
    ]


def check_preprocess(stdout, tmp_path):
    assert "per image ms" in stdout
    report = json.loads((tmp_path / "preprocess.json").read_text())
    assert report["sizes"] == [3, 6]
    for kind in ("wall", "cpu"):
        assert set(report[kind]["best_seconds"]["beam_1"]) == {"3", "6"}
        assert set(report[kind]["fit"]["beam_1"]) == {"fixed_seconds", "per_image_ms"}
    phases = report["breakdown"]["beam_1"]["phases"]
    assert "run lock" in phases and "exit" in phases
    assert all(seconds >= 0 for seconds in phases.values()), phases


def serving_memory_sizes_case(tmp_path):
    return [
        "--part=sizes",
        "--sizes=0.002",
        "--untiled_sizes=0.002",
        "--formats=onnx",
        f"--out={tmp_path / 'memory.json'}",
    ]


def check_serving_memory_sizes(stdout, tmp_path):
    assert "| format | input (MP) | mode | tile | peak RSS (MB) |" in stdout
    rows = json.loads((tmp_path / "memory.json").read_text())["rows"]
    assert [(r["format"], r["mode"]) for r in rows] == [("onnx", "auto"), ("onnx", "untiled")]
    assert all(r["peak_mb"] >= r["loaded_mb"] > 0 and r["output"] == "176x176" for r in rows)


def serving_memory_speed_case(tmp_path):
    return ["--part=speed", "--sizes=0.002", "--rounds=2", "--formats=onnx"] + [
        f"--out={tmp_path / 'speed.json'}"
    ]


def check_serving_memory_speed(stdout, tmp_path):
    (row,) = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert json.loads(stdout.strip().splitlines()[-1]) == row  # each row printed as it comes
    assert row["format"] == "onnx" and len(row["auto_s"]) == len(row["untiled_s"]) == 2
    assert row["max_abs_difference"] == 0  # 44x44 fits one tile: the same call


def serving_memory_bombs_case(tmp_path):
    return ["--part=bombs", "--bomb_side=64", "--bomb_frames=3", f"--out={tmp_path / 'bombs.json'}"]


def check_serving_memory_bombs(stdout, tmp_path):
    assert "| input | file bytes | peak growth (MB) | seconds | outcome |" in stdout
    results = json.loads((tmp_path / "bombs.json").read_text())
    assert results["png_20000x20000"]["outcome"].startswith("refused")
    assert results["gif_64x64_3_frames"]["outcome"] == "upscaled"


def colour_shift_case(tmp_path):
    folders = lr_hr_sr_folders(tmp_path)
    return [
        f"--hr_dir={folders['hr']}",
        f"--lr_dir={folders['lr']}",
        f"--sr=nearest={folders['sr']}",
    ]


def check_colour_shift(stdout, tmp_path):
    assert "| method | signed mean R, G, B |" in stdout
    assert "| bicubic |" in stdout and "| nearest |" in stdout


def compare_grid_case(tmp_path):
    folders = lr_hr_sr_folders(tmp_path)
    return [
        f"--hr_dir={folders['hr']}",
        f"--lr_dir={folders['lr']}",
        f"--sr=nearest={folders['sr']}",
        "--crop=32",
        "--num_crops=2",
        "--font_size=10",
        f"--output={tmp_path / 'grid.png'}",
    ]


def check_compare_grid(stdout, tmp_path):
    assert f"Wrote {tmp_path / 'grid.png'}" in stdout
    assert imaging.read_image(str(tmp_path / "grid.png")).ndim == 3


def anchors_case(tmp_path):
    pytest.importorskip("ncnn", reason="the anchors extra (ncnn) is not installed")
    anchors_dir = os.path.join(USER_CACHE_DIR, "anchors")
    if not glob.glob(os.path.join(anchors_dir, "*.param")):
        pytest.skip(f"the anchors' model files are not in {anchors_dir} (make anchors-weights)")
    folders = lr_hr_sr_folders(tmp_path)
    return [
        f"--lr_dir={folders['lr']}",
        f"--output_dir={tmp_path / 'anchors'}",
        "--tile=16",
        "--tile_pad=4",
    ]


def check_anchors(stdout, tmp_path):
    timings = json.loads((tmp_path / "anchors" / "timings.json").read_text())
    assert set(timings["anchors"]) == {"realesrgan_x4plus", "span_x4"}
    for name in timings["anchors"]:
        assert f"{name}: 2 images" in stdout
        assert imaging.read_image(str(tmp_path / "anchors" / name / "a.png")).shape == (64, 80, 3)


# script (and part) -> (flags for a smoke-size run, checks of its output)
CASES = {
    "train_step.py": (train_step_case, check_train_step),
    "serve.py": (serve_case, check_serve),
    "preprocess.py": (preprocess_case, check_preprocess),
    "serving_memory.py --part=sizes": (serving_memory_sizes_case, check_serving_memory_sizes),
    "serving_memory.py --part=speed": (serving_memory_speed_case, check_serving_memory_speed),
    "serving_memory.py --part=bombs": (serving_memory_bombs_case, check_serving_memory_bombs),
    "colour_shift.py": (colour_shift_case, check_colour_shift),
    "compare_grid.py": (compare_grid_case, check_compare_grid),
    "anchors.py": (anchors_case, check_anchors),
}


def test_every_bench_script_has_a_smoke_run():
    scripts = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, "bench", "*.py"))}
    assert scripts == {case.split()[0] for case in CASES}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bench_script_runs_at_a_smoke_size(case, tmp_path):
    script = case.split()[0]
    make_flags, check = CASES[case]
    flags = make_flags(tmp_path)
    env = train_env()
    if (
        script == "anchors.py"
    ):  # the anchors' model files, read where make anchors-weights puts them
        env["DLSS_CACHE_DIR"] = USER_CACHE_DIR
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", script), *flags],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check(result.stdout, tmp_path)
