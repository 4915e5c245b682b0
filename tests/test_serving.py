"""One model interface: every format loads as the same Upscaler, tiles by a memory budget, and
the ONNX path runs without TensorFlow."""

import os
import subprocess
import sys
import textwrap

import gin
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from test_export import SCALE, tiny_generator, write_model_dir
from training_helpers import REPO

from dlss_dist import export, exporters, imaging, serving
from dlss_dist import model_dir as model_dir_lib
from dlss_dist.serving import memory, tiling

# Poisons `import tensorflow` (ImportError), then runs a CLI entry point as its console script
# would: proves the path imports no TensorFlow, wherever an import might hide.
NO_TENSORFLOW = textwrap.dedent(
    """
    import sys
    sys.modules["tensorflow"] = None
    from dlss_dist.cli.{module} import run
    sys.argv = ["dlss-{tool}"] + sys.argv[1:]
    run()
    """
)


def run_without_tensorflow(module: str, tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW.format(module=module, tool=tool), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(seed=3)


@pytest.fixture(scope="module")
def training_dir(generator, tmp_path_factory):
    """A model dir with a checkpoint, and an export root with every format in version 9."""
    root = tmp_path_factory.mktemp("serving")
    model_dir = root / "model"
    try:
        write_model_dir(model_dir, generator=generator, step=9)
    finally:
        gin.clear_config()
    version = os.path.join(model_dir_lib.ModelDir(str(model_dir)).export_root, "9")
    export.export_generator(generator, version, scale=SCALE, max_input_pixels=64 * 64)
    exporters.export_files(
        generator, version, scale=SCALE, formats=["onnx", "tflite"], tflite_variants=("float32",)
    )
    return str(model_dir)


@pytest.fixture(scope="module")
def photo():
    return skdata.astronaut()[100:140, 180:230]  # 40x50


def test_every_format_loads_as_the_same_upscaler(training_dir, photo):
    export_root = os.path.join(training_dir, "export")
    version = os.path.join(export_root, "9")
    models = {
        "export root": (export_root, "savedmodel"),
        "savedmodel": (version, "savedmodel"),
        "model dir with an export": (training_dir, "savedmodel"),
        "onnx": (os.path.join(version, "model.onnx"), "onnx"),
        "tflite": (os.path.join(version, "model.tflite"), "tflite"),
    }
    reference = serving.load_upscaler(version)(photo)
    assert reference.shape == (80, 100, 3)
    for name, (path, kind) in models.items():
        upscaler = serving.load_upscaler(path)
        assert upscaler.format == kind and upscaler.scale == SCALE, name
        assert np.abs(upscaler(photo).astype(int) - reference).max() <= 1, name
        # The SavedModel's pixel limit holds for every format through the Upscaler's tiles.
        assert np.abs(upscaler(photo, tile=32, tile_overlap=8).astype(int) - reference).max() <= 1


def test_a_model_dir_without_exports_runs_its_newest_checkpoint(generator, tmp_path, photo):
    model_dir = tmp_path / "model"
    try:
        write_model_dir(model_dir, generator=generator, step=4)
        upscaler = serving.load_upscaler(str(model_dir))
    finally:
        gin.clear_config()
    assert upscaler.format == "checkpoint" and upscaler.path.endswith("ckpt-1")
    sr = generator(photo[None].astype(np.float32) / 127.5 - 1, training=False).numpy()[0]
    reference = np.round(np.clip((sr + 1) * 127.5, 0, 255)).astype(np.uint8)
    assert np.abs(upscaler(photo).astype(int) - reference).max() <= 1


def test_unknown_names_and_non_models_are_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="starter models: .*realworld_x4"):
        serving.load_upscaler("realworld_x9")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is a file but not a model"):
        serving.load_upscaler(str(text))
    with pytest.raises(FileNotFoundError, match="neither a SavedModel"):
        serving.load_upscaler(str(tmp_path))


def test_starter_models_are_found_by_name():
    assert "realworld_x4" in serving.starter_models()
    source = serving.locate("realworld_x4")
    assert source.kind == "savedmodel"
    assert os.path.isfile(os.path.join(source.path, "model.onnx"))


class NearestRuntime:
    """A stand-in runtime: nearest-neighbour x2 that records each call's input shape."""

    path, format, scale, max_input_pixels = "nearest", "test", 2, None

    def __init__(self):
        self.calls = []

    def upscale_batch(self, images):
        self.calls.append(images.shape[1:3])
        return np.stack([imaging.upscale_nearest(image, 2) for image in images])


def test_tiles_follow_the_memory_budget():
    image = np.random.default_rng(0).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    in_use = memory.current_rss()
    sizes = {}
    for budget_mb in (100, 200, 1000):
        runtime = NearestRuntime()
        upscaler = serving.Upscaler(
            runtime, max_memory=in_use + budget_mb * memory.MIB, bytes_per_pixel=10_000
        )
        np.testing.assert_array_equal(upscaler(image), imaging.upscale_nearest(image, 2))
        sizes[budget_mb] = max(h * w for h, w in runtime.calls)
        # Output (900*700*4*3 = 7.2 MiB) and tile (<= budget) together stay within the budget.
        assert sizes[budget_mb] * 10_000 <= budget_mb * memory.MIB
    assert sizes[100] < sizes[200] <= sizes[1000] <= serving.upscaler.MAX_AUTO_TILE**2


def test_memory_taken_after_loading_does_not_shrink_the_tiles():
    """The budget is the model's: memory the process takes after loading (dlss-eval's LPIPS
    and DISTS networks grew it by 6 GB) used to leave no room, and every tile fell to the
    64-pixel minimum (4x the pixels computed for the same result)."""
    image = np.random.default_rng(0).integers(0, 256, (500, 500, 3), dtype=np.uint8)
    runtime = NearestRuntime()
    upscaler = serving.Upscaler(
        runtime, max_memory=memory.current_rss() + 200 * memory.MIB, bytes_per_pixel=10_000
    )
    expected = imaging.upscale_nearest(image, 2)
    np.testing.assert_array_equal(upscaler(image), expected)
    tiles_before = list(runtime.calls)
    assert max(tiles_before) > (100, 100)
    other_network = np.ones(400 * memory.MIB, np.uint8)  # touched: resident, past the budget
    assert memory.current_rss() > upscaler.max_memory
    runtime.calls.clear()
    np.testing.assert_array_equal(upscaler(image), expected)
    assert runtime.calls == tiles_before
    del other_network


def test_images_that_fit_one_tile_take_one_call():
    runtime = NearestRuntime()
    # The budget counts the whole process: leave room beyond what the test run already holds.
    budget = memory.current_rss() + 2 * memory.GIB
    upscaler = serving.Upscaler(runtime, max_memory=budget, bytes_per_pixel=10_000)
    upscaler(np.zeros((100, 120, 3), np.uint8))
    assert runtime.calls == [(100, 120)]
    # Just over one tile: two balanced tiles, not a full tile and a sliver of overlap.
    runtime.calls.clear()
    upscaler(np.zeros((100, 300, 3), np.uint8))
    assert runtime.calls == [(100, 182), (100, 182)]


def test_memory_sizes_parse_and_bad_ones_are_named():
    assert memory.parse_memory("2G") == 2 * 1024**3
    assert memory.parse_memory("1500M") == 1500 * 1024**2
    assert memory.parse_memory("800MiB") == 800 * 1024**2
    assert memory.parse_memory("1.5gb") == int(1.5 * 1024**3)
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ValueError, match="memory size"):
            memory.parse_memory(bad)
    assert tiling.balanced_tile(300, 256, 16) == 182
    assert tiling.balanced_tile(200, 256, 16) == 200


@pytest.mark.slow
def test_dlss_upscale_runs_an_onnx_export_without_tensorflow(training_dir, photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "photo.png")
    onnx_file = os.path.join(training_dir, "export", "9", "model.onnx")
    result = run_without_tensorflow(
        "upscale",
        "upscale",
        f"--model={onnx_file}",
        f"--input={tmp_path / 'photo.png'}",
        f"--output={tmp_path / 'out'}",
        "--max_memory=1G",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(tmp_path / "out" / "photo.png") as written:
        assert written.size == (100, 80)
    reference = serving.load_upscaler(onnx_file)(photo)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "photo.png")), reference)


@pytest.mark.slow
def test_the_starter_model_runs_by_name_without_tensorflow(photo, tmp_path):
    Image.fromarray(photo[:24, :32]).save(tmp_path / "small.png")
    result = run_without_tensorflow(
        "upscale",
        "upscale",
        "--model=realworld_x4",
        f"--input={tmp_path / 'small.png'}",
        f"--output={tmp_path / 'out'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(tmp_path / "out" / "small.png") as written:
        assert written.size == (128, 96)
    # What the SavedModel says, within one grey level: the shipped ONNX is the same network.
    savedmodel = serving.load_upscaler(serving.locate("realworld_x4").path)
    difference = np.abs(
        np.asarray(Image.open(tmp_path / "out" / "small.png")).astype(int)
        - savedmodel(photo[:24, :32])
    )
    assert difference.max() <= 1


def test_a_wrong_model_fails_in_one_line_before_tensorflow(tmp_path):
    for module, tool, extra in (
        ("upscale", "upscale", [f"--input={tmp_path}", f"--output={tmp_path / 'o'}"]),
        ("evaluate", "eval", [f"--data={tmp_path}", f"--output_dir={tmp_path / 'e'}"]),
    ):
        result = run_without_tensorflow(module, tool, "--model=no/such/model", *extra)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"dlss-{tool}: error: model "), lines
        assert "realworld_x4" in lines[0]


@pytest.mark.slow
def test_export_converts_a_starter_model_and_refuses_an_onnx_file(tmp_path, photo, in_process):
    result = in_process(
        "export", "--model=realworld_x4", f"--export_dir={tmp_path}", "--format=onnx"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    converted = serving.load_upscaler(str(tmp_path / "1" / "model.onnx"))
    starter = serving.load_upscaler(serving.locate("realworld_x4").path)
    small = photo[:24, :32]
    assert np.abs(converted(small).astype(int) - starter(small)).max() <= 1

    refused = in_process(
        "export", f"--model={tmp_path / '1' / 'model.onnx'}", f"--export_dir={tmp_path / 'x'}"
    )
    assert refused.returncode == 1
    assert "is an end point" in refused.stderr and "Traceback" not in refused.stderr
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.slow
def test_upscale_prints_no_tensorflow_banner(training_dir, photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "photo.png")
    # As a user runs it: no TF_CPP_MIN_LOG_LEVEL of our own in the environment.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlss_dist.cli.upscale",
            f"--model={training_dir}",
            f"--input={tmp_path / 'photo.png'}",
            f"--output={tmp_path / 'out'}",
        ],
        env={**env, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for banner in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard", "port.cc"):
        assert banner not in result.stderr, result.stderr


def test_a_savedmodel_in_a_model_dir_converts_with_the_runs_config(
    training_dir, generator, tmp_path
):
    from dlss_dist.serving import convert

    try:
        found = convert.source_generator(serving.locate(os.path.join(training_dir, "export")))
    finally:
        gin.clear_config()
    assert found.version == 9 and found.scale == SCALE and found.max_input_pixels == 64 * 64
    for rebuilt, original in zip(found.generator.weights, generator.weights, strict=True):
        np.testing.assert_array_equal(rebuilt.numpy(), original.numpy())
    # An ONNX file and a SavedModel without any operative config are refused, saying why.
    with pytest.raises(ValueError, match="end point"):
        convert.source_generator(serving.locate(os.path.join(training_dir, "export/9/model.onnx")))
    alone = export.export_generator(generator, str(tmp_path / "5"), scale=SCALE)
    with pytest.raises(ValueError, match="operative_config.gin of its training run"):
        convert.source_generator(serving.locate(alone))


@pytest.mark.slow
def test_a_savedmodel_without_tensorflow_says_what_to_install(generator, photo, tmp_path):
    alone = export.export_generator(generator, str(tmp_path / "7"), scale=SCALE)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    result = run_without_tensorflow(
        "upscale",
        "upscale",
        f"--model={alone}",
        f"--input={tmp_path / 'photo.png'}",
        f"--output={tmp_path / 'out'}",
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorFlow is not installed: pip install" in lines[0], lines


@pytest.mark.slow
def test_a_video_upscales_with_onnx_without_tensorflow(training_dir, tmp_path):
    """The inference-only install with the `video` extra: PyAV in, ONNX Runtime, PyAV out."""
    import av
    from test_video import make_video, moving_frames

    clip = make_video(tmp_path / "clip.mp4", moving_frames(3, 24, 32))
    onnx_file = os.path.join(training_dir, "export", "9", "model.onnx")
    result = run_without_tensorflow(
        "upscale",
        "upscale",
        f"--model={onnx_file}",
        f"--input={clip}",
        f"--output={tmp_path}/x2.mp4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with av.open(str(tmp_path / "x2.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (64, 48)
        assert sum(1 for _ in container.decode(stream)) == 3
