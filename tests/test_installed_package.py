"""The package as users install it: a wheel, not the checkout.

Every other test imports the editable install inside the repository, where files outside
the package (a top-level config folder, say) are reachable by accident. Here the wheel is
built, installed non-editable into a fresh environment whose only view of the development
environment is its third-party packages, and the whole flow runs from a working directory
outside the repository: preprocess -> train (a config by bare name) -> export -> upscale, and
the starter model by name. A second environment has every third-party package but TensorFlow
(the inference-only install, ``pip install 'dlss_dist[onnx]'``) and upscales with ONNX.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from training_helpers import REPO as REPO_DIR

pytestmark = pytest.mark.slow
REPO = Path(REPO_DIR)


def _run(command, *, cwd, env, timeout=600):
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def _dependencies(root: Path, tensorflow: bool) -> str:
    """Our site-packages, or a view of it without TensorFlow (links to everything else)."""
    site = sysconfig.get_path("purelib")
    if tensorflow:
        return site
    view = root / "site_without_tensorflow"
    view.mkdir()
    for name in os.listdir(site):
        if not name.startswith(("tensorflow", "tf_keras", "_distutils_hack", "__editable__")):
            (view / name).symlink_to(os.path.join(site, name))
    return str(view)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what it is made of."""
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # Built from a copy of what the wheel is made of: setuptools writes build/ and
    # *.egg-info/ beside the sources, which must not land in the checkout.
    source = root / "source"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        source.mkdir(exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for package in ("dlss_dist", "beam_jobs"):
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels = root / "wheels"
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(wheels), str(source)],
        cwd=root,
        env=env,
    )
    # pyproject.toml builds without setuptools' deprecation warnings (issue 18: four of them
    # on every install, from the old licence table).
    assert "Deprecat" not in build.stdout + build.stderr, build.stdout + build.stderr
    (wheel,) = wheels.glob("dlss_dist-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert any(name.endswith("/licenses/LICENSE") for name in archive.namelist())
    return wheel


def _install(root: Path, wheel: Path, *, tensorflow: bool) -> dict:
    """A venv holding only the installed wheel; third-party packages come from ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root, env=env)
    python = venv / "bin" / "python"
    # A plain path line adds our site-packages (TensorFlow, Beam, ...) without running its
    # .pth files, so the editable install's import hook for the checkout stays out.
    target_site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            text=True,
        ).strip()
    )
    (target_site / "dev_dependencies.pth").write_text(_dependencies(root, tensorflow) + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
        + ["--no-deps", "--no-index", str(wheel)],
        cwd=root,
        env=env,
    )
    work = root / "elsewhere"
    work.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return {"bin": venv / "bin", "python": python, "work": work, "env": env, "site": target_site}


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    return _install(tmp_path_factory.mktemp("installed"), wheel, tensorflow=True)


@pytest.fixture(scope="module")
def installed_without_tensorflow(wheel, tmp_path_factory) -> dict:
    return _install(tmp_path_factory.mktemp("inference_only"), wheel, tensorflow=False)


def test_the_checkout_is_not_importable(installed):
    where = _run(
        [str(installed["python"]), "-c", "import dlss_dist, beam_jobs; print(dlss_dist.__file__)"],
        cwd=installed["work"],
        env=installed["env"],
    ).stdout.strip()
    assert Path(where).is_relative_to(installed["site"]), where
    assert not Path(where).is_relative_to(REPO), where


def test_preprocess_train_export_upscale_from_the_wheel(installed, sample_photos):
    work, env, bin_dir = installed["work"], installed["env"], installed["bin"]
    _run(
        [str(bin_dir / "dlss-preprocess"), "--source=folder", f"--input_dir={sample_photos}"]
        + ["--output_dir=dataset", "--scale=2", "--hr_size=32", "--patches_per_image=2"],
        cwd=work,
        env=env,
    )
    _run(
        [str(bin_dir / "dlss-train"), "--gin_file=tiny_test.gin", "--model_dir=model"]
        + ["--data=dataset", "--gin_param=train_loop.total_steps = 2"]
        + ["--gin_param=train_loop.warmup_steps = 1", "--gin_param=train_loop.steps_per_loop = 1"],
        cwd=work,
        env=env,
    )
    assert (work / "model" / "operative_config.gin").is_file()
    _run(
        [str(bin_dir / "dlss-export"), "--model=model", "--export_dir=exported"],
        cwd=work,
        env=env,
    )
    _run(
        [str(bin_dir / "dlss-upscale"), "--model=exported", f"--input={sample_photos}"]
        + ["--output=upscaled"],
        cwd=work,
        env=env,
    )
    # A folder input upscales the images directly inside it, one PNG each.
    inputs = {p.stem for p in Path(sample_photos).iterdir() if p.is_file()}
    outputs = {p.stem for p in (work / "upscaled").glob("*.png")}
    assert outputs == inputs and inputs


def test_the_starter_model_loads_by_name_from_the_wheel(installed, sample_photos):
    work, env, bin_dir = installed["work"], installed["env"], installed["bin"]
    photo = sorted(p for p in Path(sample_photos).iterdir() if p.is_file())[0]
    for name in ("realworld_x4", "realworld_x4_gan"):
        _run(
            [str(bin_dir / "dlss-upscale"), f"--model={name}", f"--input={photo}"]
            + [f"--output={name}_out"],
            cwd=work,
            env=env,
        )
        with (
            Image.open(work / f"{name}_out" / f"{photo.stem}.png") as upscaled,
            Image.open(photo) as original,
        ):
            assert upscaled.size == (original.width * 4, original.height * 4), name
    unknown = subprocess.run(
        [str(bin_dir / "dlss-upscale"), "--model=realworld_x9", f"--input={photo}", "--output=o"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode == 1
    assert "starter models: realworld_x4, realworld_x4_gan" in unknown.stderr


def test_the_inference_only_install_upscales_with_onnx(installed_without_tensorflow, sample_photos):
    installed = installed_without_tensorflow
    work, env, bin_dir = installed["work"], installed["env"], installed["bin"]
    missing = subprocess.run(
        [str(installed["python"]), "-c", "import tensorflow"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0  # really no TensorFlow here
    photo = sorted(p for p in Path(sample_photos).iterdir() if p.is_file())[0]
    onnx_file = installed["site"] / "dlss_dist" / "starter_models" / "realworld_x4"
    for i, model in enumerate(("realworld_x4", str(onnx_file / "model.onnx"))):
        _run(
            [str(bin_dir / "dlss-upscale"), f"--model={model}", f"--input={photo}"]
            + [f"--output=onnx_out_{i}"],
            cwd=work,
            env=env,
        )
        assert (work / f"onnx_out_{i}" / f"{photo.stem}.png").is_file()
