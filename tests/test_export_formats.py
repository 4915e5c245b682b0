"""ONNX and TFLite exports: parity with the SavedModel on photographs of several sizes.

Each format runs in its own runtime (ONNX Runtime, LiteRT) and is compared with the
SavedModel's ``upscale`` signature, the reference every other export is held to.
"""

import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf
from conftest import load_photo
from test_export import tiny_generator, write_model_dir

from dlss_dist import export, exporters
from dlss_dist.exporters import onnx_model
from dlss_dist.models.generators import srresnet_generator
from dlss_dist.serving.onnx_file import OnnxRuntime
from dlss_dist.serving.tflite_file import TFLiteRuntime

SCALE = 4


def random_generator(seed: int = 0, upsampler: str = "pixelshuffle"):
    """A real x4 generator (bicubic skip, pixel shuffle, PReLU) whose residual branch matters."""
    generator = srresnet_generator(SCALE, num_filters=8, num_blocks=2, upsampler=upsampler)
    rng = np.random.default_rng(seed)
    for variable in generator.weights:
        variable.assign(rng.normal(0, 0.05, variable.shape).astype(np.float32))
    return generator


# Photographs at several sizes, odd ones included, and one batch of two.
BATCHES = {
    "astronaut 24x32": [load_photo("astronaut")[100:124, 180:212]],
    "chelsea 37x51": [load_photo("chelsea")[60:97, 120:171]],
    "coffee 64x48": [load_photo("coffee")[200:264, 300:348]],
    "camera+rocket 40x40": [load_photo("camera")[:40, :40], load_photo("rocket")[100:140, :40]],
}


@pytest.fixture(scope="module")
def generator():
    return random_generator()


@pytest.fixture(scope="module")
def export_dir(generator, tmp_path_factory):
    """One version folder with every format, as `dlss-export --format=...` writes it."""
    path = str(tmp_path_factory.mktemp("formats") / "1")
    export.export_generator(generator, path, scale=SCALE)
    exporters.export_files(generator, path, scale=SCALE, formats=["onnx", "tflite"])
    return path


@pytest.fixture(scope="module")
def savedmodel(export_dir):
    return tf.saved_model.load(export_dir).signatures["upscale"]


def reference(savedmodel, images):
    return savedmodel(images=tf.constant(np.stack(images)))["images"].numpy()


def assert_parity(actual, expected, *, max_levels: int):
    assert actual.dtype == np.uint8 and actual.shape == expected.shape
    difference = np.abs(actual.astype(int) - expected)
    assert difference.max() <= max_levels, difference.max()
    # Rounding at .5 boundaries moves a pixel by one level; anything systematic would move many.
    assert np.mean(difference > 0) < 0.01


@pytest.mark.parametrize("name", list(BATCHES))
def test_onnx_runtime_matches_the_savedmodel(export_dir, savedmodel, name):
    runner = OnnxRuntime(os.path.join(export_dir, exporters.ONNX_FILE))
    assert runner.scale == SCALE and runner.layout == "nhwc"
    images = BATCHES[name]
    expected = reference(savedmodel, images)
    assert expected.shape[1:3] == (images[0].shape[0] * SCALE, images[0].shape[1] * SCALE)
    assert_parity(runner.upscale_batch(np.stack(images)), expected, max_levels=1)


def test_onnx_model_declares_its_convention(export_dir):
    import onnx

    model = onnx.load(os.path.join(export_dir, exporters.ONNX_FILE))
    onnx.checker.check_model(model)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    (inputs,), (outputs,) = model.graph.input, model.graph.output
    assert inputs.name == "images" and dims(inputs) == ["batch", "height", "width", 3]
    assert outputs.name == "upscaled"
    assert dims(outputs) == ["batch", "out_height", "out_width", 3]
    assert inputs.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert outputs.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    props = {p.key: p.value for p in model.metadata_props}
    assert props["dlss_dist.scale"] == str(SCALE)


@pytest.mark.slow
def test_onnx_nchw_layout_is_the_transposed_nhwc(generator, savedmodel, tmp_path):
    path = onnx_model.export_onnx(
        generator, str(tmp_path / "nchw.onnx"), scale=SCALE, layout="nchw"
    )
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    images = BATCHES["chelsea 37x51"]
    (output,) = session.run(None, {"images": np.stack(images).transpose(0, 3, 1, 2)})
    assert output.shape == (1, 3, 37 * SCALE, 51 * SCALE)
    assert_parity(output.transpose(0, 2, 3, 1), reference(savedmodel, images), max_levels=1)


@pytest.mark.parametrize(
    # float16 weights move results by rounding; one extra level is the documented tolerance.
    ("variant", "max_levels"),
    [("float32", 1), ("float16", 2)],
)
def test_tflite_matches_the_savedmodel_at_any_size(export_dir, savedmodel, variant, max_levels):
    runner = TFLiteRuntime(os.path.join(export_dir, exporters.TFLITE_FILES[variant]))
    assert runner.scale == SCALE
    details = runner._interpreter.get_input_details()[0]
    assert list(details["shape_signature"]) == [-1, -1, -1, 3]
    assert details["dtype"] == np.uint8
    # Sizes change from call to call: the dynamic-shape path, not one fixed shape.
    for name, images in BATCHES.items():
        actual = runner.upscale_batch(np.stack(images))
        assert_parity(actual, reference(savedmodel, images), max_levels=max_levels), name


@pytest.mark.slow
def test_the_direct_pixel_shuffle_tail_converts_exactly(tmp_path):
    """One x4 depth-to-space instead of two x2 ones: ONNX and TFLite keep its channel order."""
    generator = random_generator(upsampler="pixelshuffledirect")
    path = str(tmp_path / "1")
    export.export_generator(generator, path, scale=SCALE)
    exporters.export_files(generator, path, scale=SCALE, formats=["onnx", "tflite"])
    images = BATCHES["chelsea 37x51"]
    expected = reference(tf.saved_model.load(path).signatures["upscale"], images)
    onnx_runner = OnnxRuntime(os.path.join(path, exporters.ONNX_FILE))
    assert_parity(onnx_runner.upscale_batch(np.stack(images)), expected, max_levels=1)
    tflite_file = os.path.join(path, exporters.TFLITE_FILES["float32"])
    tflite_runner = TFLiteRuntime(tflite_file)
    assert_parity(tflite_runner.upscale_batch(np.stack(images)), expected, max_levels=1)


def test_tflite_float16_stores_the_weights_in_half_the_bytes(export_dir, generator):
    sizes = {
        v: os.path.getsize(os.path.join(export_dir, f)) for v, f in exporters.TFLITE_FILES.items()
    }
    # 2 bytes saved per float16 weight. Here 61% of the weights are, as some small tensors stay
    # float32; a full SRResNet x4 (64 filters, 16 blocks) goes from 6.1 MB to 3.1 MB.
    saved_weights = (sizes["float32"] - sizes["float16"]) / 2
    assert saved_weights > 0.5 * generator.count_params(), sizes


def test_bad_arguments_and_foreign_models_are_rejected(generator, tmp_path):
    import onnx
    from onnx import helper

    with pytest.raises(ValueError, match="unknown export format"):
        exporters.export_files(generator, str(tmp_path), scale=SCALE, formats=["pb"])
    with pytest.raises(ValueError, match="unknown TFLite variant"):
        exporters.export_files(
            generator, str(tmp_path), scale=SCALE, formats=["tflite"], tflite_variants=("int8",)
        )
    with pytest.raises(ValueError, match="layout"):
        onnx_model.export_onnx(generator, str(tmp_path / "m.onnx"), scale=SCALE, layout="chwn")
    # Any other ONNX model (here an identity) is refused by name, not run with a wrong scale.
    value = helper.make_tensor_value_info("images", onnx.TensorProto.UINT8, [1, 2, 2, 3])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["upscaled"])],
        "identity",
        [value],
        [helper.make_tensor_value_info("upscaled", onnx.TensorProto.UINT8, [1, 2, 2, 3])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "foreign.onnx"))
    with pytest.raises(ValueError, match="not a dlss_dist ONNX export"):
        OnnxRuntime(str(tmp_path / "foreign.onnx"))


@pytest.mark.slow
def test_export_cli_writes_the_requested_formats(tmp_path):
    # test_export's model dir: an x2 generator with 8 filters and 1 block.
    ema = tiny_generator(seed=5)
    model_dir = tmp_path / "model"
    write_model_dir(model_dir, generator=tiny_generator(seed=6), ema_generator=ema, step=9)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "dlss_dist.cli.export",
                f"--model_dir={model_dir}",
                f"--export_dir={tmp_path / 'serving'}",
                "--format=onnx,tflite",
                "--tflite_variants=float32",
            ],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        gin.clear_config()
    assert result.returncode == 0, result.stderr[-3000:]
    version = tmp_path / "serving" / "9"
    assert sorted(os.listdir(version)) == ["model.onnx", "model.tflite"]
    assert "(onnx)" in result.stdout and "(tflite_float32)" in result.stdout
    image = BATCHES["astronaut 24x32"][0][None]
    onnx_out = OnnxRuntime(str(version / "model.onnx")).upscale_batch(image)
    tflite_out = TFLiteRuntime(str(version / "model.tflite")).upscale_batch(image)
    # Both come from the EMA weights of the checkpoint.
    sr = ema(image.astype(np.float32) / 127.5 - 1, training=False).numpy()
    expected = np.round(np.clip((sr + 1) * 127.5, 0, 255)).astype(np.uint8)
    assert_parity(onnx_out, expected, max_levels=1)
    assert_parity(tflite_out, expected, max_levels=1)
