"""Every CLI: --help lists its own flags; user errors are one line and an exit code; upscale and
eval refuse outputs that would overwrite inputs or are files; non-UTF-8 names are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from training_helpers import REPO, run_cli, train_command, train_env

from dlss_dist import export
from dlss_dist.models.generators import srresnet_generator

# Most tests run the tool's console script in this process (`in_process`: no TensorFlow
# start-up to pay); those that train or need a process of their own run it as a subprocess.
# The module stays in the slow lane (its model fixture and the subprocesses).
pytestmark = pytest.mark.slow

# tool -> (module, its own flags, a default --help must show)
TOOLS = {
    "dlss-train": ("train", ["gin_file", "gin_param", "model_dir", "data"], None),
    "dlss-export": (
        "export",
        ["model", "checkpoint", "export_dir", "export_version", "max_input_pixels", "format"],
        "(default: 'savedmodel')",
    ),
    "dlss-eval": (
        "evaluate",
        ["model", "data", "split", "output_dir", "max_images", "max_grids", "tile"],
        "(default: 'test')",
    ),
    "dlss-upscale": (
        "upscale",
        ["model", "input", "output", "gif", "gif_fps", "tile", "tile_overlap", "interpolate"],
        "(default: '16')",
    ),
    "dlss-demo": ("demo", ["output_dir", "overwrite", "gin_file", "gin_param"], "demo.gin"),
    "dlss-verify": ("verify", ["data"], None),
    "dlss-photos": (
        "photos",
        ["output_dir", "cache_dir", "download", "target_short_side"],
        "(default: '768')",
    ),
    "dlss-weights": ("weights", ["only", "list", "force"], "lpips_vgg16, dists, niqe"),
}


def error_line(result: subprocess.CompletedProcess, tool: str) -> str:
    """The one stderr line a user error must produce (and no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{tool}: error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("tool", list(TOOLS))
def test_help_lists_the_tools_own_flags(tool, in_process):
    module, own_flags, default = TOOLS[tool]
    result = in_process(module, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in own_flags + ["debug"]:
        assert f"--{flag}:" in result.stdout or f"--[no]{flag}:" in result.stdout, flag
    if default:
        assert default in result.stdout
    assert "--helpfull" in result.stdout
    assert "logtostderr" not in result.stdout  # absl's own flags stay in --helpfull
    full = in_process(module, "--helpfull")
    assert full.returncode == 0
    assert "logtostderr" in full.stdout and f"--{own_flags[0]}" in full.stdout


def test_every_tool_imports_into_one_process_and_keeps_its_flags():
    """Shared names (--model, --overwrite, --data, ...) are defined once: a process importing
    every tool (a notebook, this suite) gets no DuplicateFlagError, and each tool still owns
    the flags its --help lists."""
    import importlib

    from absl import flags

    modules = {
        tool: importlib.import_module(f"dlss_dist.cli.{module}")
        for tool, (module, _, _) in TOOLS.items()
        if tool != "dlss-preprocess"
    }
    for tool, module in modules.items():
        key_flags = {flag.name for flag in flags.FLAGS.get_key_flags_for_module(module.__name__)}
        assert set(TOOLS[tool][1]) <= key_flags, tool


@pytest.mark.parametrize(
    "args, exit_code, message",
    [
        (["--bogus=1"], 2, "Unknown command line flag 'bogus'"),
        (["--model_dir=m", "--gin_file=x.gin"], 2, "--data must have a value"),
        (["--model_dir=m", "--data=d", "--gin_file=tiny_test.gin", "stray"], 2, "stray"),
        (["--model_dir=m", "--data=d", "--gin_file=nope.gin"], 1, "gin file 'nope.gin'"),
        (
            ["--model_dir=m", "--data=d", "--gin_file=tiny_test.gin"]
            + ["--gin_param=train_loop.total_stepz = 3"],
            1,
            "doesn't have a parameter named 'total_stepz'",
        ),
        (
            ["--model_dir=m", "--data=d", "--gin_file=tiny_test.gin"]
            + ["--gin_param=train_loop.total_steps = 3", "--gin_param=train_loop.total_steps ="],
            1,
            "gin syntax error in --gin_param binding 2",
        ),
        (
            ["--model_dir=m", "--data=no_such_dataset", "--gin_file=tiny_test.gin"],
            1,
            "no_such_dataset is not a dlss dataset",
        ),
    ],
)
def test_train_user_errors_are_one_line(args, exit_code, message, in_process):
    result = in_process("train", *args)
    assert result.returncode == exit_code, result.stderr[-3000:]
    assert message in error_line(result, "dlss-train")


def test_debug_shows_the_traceback(in_process):
    args = ["--model_dir=m", "--data=d", "--gin_file=nope.gin"]
    for flag in ("--debug", "--verbosity=1"):
        result = in_process("train", *args, flag)
        assert result.returncode == 1
        assert "Traceback" in result.stderr and "dlss-train: error: gin file" in result.stderr


def test_model_dir_that_is_a_file(tmp_path, train_dataset):
    model_dir = tmp_path / "model"
    model_dir.write_text("not a folder")
    result = subprocess.run(
        train_command(str(model_dir), train_dataset),
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "not a directory" in error_line(result, "dlss-train") or "file" in result.stderr
    assert model_dir.read_text() == "not a folder"


def test_full_disk_and_bugs():
    # The shared mechanism on its own: OSError (here a full disk) is one line, exit 1; a bug
    # (TypeError) keeps its traceback.
    script = textwrap.dedent(
        """
        import sys
        from dlss_dist.cli import run_tool
        def main(argv):
            if sys.argv[0] == "full":
                raise OSError(28, "No space left on device", "/data/out/shard-00001")
            raise TypeError("a bug")
        run_tool("dlss-x", main, __name__)
        """
    )
    full = subprocess.run(
        [sys.executable, "-c", script.replace('sys.argv[0] == "full"', "True")],
        capture_output=True,
        text=True,
        env=train_env(),
        cwd=REPO,
    )
    assert full.returncode == 1
    assert error_line(full, "dlss-x") == (
        "dlss-x: error: [Errno 28] No space left on device: '/data/out/shard-00001'"
    )
    bug = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=train_env(), cwd=REPO
    )
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "TypeError: a bug" in bug.stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    generator = srresnet_generator(2, num_filters=8, num_blocks=1)
    path = str(tmp_path_factory.mktemp("export") / "1")
    export.export_generator(generator, path, scale=2, max_input_pixels=64 * 64)
    return path


def contents(folder: str) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}


def test_upscale_refuses_to_overwrite_its_inputs(model, photos, tmp_path, in_process):
    before = contents(photos)
    same_folder = in_process(
        "upscale", f"--model={model}", f"--input={photos}", f"--output={photos}"
    )
    assert same_folder.returncode == 1
    assert "is the input folder" in error_line(same_folder, "dlss-upscale")
    one_file = in_process(
        "upscale", f"--model={model}", f"--input={photos}/a.png", f"--output={photos}"
    )
    assert one_file.returncode == 1
    assert "would overwrite the input" in error_line(one_file, "dlss-upscale")
    gif = in_process(
        "upscale",
        f"--model={model}",
        f"--input={photos}/a.png",
        f"--output={tmp_path / 'out'}",
        f"--gif={photos}/a.png",
    )
    assert "--gif would overwrite the input" in error_line(gif, "dlss-upscale")
    assert contents(photos) == before


def test_upscale_output_that_is_a_file_and_bad_tiles(model, photos, tmp_path, in_process):
    output = tmp_path / "out.png"
    output.write_text("mine")
    result = in_process("upscale", f"--model={model}", f"--input={photos}", f"--output={output}")
    assert result.returncode == 1
    assert "is a file, not a folder" in error_line(result, "dlss-upscale")
    assert output.read_text() == "mine"
    for tiling, message in [
        (["--tile=1", "--tile_overlap=0"], "--tile=1 is under 16 pixels"),
        (["--tile=34"], "keeps a centre of 2 pixels"),
    ]:
        result = in_process(
            "upscale", f"--model={model}", f"--input={photos}", "--output=o", *tiling
        )
        assert result.returncode == 2
        assert message in error_line(result, "dlss-upscale")


def test_non_utf8_names_are_reported_not_fatal(model, photos, tmp_path, in_process):
    os.rename(os.path.join(photos, "b.png"), os.path.join(os.fsencode(photos), b"caf\xe9.png"))
    out = tmp_path / "out"
    result = in_process("upscale", f"--model={model}", f"--input={photos}", f"--output={out}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["a.png", "failures.json"]
    failures = json.loads((out / "failures.json").read_text())
    assert [(os.path.basename(f["input"]), f["reason"]) for f in failures] == [
        ("caf\\xe9.png", "non_utf8_name")
    ]
    assert "caf\\xe9.png" in result.stdout

    evaluation = tmp_path / "eval"
    result = in_process(
        "evaluate", f"--model={model}", f"--data={photos}", f"--output_dir={evaluation}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((evaluation / "metrics.json").read_text())
    assert summary["num_images"] == 1
    assert [s["reason"] for s in summary["skipped"]] == ["non_utf8_name"]


def test_eval_output_that_is_a_file_and_missing_data(model, photos, tmp_path, in_process):
    output = tmp_path / "metrics"
    output.write_text("mine")
    result = in_process(
        "evaluate", f"--model={model}", f"--data={photos}", f"--output_dir={output}"
    )
    assert result.returncode == 1
    assert "is a file, not a folder" in error_line(result, "dlss-eval")
    result = in_process(
        "evaluate", f"--model={model}", f"--data={tmp_path / 'nothing'}", "--output_dir=e"
    )
    assert result.returncode == 1
    assert "does not exist" in error_line(result, "dlss-eval")


def test_export_model_dir_and_export_dir_errors(tmp_path, in_process):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    for args, message in [
        ([f"--model={a_file}", "--export_dir=x"], f"{a_file} is a file but not a model"),
        ([f"--model={tmp_path / 'nothing'}", "--export_dir=x"], "is not a file, a folder"),
        ([f"--model={tmp_path}", f"--export_dir={a_file}"], f"--export_dir={a_file} is a"),
    ]:
        result = in_process("export", *args)
        assert result.returncode == 1
        assert message in error_line(result, "dlss-export")
    assert a_file.read_text() == "mine"


def test_photos_without_the_package_is_one_line(tmp_path):
    result = run_cli(
        "photos",
        f"--cache_dir={tmp_path / 'none'}",
        "--nodownload",
        f"--output_dir={tmp_path / 'o'}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "make photos" in error_line(result, "dlss-photos")
    assert not (tmp_path / "o").exists()


def test_training_stops_raised_outside_dlss_train_are_one_line():
    # Issue 19 case 16: dlss-demo printed a 50-line traceback for a non-finite loss. The
    # tool shell treats training's stop errors as user errors for every tool, also when
    # they come through a gin configurable (which appends "In call to configurable ...").
    script = textwrap.dedent(
        """
        import signal, sys
        import gin
        from dlss_dist.cli import run_tool
        from dlss_dist.training import controller

        @gin.configurable
        def run_demo():
            if sys.argv[1:] == ["nan"]:
                raise controller.NonFiniteLossError("loss is NaN at step 6; lower the rate")
            raise controller.Preempted(step=4, signum=signal.SIGINT)

        def main(argv):
            run_demo()
        run_tool("dlss-x", main, __name__)
        """
    )
    for argument, code, line in [
        ("nan", 1, "dlss-x: error: loss is NaN at step 6; lower the rate"),
        ("int", 130, "dlss-x: error: Stopped by SIGINT after saving a checkpoint at step 4."),
    ]:
        result = subprocess.run(
            [sys.executable, "-c", script.replace("sys.argv[1:]", f"[{argument!r}]")],
            capture_output=True,
            text=True,
            env=train_env(),
            cwd=REPO,
        )
        assert result.returncode == code, result.stderr[-2000:]
        assert error_line(result, "dlss-x") == line, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "In call to" not in result.stderr
