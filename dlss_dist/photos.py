r"""Real photographs without web downloads: Debian packages' photos as DIV2K-style HR folders.

``make photos`` runs::

  dlss-photos --output_dir=photos

which fetches nine Debian packages with ``apt-get download`` (no root; the ``.deb`` files
and their ``dpkg-deb -x`` extractions are kept in ``--cache_dir``, nothing is installed),
takes the photographs listed in :data:`PACKAGES` (renders, drawings, gradients and logos
are left out by name), reads each file's copyright and licence from the package, and
writes

  photos/train/<tag>-<name>.png       HR images for dlss-preprocess
  photos/validation/<tag>-<name>.png  held-out HR images for choosing checkpoints
  photos/test/<tag>-<name>.png        held-out HR images for dlss-eval
  photos/photos.json                  per file: package, version, source, sha256, sizes,
                                      downscale factor, copyright, licence, source URL
  photos/ATTRIBUTION.md               the same for people (CC-BY requires it when sharing)

**Downscale rule.** Each photo is shrunk by ``max(package minimum, short side / 768)``
with the project's bicubic (:func:`imaging.imresize`): large photos end with a short side
near 768 px, and no photo is shrunk less than its package's minimum — 2x for camera JPEGs
(so JPEG blocks, demosaicing and noise fall below a pixel instead of becoming "ground
truth"), 1.5x for GCompris' WebP files (already resized, sharpened and lossy), 1x for
libjxl's PNGs (made from raw files). The output sides are multiples of 8; the source is
centre-cropped to ``output side x factor`` first, so the factor is exact per axis up to
rounding (the manifest records it).

**Split by package.** Photographs of one package share photographers, cameras and
processing, and some are near-duplicates, so whole packages are held out:
:data:`SPLITS` puts ``mate-backgrounds`` and ``palapeli-data`` in test and
``libjxl-testdata`` and ``lomiri-wallpapers-20.04`` in validation; the rest train. Names,
lists and the split are fixed, so every machine with the same package versions gets the
same set; the versions this was made with are in :data:`PACKAGES` and a different one is
logged.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import hashlib
import json
import os
import re
import subprocess

import numpy as np
from absl import logging
from PIL import Image

from dlss_dist import files, imaging, qt_rcc

MANIFEST_FILE = "photos.json"
ATTRIBUTION_FILE = "ATTRIBUTION.md"
SPLIT_NAMES = ("train", "validation", "test")
TARGET_SHORT_SIDE = 768

LICENSE_URLS = {
    "CC-BY-2.0": "https://creativecommons.org/licenses/by/2.0/",
    "CC-BY-3.0": "https://creativecommons.org/licenses/by/3.0/",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-3.0": "https://creativecommons.org/licenses/by-sa/3.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "GPL-2+": "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html",
    "GFDL": "https://www.gnu.org/licenses/fdl-1.3.html",
    "BSD-3-clause-Google": "https://github.com/libjxl/testdata",
    "public-domain": None,
}


@dataclasses.dataclass(frozen=True)
class Package:
    """One Debian package's photographs and how to read their licences.

    Attributes:
      name: the Debian package.
      tag: prefix of the output file names (short, unique).
      version: the version the set was made from (Debian 12); others work but are logged.
      min_downscale: the smallest reduction factor for this package's photos.
      licences: how licences are recorded: ``dep5`` (the package's DEP-5 copyright file),
        ``gcompris`` (a README per activity inside the .rcc), ``palapeli`` (a .desktop file
        per puzzle) or ``lxqt`` (the wallpapers' ``License`` file).
      photos: paths inside the package; for ``gcompris`` the .rcc files, whose WebP
        members are all photos except ``exclude``.
      upstream: (installed prefix, upstream prefix) mapping an installed path to the path
        the DEP-5 ``Files:`` patterns use.
      exclude: names (``activity/path``) left out, with the reason.
    """

    name: str
    tag: str
    version: str
    min_downscale: float
    licences: str
    photos: tuple[str, ...]
    upstream: tuple[str, str] = ("", "")
    exclude: tuple[tuple[str, str], ...] = ()


_GCOMPRIS_RCC = "usr/share/gcompris-qt/rcc/"
_PLASMA = [
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "Kite",
    "OneStandsOut",
    "Path",
    "summer_1am",
]
_LOMIRI_16 = [
    "Bridge_by_Sander_Klootwijk",
    "Dragonfly_by_Bolly",
    "Picture_0B_by_freespace",
    "Picture_1A_by_freespace",
    "Wine_by_Jakkub_Mede",
    "aitzgorri_by_Aitzol_Berasategi",
    "analogpattern_by_Peter_Nerlich",
    "free_by_Peter_Nerlich",
    "friends_by_Aitzol_Berasategi",
    "greentock_by_Peter_Nerlich",
    "life_by_Aitzol_Berasategi",
    "picosdeeuropa_by_Aitzol_Berasategi",
    "seeding_by_Clements_Engelhardt",
    "sunset_by_Aitzol_Berasategi",
]  # not umang_by_Abhishek_Mudgal: a computer-generated colour gradient
_TUXPAINT = [
    "burnt_bark",
    "cliff",
    "corn_maze",
    "jellyfish",
    "lighthouse",
    "mossy_bark",
    "mossy_log",
    "mudstone",
    "ocean_splash",
    "ocean_waves",
    "redwoods_above",
    "rocks",
    "sheep",
    "spiders_web",
    "sun_behind_clouds",
    "sun_behind_leaves",
    "trees_above",
    "trees_at_dusk",
    "wool_mill_machine",
]
_MATE = [
    "Aqua",
    "Blinds",
    "Dune",
    "FreshFlower",
    "Garden",
    "GreenMeadow",
    "LadyBird",
    "RainDrops",
    "Storm",
    "TwoWings",
    "Wood",
    "YellowFlower",
]
_LXQT = [
    "Butterfly-Kenneth-Wimer.jpg",
    "Valendas.png",
    "after-the-rain.jpg",
    "appleflower.png",
    "beam.png",
    "butterfly.png",
    "cloud.png",
    "drop.png",
    "flowers.png",
    "fog.jpg",
    "this-is-not-windows.jpg",
]  # the other wallpapers are logos, gradients and polygons
_PALAPELI = [
    "castle-maintenon",
    "cincinnati-bridge",
    "citrus-fruits",
    "european-honey-bee",
    "panther-chameleon-female",
]

PACKAGES = (
    Package(
        name="gcompris-qt-data",
        tag="gcompris",
        version="3.1-2",
        min_downscale=1.5,
        licences="gcompris",
        photos=tuple(
            f"{_GCOMPRIS_RCC}{a}.rcc"
            for a in ("erase", "explore_monuments", "explore_world_animals", "explore_farm_animals")
        ),
        exclude=(("explore_monuments/usa/castleClinton", "a grey print of a 1961 aerial photo"),),
    ),
    Package(
        name="tuxpaint-data",
        tag="tuxpaint",
        version="1:0.9.28-sdl2-1",
        min_downscale=2.0,
        licences="dep5",
        photos=tuple(f"usr/share/tuxpaint/templates/{n}.jpg" for n in _TUXPAINT),
        upstream=("usr/share/tuxpaint/", ""),
    ),
    Package(
        name="mate-backgrounds",
        tag="mate",
        version="1.26.0-1",
        min_downscale=2.0,
        licences="dep5",
        photos=tuple(f"usr/share/backgrounds/mate/nature/{n}.jpg" for n in _MATE),
        upstream=("usr/share/backgrounds/mate/", ""),
    ),
    Package(
        name="plasma-workspace-wallpapers",
        tag="plasma",
        version="4:5.27.5-2",
        min_downscale=2.0,
        licences="dep5",
        photos=tuple(f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg" for n in _PLASMA),
        upstream=("usr/share/wallpapers/", ""),
    ),
    Package(
        name="lxqt-themes",
        tag="lxqt",
        version="1.2.0-1",
        min_downscale=2.0,
        licences="lxqt",
        photos=tuple(f"usr/share/lxqt/wallpapers/{n}" for n in _LXQT),
    ),
    Package(
        name="palapeli-data",
        tag="palapeli",
        version="4:22.12.3-1",
        min_downscale=2.0,
        licences="palapeli",
        photos=tuple(f"usr/share/palapeli/collection/{n}.jpg" for n in _PALAPELI),
    ),
    Package(
        name="lomiri-wallpapers-16.04",
        tag="lomiri16",
        version="20.04.0-2",
        min_downscale=2.0,
        licences="dep5",
        photos=tuple(f"usr/share/backgrounds/{n}.jpg" for n in _LOMIRI_16),
        upstream=("usr/share/backgrounds/", "16.04/"),
    ),
    Package(
        name="lomiri-wallpapers-20.04",
        tag="lomiri20",
        version="20.04.0-2",
        min_downscale=2.0,
        licences="dep5",
        photos=("usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",),
        upstream=("usr/share/backgrounds/", "20.04/"),
    ),
    Package(
        name="libjxl-testdata",
        tag="libjxl",
        version="0.0~git20230110.d6168ff-1",
        min_downscale=1.0,
        licences="dep5",
        photos=(
            "usr/share/libjxl-testdata/jxl/flower/flower.png",
            "usr/share/libjxl-testdata/external/wesaturate/500px/cvo9xd_keong_macan_srgb8.png",
            "usr/share/libjxl-testdata/external/wesaturate/500px/tmshre_riaphotographs_srgb8.png",
            "usr/share/libjxl-testdata/external/wesaturate/500px/u76c0g_bliznaca_srgb8.png",
        ),
        upstream=("usr/share/libjxl-testdata/", ""),
    ),
)

# Whole packages held out (module docstring); every other package trains.
SPLITS = {
    "mate-backgrounds": "test",
    "palapeli-data": "test",
    "libjxl-testdata": "validation",
    "lomiri-wallpapers-20.04": "validation",
}

# Upstream's README for explore_monuments names germany/aulaPalatina.webp "audaPalatina".
_GCOMPRIS_README_TYPOS = {"germany/audaPalatina.webp": "germany/aulaPalatina.webp"}


@dataclasses.dataclass(frozen=True)
class Photo:
    """One source photograph with its licence, before downscaling."""

    name: str  # output stem, "<tag>-<name>"
    source: str  # path inside the package ("<rcc>!<member>" for rcc members)
    data: bytes
    copyright: str
    license: str
    source_url: str | None = None
    note: str | None = None  # e.g. the modifications upstream recorded


def split_of(package: str) -> str:
    """The split a package's photographs go to (``train`` unless held out in SPLITS)."""
    return SPLITS.get(package, "train")


def normalise_license(text: str) -> str:
    """Maps the spellings found in the packages to one SPDX-like identifier."""
    text = " ".join(text.split())
    lowered = text.lower()
    if lowered in ("public domain", "public-domain"):
        return "public-domain"
    if lowered in ("fdl", "gnu-fdl", "gfdl"):
        return "GFDL"
    if lowered == "cc0":
        return "CC0-1.0"
    match = re.fullmatch(r"(CC-BY(?:-SA)?)[ -](\d\.\d)", text, re.IGNORECASE)
    if match:
        return f"{match.group(1).upper()}-{match.group(2)}"
    return text


# ---------------------------------------------------------------- licence readers


def parse_dep5(text: str) -> list[dict[str, object]]:
    """Reads a DEP-5 ``debian/copyright``: its ``Files:`` paragraphs in order.

    Returns:
      ``[{"files": [patterns], "copyright": str, "license": str}]``; the last paragraph
      whose pattern matches a path applies (the DEP-5 rule, see :func:`dep5_lookup`).
    """
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields, current = {}, None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and current:
                fields[current] += "\n" + line.strip()
            elif ":" in line:
                current, value = line.split(":", 1)
                fields[current] = value.strip()
        if not fields.get("Files") or not fields.get("License"):
            continue
        paragraphs.append(
            {
                "files": fields["Files"].split(),
                "copyright": " ".join(fields.get("Copyright", "").split()),
                "license": fields["License"].splitlines()[0].strip(),
            }
        )
    return paragraphs


def dep5_lookup(paragraphs: list[dict[str, object]], path: str) -> dict[str, str] | None:
    """``{"copyright", "license"}`` of the last paragraph matching ``path`` (or None).

    DEP-5 patterns are shell globs in which ``*`` also matches ``/``, as in fnmatch.
    """
    found = None
    for paragraph in paragraphs:
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in paragraph["files"]):
            found = {"copyright": paragraph["copyright"], "license": paragraph["license"]}
    return found


def parse_gcompris_readme(text: str) -> dict[str, dict[str, str]]:
    """Reads a GCompris ``resource/README``: ``{file: {"copyright", "license", ...}}``.

    Paragraphs hold ``Copyright:``, ``License:``, ``Source:``, ``Comments:`` and
    ``Files:`` in any order; the file names follow ``Files:`` on its line or below.
    """
    entries = {}
    key = re.compile(r"^(Copyright|License|Source|Comments|Files):\s*(.*)$")
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        current = None
        for line in paragraph.splitlines():
            match = key.match(line.strip())
            if match:
                current = match.group(1)
                fields[current] = [match.group(2)] if match.group(2) else []
            elif current and line.strip():
                fields[current].append(line.strip())
        for name in fields.get("Files", []):
            name = _GCOMPRIS_README_TYPOS.get(name, name)
            entries[name] = {
                "copyright": " ".join(fields.get("Copyright", [])),
                "license": normalise_license(" ".join(fields.get("License", []))),
                "source_url": " ".join(fields.get("Source", [])) or None,
                "note": " ".join(fields.get("Comments", [])) or None,
            }
    return entries


def parse_desktop(text: str) -> dict[str, str]:
    """The ``key=value`` lines of a freedesktop ``.desktop`` file (first occurrence wins)."""
    entries = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            name, value = line.split("=", 1)
            entries.setdefault(name.strip(), value.strip())
    return entries


def parse_lxqt_license(text: str) -> dict[str, str]:
    """Reads lxqt-themes' ``wallpapers/License``: ``{"copyright", "license"}``."""
    copyright_line = next((line for line in text.splitlines() if "Copyright" in line), "")
    url = re.search(r"https?://creativecommons\.org/\S+", text)
    by_url = {u: name for name, u in LICENSE_URLS.items() if u}
    licence = by_url.get(url.group(0).rstrip("/") + "/") if url else None
    if not licence or not copyright_line:
        raise ValueError("lxqt-themes wallpapers/License: no copyright line or known licence URL")
    holder = copyright_line.replace("Copyright", "").replace(":", "").strip()
    return {"copyright": f"{holder} (credits in wallpapers/License)", "license": licence}


# ---------------------------------------------------------------- photos of a package


def _read(root: str, relative: str) -> bytes:
    path = os.path.join(root, relative)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: is {root} an extracted package of this set?")
    with open(path, "rb") as f:
        return f.read()


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def collect(package: Package, root: str) -> list[Photo]:
    """The package's photographs with their licences, from its extracted tree ``root``.

    Raises:
      FileNotFoundError: a listed file is missing.
      ValueError: a photograph has no licence record (nothing is written without one).
    """
    if package.licences == "gcompris":
        return _collect_gcompris(package, root)
    photos, unlicensed = [], []
    if package.licences == "dep5":
        doc = f"usr/share/doc/{package.name}/copyright"
        paragraphs = parse_dep5(_read(root, doc).decode("utf-8"))
    elif package.licences == "lxqt":
        folder = os.path.dirname(package.photos[0])
        lxqt = parse_lxqt_license(_read(root, f"{folder}/License").decode("utf-8"))
    for relative in package.photos:
        data = _read(root, relative)
        name = f"{package.tag}-{_stem(relative)}"
        if package.name == "plasma-workspace-wallpapers":
            name = f"{package.tag}-{relative.split('/')[3]}"  # the wallpaper's folder
        url = note = None
        if package.licences == "dep5":
            installed, upstream = package.upstream
            entry = dep5_lookup(paragraphs, upstream + relative.removeprefix(installed))
        elif package.licences == "lxqt":
            entry = lxqt
        elif package.licences == "palapeli":
            desktop = parse_desktop(_read(root, relative[: -len(".jpg")] + ".desktop").decode())
            author = desktop.get("X-KDE-PluginInfo-Author")
            licence = desktop.get("X-KDE-PluginInfo-License")
            entry = {"copyright": author, "license": licence} if author and licence else None
            url = desktop.get("X-KDE-PluginInfo-Website") or None
        else:
            raise ValueError(f"unknown licence reader {package.licences!r} for {package.name}")
        if not entry:
            unlicensed.append(relative)
            continue
        photos.append(
            Photo(
                name=name,
                source=relative,
                data=data,
                copyright=entry["copyright"],
                license=normalise_license(entry["license"]),
                source_url=url,
                note=note,
            )
        )
    if unlicensed:
        raise ValueError(f"{package.name}: no licence record for {unlicensed}")
    return photos


def _collect_gcompris(package: Package, root: str) -> list[Photo]:
    excluded = dict(package.exclude)
    photos, unlicensed = [], []
    for rcc in package.photos:
        members = qt_rcc.read_rcc(_read(root, rcc))
        activity = _stem(rcc)
        readmes = {
            os.path.dirname(path): parse_gcompris_readme(data.decode("utf-8"))
            for path, data in members.items()
            if os.path.basename(path) == "README"
        }
        for path in sorted(members):
            if not path.endswith(".webp"):
                continue
            resource = path.split("/resource/", 1)[1]  # e.g. "usa/castleClinton.webp"
            key = f"{activity}/{resource[: -len('.webp')]}"
            if key in excluded:
                continue
            entry = None
            for folder in sorted(readmes, key=len, reverse=True):  # the nearest README
                if path.startswith(folder + "/"):
                    entry = readmes[folder].get(path[len(folder) + 1 :])
                    break
            if not entry:
                unlicensed.append(f"{rcc}!{path}")
                continue
            photos.append(
                Photo(
                    name=f"{package.tag}-{activity.removeprefix('explore_')}-{_stem(path)}",
                    source=f"{rcc}!{path}",
                    data=members[path],
                    copyright=entry["copyright"],
                    license=entry["license"],
                    source_url=entry["source_url"],
                    note=entry["note"],
                )
            )
    if unlicensed:
        raise ValueError(f"{package.name}: no licence record for {unlicensed}")
    return photos


# ---------------------------------------------------------------- downscaling


def downscale_factor(short_side: int, minimum: float, target: int = TARGET_SHORT_SIDE) -> float:
    """The reduction factor for a photo: ``max(minimum, short_side / target)``."""
    return max(float(minimum), short_side / target)


def downscale(image: np.ndarray, factor: float) -> np.ndarray:
    """Centre-crops ``image`` and shrinks it ``factor`` times to sides that are multiples of 8.

    The output side is ``floor(side / factor / 8) * 8``; the crop is ``round(output side x
    factor)`` so both axes shrink by the same factor (up to one source pixel).

    Raises:
      ValueError: the photo is too small for an 8x8 output at this factor.
    """
    height, width = image.shape[:2]
    out_h = int(height / factor) // 8 * 8
    out_w = int(width / factor) // 8 * 8
    if out_h < 8 or out_w < 8:
        raise ValueError(f"a {width}x{height} photo is too small to shrink {factor:.3g}x")
    crop_h = min(height, round(out_h * factor))
    crop_w = min(width, round(out_w * factor))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return imaging.imresize(image[top : top + crop_h, left : left + crop_w], out_h, out_w)


# ---------------------------------------------------------------- fetching


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/dlss_dist/debs`` (``~/.cache/dlss_dist/debs``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dlss_dist", "debs")


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    except FileNotFoundError as error:
        raise RuntimeError(
            f"{command[0]} not found: dlss-photos needs Debian's apt-get and dpkg-deb "
            "(or put the .deb files in --cache_dir and run where dpkg-deb exists)"
        ) from error


def fetch(package: Package, cache_dir: str, *, download: bool = True) -> tuple[str, str]:
    """The package's extracted tree and version, fetched into ``cache_dir`` if needed.

    Uses ``cache_dir/<name>_*.deb`` if present (the pinned version preferred), else runs
    ``apt-get download <name>`` there (no root needed once the package lists exist), then
    ``dpkg-deb -x`` into ``cache_dir/extracted/<name>_<version>/`` (once).

    Raises:
      FileNotFoundError: no .deb in the cache and ``download`` is False.
      RuntimeError: apt-get or dpkg-deb failed; the message says what to run.
    """
    os.makedirs(cache_dir, exist_ok=True)
    debs = sorted(glob.glob(os.path.join(glob.escape(cache_dir), f"{package.name}_*.deb")))
    if not debs:
        if not download:
            raise FileNotFoundError(
                f"no {package.name}_*.deb in {cache_dir}: run `make photos` (apt-get download "
                f"{package.name}) or copy the .deb there"
            )
        logging.info("apt-get download %s", package.name)
        result = _run(["apt-get", "download", package.name], cwd=cache_dir)
        debs = sorted(glob.glob(os.path.join(glob.escape(cache_dir), f"{package.name}_*.deb")))
        if result.returncode != 0 or not debs:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            hint = (
                "the package lists are missing or stale: run `sudo apt-get update` once "
                "(Debian 12 'main' carries it), then retry"
                if "locate" in result.stderr or "candidate" in result.stderr
                else "check the network and apt sources"
            )
            raise RuntimeError(
                f"apt-get download {package.name} failed ({lines[-1] if lines else 'no output'})"
                f": {hint}"
            )
    versions = {}
    for deb in debs:
        result = _run(["dpkg-deb", "-f", deb, "Version"])
        if result.returncode != 0:
            raise RuntimeError(f"{deb} is not a readable .deb ({result.stderr.strip()}): delete it")
        versions[result.stdout.strip()] = deb
    version = package.version if package.version in versions else sorted(versions)[-1]
    if version != package.version:
        logging.warning(
            "%s %s differs from the version this set was made with (%s): the photos may differ",
            package.name,
            version,
            package.version,
        )
    root = os.path.join(cache_dir, "extracted", f"{package.name}_{version.replace(':', '%3a')}")
    if not os.path.isdir(root):
        # Extracted into a hidden folder and renamed whole: a failed run leaves nothing.
        with files.staged_folder(root) as staging:
            result = _run(["dpkg-deb", "-x", versions[version], staging])
            if result.returncode != 0:
                raise RuntimeError(
                    f"dpkg-deb -x {versions[version]} failed: {result.stderr.strip()}"
                )
    return root, version


# ---------------------------------------------------------------- the set


def write_set(
    output_dir: str,
    photos_by_package: dict[str, tuple[str | None, list[Photo]]],
    *,
    packages: tuple[Package, ...] = PACKAGES,
    target_short_side: int = TARGET_SHORT_SIDE,
) -> dict:
    """Downscales and writes the photographs, photos.json and ATTRIBUTION.md.

    Args:
      output_dir: gets ``train/``, ``validation/``, ``test/`` and the two manifests.
      photos_by_package: ``{package name: (version, photos)}`` from :func:`collect`.
      packages: the package specs (for each one's minimum factor).
      target_short_side: the short side large photos are reduced to.

    Returns:
      The manifest (also written to ``photos.json``).
    """
    by_name = {p.name: p for p in packages}
    _remove_previous_set(output_dir)
    rows = []
    for package_name, (version, photos) in photos_by_package.items():
        package = by_name[package_name]
        split = split_of(package_name)
        os.makedirs(os.path.join(output_dir, split), exist_ok=True)
        for photo in photos:
            hr = imaging.decode_image(photo.data)
            height, width = hr.shape[:2]
            factor = downscale_factor(min(height, width), package.min_downscale, target_short_side)
            small = downscale(hr, factor)
            relative = f"{split}/{photo.name}.png"
            Image.fromarray(small).save(os.path.join(output_dir, relative))
            rows.append(
                {
                    "file": relative,
                    "split": split,
                    "package": package_name,
                    "package_version": version,
                    "source": photo.source,
                    "source_sha256": hashlib.sha256(photo.data).hexdigest(),
                    "source_url": photo.source_url,
                    "source_size": [int(width), int(height)],
                    "size": [int(small.shape[1]), int(small.shape[0])],
                    "downscale": round(factor, 4),
                    "resize": imaging.DEGRADATION,
                    "copyright": photo.copyright,
                    "license": photo.license,
                    "license_url": LICENSE_URLS.get(photo.license),
                    "note": photo.note,
                }
            )
            logging.info("%s: %dx%d / %.3g -> %s", photo.source, width, height, factor, relative)
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLIT_NAMES}
    megapixels = {
        s: round(sum(r["size"][0] * r["size"][1] for r in rows if r["split"] == s) / 1e6, 2)
        for s in SPLIT_NAMES
    }
    manifest = {
        "rule": f"downscale = max(package minimum, short side / {target_short_side}), "
        "bicubic, sides multiples of 8; whole packages held out",
        "packages": {
            name: {"version": version, "split": split_of(name), "photos": len(photos)}
            for name, (version, photos) in photos_by_package.items()
        },
        "counts": counts,
        "megapixels": megapixels,
        "photos": rows,
    }
    with open(os.path.join(output_dir, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    _write_attribution(output_dir, manifest, target_short_side)
    return manifest


def _remove_previous_set(output_dir: str) -> None:
    """Deletes the images an earlier run listed in its photos.json (either layout), so a
    photo dropped from the set (or renamed) does not linger in train/ or test/."""
    manifest_path = os.path.join(output_dir, MANIFEST_FILE)
    if not os.path.isfile(manifest_path):
        return
    with open(manifest_path, encoding="utf-8") as f:
        previous = json.load(f)
    for row in previous.get("photos", []):
        relative = os.path.normpath(row.get("file", ""))
        if relative.startswith(("..", os.sep)) or not relative.endswith(".png"):
            continue  # never delete outside the folder
        path = os.path.join(output_dir, relative)
        if os.path.isfile(path):
            os.remove(path)


def _write_attribution(output_dir: str, manifest: dict, target_short_side: int) -> None:
    lines = [
        "# Photographs in this folder",
        "",
        "From Debian packages (below), each centre-cropped to sides that are multiples of 8 "
        f"and downscaled by max(package minimum, short side / {target_short_side}) with "
        "bicubic (MATLAB imresize conventions), saved as PNG: these are modified versions of "
        "the originals. Per-file details, hashes and factors: photos.json.",
        "",
    ]
    for name, info in manifest["packages"].items():
        lines += [
            f"## {name} {info['version'] or ''} ({info['split']})",
            "",
            "| file | copyright | licence | source |",
            "|---|---|---|---|",
        ]
        for row in manifest["photos"]:
            if row["package"] != name:
                continue
            licence = row["license"]
            if row["license_url"]:
                licence = f"[{licence}]({row['license_url']})"
            source = row["source_url"] or f"`{row['source']}`"
            note = f" (upstream: {row['note']})" if row["note"] else ""
            copyright_text = row["copyright"].replace("|", "\\|")
            lines.append(f"| {row['file']} | {copyright_text} | {licence} | {source}{note} |")
        lines.append("")
    with open(os.path.join(output_dir, ATTRIBUTION_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def build(
    output_dir: str,
    *,
    cache_dir: str | None = None,
    download: bool = True,
    packages: tuple[Package, ...] = PACKAGES,
    target_short_side: int = TARGET_SHORT_SIDE,
) -> dict:
    """Fetches every package, collects its photos and writes the set; returns the manifest.

    All packages are fetched and their licences read before anything is written.
    """
    if target_short_side < 8:
        raise ValueError(f"--target_short_side must be >= 8, got {target_short_side}")
    cache_dir = cache_dir or default_cache_dir()
    collected = {}
    for package in packages:
        root, version = fetch(package, cache_dir, download=download)
        collected[package.name] = (version, collect(package, root))
    return write_set(output_dir, collected, packages=packages, target_short_side=target_short_side)
