"""The package as users install it: a wheel, not the checkout.

Every other test imports the editable install inside the repository, where files outside
the package (a top-level config folder, say) are reachable by accident. Here the wheel is
built, installed non-editable into a fresh environment whose only view of the development
environment is its third-party packages, and the whole flow runs from a working directory
outside the repository: preprocess -> train (a config by bare name) -> export -> upscale.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from training_helpers import REPO

pytestmark = pytest.mark.slow


def _run(command, *, cwd, env, timeout=600):
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A venv holding only the installed wheel; third-party packages come from ours."""
    root = tmp_path_factory.mktemp("installed")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # Built from a copy of what the wheel is made of: setuptools writes build/ and
    # *.egg-info/ beside the sources, which must not land in the checkout.
    source = root / "source"
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for package in ("dlss_dist", "beam_jobs"):
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels = root / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(wheels), str(source)],
        cwd=root,
        env=env,
    )
    (wheel,) = wheels.glob("dlss_dist-*.whl")
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
    (target_site / "dev_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
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
        + ["--data_dir=dataset", "--gin_param=train_loop.total_steps = 2"]
        + ["--gin_param=train_loop.warmup_steps = 1", "--gin_param=train_loop.steps_per_loop = 1"],
        cwd=work,
        env=env,
    )
    assert (work / "model" / "operative_config.gin").is_file()
    _run(
        [str(bin_dir / "dlss-export"), "--model_dir=model", "--export_dir=exported"],
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
