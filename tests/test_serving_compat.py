"""Will TF Serving load our exports? k8s/ pins the TF Serving release of the TensorFlow
before the one we train with; its runtime must accept our SavedModels.

The check runs the export's signatures under that TensorFlow, installed in its own
environment by `make serving-env` (which `make test` runs first), through both loaders a
server can use, and compares every output with the training release's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_export import SCALE, tiny_generator
from training_helpers import REPO

from dlss_dist import export

TOOL = Path(__file__).parent / "tools" / "run_export_signatures.py"
SERVING_PYTHON = Path(REPO) / ".venv-serving" / "bin" / "python"


def _pinned_serving_release() -> str:
    """The TF Serving image tag of k8s/base/serving.yaml, e.g. '2.20.0'."""
    text = (Path(REPO) / "k8s" / "base" / "serving.yaml").read_text()
    (tag,) = set(re.findall(r"tensorflow/serving:([0-9.]+)", text))
    return tag


@pytest.mark.slow
def test_the_pinned_tf_serving_release_runs_our_export(tmp_path):
    if not SERVING_PYTHON.exists():
        message = f"{SERVING_PYTHON} is missing: run `make serving-env` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    served_tf = subprocess.check_output(
        [str(SERVING_PYTHON), "-c", "import tensorflow as tf; print(tf.__version__)"],
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    ).strip()
    pinned = _pinned_serving_release()
    assert served_tf.split(".")[:2] == pinned.split(".")[:2], (served_tf, pinned)
    assert served_tf.split(".")[:2] != tf.__version__.split(".")[:2], "not an older runtime"

    export_dir = str(tmp_path / "export" / "1")
    export.export_generator(tiny_generator(), export_dir, scale=SCALE, max_input_pixels=64 * 64)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 20, 28, 3), dtype=np.uint8)
    png = []
    for image in images:
        path = tmp_path / f"{len(png)}.png"
        Image.fromarray(image).save(path)
        png.append(path.read_bytes())
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, images=images, png=np.array(png, dtype=object))

    expected = str(tmp_path / "expected.npz")
    got = str(tmp_path / "got.npz")
    for python, output in (("python", expected), (str(SERVING_PYTHON), got)):
        if python == "python":
            python = sys.executable
        result = subprocess.run(
            [python, str(TOOL), export_dir, str(inputs), output],
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=""),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
    expected, got = np.load(expected), np.load(got)
    assert str(got["tf_version"]) == served_tf
    for key in ("upscale", "serving_default", "session_upscale", "session_serving_default"):
        assert got[key].shape == (2, 20 * SCALE, 28 * SCALE, 3), key
        difference = np.abs(got[key].astype(int) - expected[key].astype(int)).max()
        assert difference <= 1, (key, difference)
        print(f"{key}: TF {served_tf} vs {tf.__version__}: max difference {difference}")
