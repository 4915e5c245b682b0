"""The SavedModel: signatures, errors, loading without dlss_dist, BestExporter, load_generator."""

import base64
import json
import os
import subprocess
import sys
import textwrap

import gin
import numpy as np
import pytest
import tensorflow as tf
from skimage import data as skdata

from dlss_dist import checkpoints, export, serving
from dlss_dist import model_dir as model_dir_lib
from dlss_dist.models.generators import srresnet_generator
from dlss_dist.training import exporter as exporter_lib

SCALE = 2
MAX_PIXELS = 48 * 48


def tiny_generator(seed: int = 0):
    """A real dlss_dist generator (custom PixelShuffle/BicubicUpsample layers), random weights.

    The zero-initialised last conv would make it plain bicubic; random weights make the
    residual branch matter.
    """
    generator = srresnet_generator(SCALE, num_filters=8, num_blocks=1)
    rng = np.random.default_rng(seed)
    for variable in generator.weights:
        variable.assign(rng.normal(0, 0.05, variable.shape).astype(np.float32))
    return generator


def keras_reference(generator, images: np.ndarray) -> np.ndarray:
    """What the export should compute, written out in NumPy around the Keras call."""
    sr = generator(images.astype(np.float32) / 127.5 - 1, training=False).numpy()
    return np.round((np.clip(sr, -1, 1) + 1) * 127.5).astype(np.uint8)


@pytest.fixture(scope="module")
def generator():
    return tiny_generator()


@pytest.fixture(scope="module")
def saved_model(generator, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "1")
    export.export_generator(generator, path, scale=SCALE, max_input_pixels=MAX_PIXELS)
    return path


@pytest.fixture(scope="module")
def loaded(saved_model):
    return tf.saved_model.load(saved_model)


@pytest.fixture(scope="module")
def photo():
    return skdata.astronaut()[100:124, 180:212]  # 24x32 RGB


def test_upscale_signature_matches_keras(loaded, generator, photo):
    out = loaded.signatures["upscale"](images=tf.constant(photo[None]))["images"].numpy()
    assert out.dtype == np.uint8 and out.shape == (1, 48, 64, 3)
    # Same graph math; allow one grey level for float rounding at .5 boundaries.
    assert np.abs(out.astype(int) - keras_reference(generator, photo[None])).max() <= 1
    assert int(loaded.scale.numpy()) == SCALE
    assert int(loaded.max_input_pixels.numpy()) == MAX_PIXELS


def rest_predict(signature, request_body: str) -> str:
    """What TF Serving's REST predict does with a {"b64": ...} request and a *_bytes output."""
    request = json.loads(request_body)
    assert request["signature_name"] == "serving_default"
    inputs = [base64.b64decode(instance["b64"]) for instance in request["instances"]]
    outputs = signature(image_bytes=tf.constant(inputs))["image_bytes"].numpy()
    return json.dumps({"predictions": [{"b64": base64.b64encode(o).decode()} for o in outputs]})


def test_rest_b64_roundtrip_mixed_sizes_and_modes(loaded, generator, photo):
    grayscale = skdata.camera()[200:216, 200:220]  # 16x20, one channel
    jpeg = tf.io.encode_jpeg(photo[:20, :20], quality=95).numpy()
    images = [tf.io.encode_png(photo).numpy(), tf.io.encode_png(grayscale[..., None]).numpy(), jpeg]
    body = json.dumps(
        {
            "signature_name": "serving_default",
            "instances": [{"b64": base64.b64encode(b).decode()} for b in images],
        }
    )
    predictions = json.loads(rest_predict(loaded.signatures["serving_default"], body))
    decoded = [
        tf.io.decode_png(base64.b64decode(p["b64"])).numpy() for p in predictions["predictions"]
    ]
    assert [d.shape for d in decoded] == [(48, 64, 3), (32, 40, 3), (40, 40, 3)]
    # The PNG answer is the same picture the uint8 signature gives.
    assert np.abs(decoded[0].astype(int) - keras_reference(generator, photo[None])[0]).max() <= 1
    # Grayscale is served as RGB with three equal channels.
    gray_rgb = np.repeat(grayscale[..., None], 3, axis=-1)
    assert np.abs(decoded[1].astype(int) - keras_reference(generator, gray_rgb[None])[0]).max() <= 1


def test_oversize_input_gives_the_documented_error(loaded):
    too_big = np.zeros((1, 49, 48, 3), np.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"48x49 = 2352 pixels.*limit of 2304"):
        loaded.signatures["upscale"](images=tf.constant(too_big))
    png = tf.io.encode_png(too_big[0]).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\] is 48x49"):
        loaded.signatures["serving_default"](image_bytes=tf.constant([png]))


@pytest.mark.parametrize("garbage", [b"this is not an image", b"", b"\x00" * 3])
def test_garbage_bytes_give_the_documented_error(loaded, photo, garbage):
    good = tf.io.encode_png(photo).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is not an encoded"):
        loaded.signatures["serving_default"](image_bytes=tf.constant([good, garbage]))


def test_truncated_image_fails_in_the_decoder(loaded, photo):
    truncated = tf.io.encode_png(photo).numpy()[:40]
    with pytest.raises(tf.errors.InvalidArgumentError, match="PNG"):
        loaded.signatures["serving_default"](image_bytes=tf.constant([truncated]))


@pytest.mark.slow
def test_loads_in_a_fresh_process_without_dlss_dist_or_keras(
    saved_model, generator, photo, tmp_path
):
    np.save(tmp_path / "input.npy", photo[None])
    # The venv has dlss_dist installed in editable mode, which -I does not switch off, so the
    # child also marks dlss_dist (and keras and gin, to prove the graph needs neither) as
    # unimportable the standard way, with None in sys.modules.
    code = textwrap.dedent(
        f"""
        import sys
        for name in ("dlss_dist", "beam_jobs", "keras", "tf_keras", "gin"):
            sys.modules[name] = None
        try:
            import dlss_dist
        except ImportError:
            pass
        else:
            raise SystemExit("dlss_dist is importable in the child")
        import numpy as np
        import tensorflow as tf
        model = tf.saved_model.load({saved_model!r})
        images = np.load("input.npy")
        out = model.signatures["upscale"](images=tf.constant(images))["images"].numpy()
        np.save("output.npy", out)
        png = model.signatures["serving_default"](
            image_bytes=tf.constant([tf.io.encode_png(images[0]).numpy()]))["image_bytes"]
        print(tf.io.decode_png(png[0]).shape)
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(48, 64, 3)" in result.stdout
    out = np.load(tmp_path / "output.npy")
    assert np.abs(out.astype(int) - keras_reference(generator, photo[None])).max() <= 1


def test_export_rejects_a_wrong_scale(generator, tmp_path):
    with pytest.raises(ValueError, match="upscales by 2"):
        export.export_generator(generator, str(tmp_path / "x"), scale=4)


def test_best_exporter_keeps_the_best_versions(generator, tmp_path):
    root = str(tmp_path / "export")
    exporter = exporter_lib.BestExporter(
        export_root=root, scale=SCALE, keep=2, max_input_pixels=1024
    )
    assert exporter.maybe_export(generator, step=100, psnr=20.0) == os.path.join(root, "100")
    assert exporter.maybe_export(generator, step=200, psnr=22.0) is not None
    assert exporter.maybe_export(generator, step=300, psnr=19.0) is None  # worse than both
    assert exporter.maybe_export(generator, step=400, psnr=float("nan")) is None
    assert exporter.maybe_export(generator, step=500, psnr=21.0) is not None  # evicts 100
    assert sorted(os.listdir(root)) == ["200", "500", "exports.json"]  # no temporary folders
    with open(os.path.join(root, "exports.json")) as f:
        index = json.load(f)
    assert [(e["step"], e["psnr"]) for e in index["exports"]] == [(200, 22.0), (500, 21.0)]
    assert os.path.exists(os.path.join(root, "500", "saved_model.pb"))

    # A restarted run reads the index back and keeps ranking against it, also when the root
    # was moved since.
    moved = str(tmp_path / "moved")
    os.rename(root, moved)
    resumed = exporter_lib.BestExporter(
        export_root=moved, scale=SCALE, keep=2, max_input_pixels=1024
    )
    assert resumed.best_path == os.path.join(moved, "200")
    assert resumed.maybe_export(generator, step=600, psnr=20.5) is None
    assert serving.load_upscaler(moved).path == os.path.join(moved, "200")


def test_best_exporter_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        exporter_lib.BestExporter(export_root=str(tmp_path), scale=SCALE, keep=0)


def write_model_dir(model_dir, *, generator, ema_generator=None, step=7):
    """A training model_dir as the loop leaves it: operative config plus a checkpoint."""
    paths = model_dir_lib.ModelDir(str(model_dir))
    os.makedirs(paths.checkpoints)
    with open(paths.operative_config, "w") as f:
        f.write(
            "import dlss_dist.models\n"
            "build_generator.network = @srresnet_generator\n"
            f"srresnet_generator.scale = {SCALE}\n"
            "srresnet_generator.num_filters = 8\n"
            "srresnet_generator.num_blocks = 1\n"
        )
    checkpoint = checkpoints.make_checkpoint(
        step=tf.Variable(step, dtype=tf.int64), generator=generator, ema_generator=ema_generator
    )
    tf.train.CheckpointManager(checkpoint, paths.checkpoints, max_to_keep=1).save()


@pytest.mark.parametrize("use_ema", [True, False])
def test_load_generator_restores_ema_or_generator(tmp_path, use_ema):
    trained = tiny_generator(seed=1)
    model_dir = tmp_path / "model"
    if use_ema:
        write_model_dir(model_dir, generator=tiny_generator(seed=2), ema_generator=trained)
    else:
        write_model_dir(model_dir, generator=trained)
    try:
        restored, scale = checkpoints.load_generator(str(model_dir))
    finally:
        gin.clear_config()
    assert scale == SCALE
    x = np.random.default_rng(0).uniform(-1, 1, (1, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(restored(x).numpy(), trained(x).numpy(), atol=1e-6)
    latest = model_dir_lib.resolve_checkpoint(str(model_dir))
    assert model_dir_lib.checkpoint_step(latest) == 7


@pytest.mark.slow
def test_export_cli_writes_a_version_folder(tmp_path, photo, in_process):
    ema = tiny_generator(seed=3)
    model_dir = tmp_path / "model"
    write_model_dir(model_dir, generator=tiny_generator(seed=4), ema_generator=ema, step=42)
    result = in_process("export", f"--model={model_dir}", f"--export_dir={tmp_path / 'serving'}")
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = tf.saved_model.load(str(tmp_path / "serving" / "42"))
    out = loaded.signatures["upscale"](images=tf.constant(photo[None]))["images"].numpy()
    assert np.abs(out.astype(int) - keras_reference(ema, photo[None])).max() <= 1


def test_load_generator_errors_name_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="operative_config.gin"):
        checkpoints.load_generator(str(tmp_path))
