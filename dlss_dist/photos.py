r"""Real photographs without downloads: a Debian package's photos as a DIV2K-style HR folder.

``make photos`` installs Debian's ``lomiri-wallpapers-16.04`` (14 photographs and one
computer-generated gradient, which is skipped; 1365x1074 to 5312x2988, CC-BY-4.0 /
CC-BY-SA-4.0 / CC0-1.0, licences in the package's DEP-5 copyright file) and runs::

  dlss-photos --output_dir=photos

which writes

  photos/train/<name>.png   HR images for dlss-preprocess (11 photographs)
  photos/test/<name>.png    held-out HR images for dlss-eval (3 photographs)
  photos/photos.json        per file: source, package version, sizes, sha256, copyright, licence
  photos/ATTRIBUTION.md     the same for people (CC-BY requires it when sharing)

Each photo is downscaled by ``--downscale`` (default 4) with the project's bicubic
(`imaging.imresize`), so the camera's JPEG blocks and noise shrink below a pixel and do not
become "ground truth" the model is taught to reproduce; the sides are cropped to multiples of
8 first. The held-out split is fixed by name order (every fifth photo from the third), so
every machine gets the same split.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess

from absl import logging
from PIL import Image

from dlss_dist import imaging

PACKAGE = "lomiri-wallpapers-16.04"
SOURCE_DIR = "/usr/share/backgrounds"
COPYRIGHT_FILE = f"/usr/share/doc/{PACKAGE}/copyright"
MANIFEST_FILE = "photos.json"
ATTRIBUTION_FILE = "ATTRIBUTION.md"
# Files of the package that are not photographs (the set is for photographs only).
NOT_PHOTOGRAPHS = {"umang_by_Abhishek_Mudgal.jpg": "a computer-generated colour gradient"}
LICENSE_URLS = {
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC-BY-SA-3.0": "https://creativecommons.org/licenses/by-sa/3.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
}


def parse_copyright(text: str) -> dict[str, dict[str, str]]:
    """Reads a DEP-5 ``debian/copyright``: ``{file basename: {"copyright", "license"}}``.

    Only ``Files:`` paragraphs naming single files are returned (globs are skipped).
    """
    entries = {}
    for paragraph in re.split(r"\n\s*\n", text):
        fields, current = {}, None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and current:
                fields[current] += "\n" + line.strip()
            elif ":" in line:
                current, value = line.split(":", 1)
                fields[current] = value.strip()
        files = fields.get("Files", "")
        if not files or "*" in files or not fields.get("License"):
            continue
        for name in files.split():
            entries[os.path.basename(name)] = {
                "copyright": " ".join(fields.get("Copyright", "").split()),
                "license": fields["License"].splitlines()[0].strip(),
            }
    return entries


def package_version(package: str) -> str | None:
    """The installed Debian package version (None if dpkg does not know it)."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return None
    return result.stdout.strip() or None


def is_held_out(index: int) -> bool:
    """Every fifth photograph in name order, from the third, is kept for evaluation."""
    return index % 5 == 2


def build(
    output_dir: str,
    *,
    source_dir: str = SOURCE_DIR,
    copyright_file: str = COPYRIGHT_FILE,
    downscale: int = 4,
    package: str = PACKAGE,
) -> dict:
    """Writes the HR folders, photos.json and ATTRIBUTION.md; returns the manifest.

    Raises:
      FileNotFoundError: when the package is not installed (names the make target).
      ValueError: when a photo has no licence entry (nothing is written without one).
    """
    if downscale < 1:
        raise ValueError(f"--downscale must be >= 1, got {downscale}")
    if not os.path.isfile(copyright_file) or not os.path.isdir(source_dir):
        raise FileNotFoundError(
            f"{copyright_file} or {source_dir} is missing: install the photographs with "
            f"`make photos` (apt-get install {package}), or pass --source_dir/--copyright_file"
        )
    with open(copyright_file, encoding="utf-8") as f:
        licences = parse_copyright(f.read())
    names = sorted(
        n
        for n in os.listdir(source_dir)
        if n.lower().endswith((".jpg", ".jpeg", ".png")) and n not in NOT_PHOTOGRAPHS
    )
    missing = [n for n in names if n not in licences]
    if missing:
        raise ValueError(f"no licence entry in {copyright_file} for: {missing}")
    version = package_version(package)
    rows = []
    for index, name in enumerate(names):
        source = os.path.join(source_dir, name)
        with open(source, "rb") as f:
            data = f.read()
        hr = imaging.decode_image(data)
        height = hr.shape[0] // (8 * downscale) * 8 * downscale
        width = hr.shape[1] // (8 * downscale) * 8 * downscale
        small = imaging.imresize(hr[:height, :width], height // downscale, width // downscale)
        split = "test" if is_held_out(index) else "train"
        stem = os.path.splitext(name)[0]
        relative = f"{split}/{stem}.png"
        os.makedirs(os.path.join(output_dir, split), exist_ok=True)
        Image.fromarray(small).save(os.path.join(output_dir, relative))
        licence = licences[name]
        rows.append(
            {
                "file": relative,
                "split": split,
                "source": source,
                "source_sha256": hashlib.sha256(data).hexdigest(),
                "package": package,
                "package_version": version,
                "source_size": [int(hr.shape[1]), int(hr.shape[0])],
                "size": [int(small.shape[1]), int(small.shape[0])],
                "downscale": downscale,
                "resize": imaging.DEGRADATION,
                "copyright": licence["copyright"],
                "license": licence["license"],
                "license_url": LICENSE_URLS.get(licence["license"]),
            }
        )
        logging.info("%s: %dx%d -> %s", name, hr.shape[1], hr.shape[0], relative)
    manifest = {"package": package, "package_version": version, "photos": rows}
    with open(os.path.join(output_dir, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    lines = [
        "# Photographs in this folder",
        "",
        f"From Debian's `{package}` {version or ''} ({SOURCE_DIR}), each downscaled "
        f"{downscale}x with bicubic (MATLAB imresize conventions) and saved as PNG: these "
        "are modified versions of the originals.",
        "",
        "| file | copyright | licence |",
        "|---|---|---|",
    ]
    for row in rows:
        licence = row["license"]
        if row["license_url"]:
            licence = f"[{licence}]({row['license_url']})"
        lines.append(f"| {row['file']} | {row['copyright']} | {licence} |")
    with open(os.path.join(output_dir, ATTRIBUTION_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return manifest
