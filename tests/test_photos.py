"""dlss_dist.photos: a licensed photo package becomes a DIV2K-style HR folder + manifest."""

import json
import os

import pytest
from conftest import photo_crops, save_image

from dlss_dist import photos

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: test

Files: 16.04/a_by_Ann.jpg
Copyright: Ann, 2018
License: CC-BY-4.0

Files: 16.04/b_by_Bo.jpg
Copyright: "Bo", 2018
           and friends
License: CC0-1.0

Files: debian/*
Copyright: 2018, Someone
License: Expat

License: CC0-1.0
 To the extent possible under law...
"""


def _package(tmp_path, names):
    source = tmp_path / "backgrounds"
    for name, crop in zip(names, photo_crops(len(names), 70, 90, seed=2), strict=False):
        save_image(source / name, crop, quality=95)
    copyright_file = tmp_path / "copyright"
    copyright_file.write_text(COPYRIGHT)
    return str(source), str(copyright_file)


def test_parse_copyright_reads_single_file_paragraphs():
    entries = photos.parse_copyright(COPYRIGHT)
    assert entries == {
        "a_by_Ann.jpg": {"copyright": "Ann, 2018", "license": "CC-BY-4.0"},
        "b_by_Bo.jpg": {"copyright": '"Bo", 2018 and friends', "license": "CC0-1.0"},
    }


def test_build_downscales_splits_and_records_licences(tmp_path):
    source, copyright_file = _package(tmp_path, ["a_by_Ann.jpg", "b_by_Bo.jpg"])
    out = str(tmp_path / "photos")
    manifest = photos.build(out, source_dir=source, copyright_file=copyright_file, downscale=2)
    rows = {row["file"]: row for row in manifest["photos"]}
    assert set(rows) == {"train/a_by_Ann.png", "train/b_by_Bo.png"}  # index 2 would be test
    row = rows["train/a_by_Ann.png"]
    # 70x90 cropped to multiples of 16 (8 x downscale), then halved.
    assert row["source_size"] == [90, 70] and row["size"] == [40, 32]
    assert row["license"] == "CC-BY-4.0" and row["license_url"].endswith("/by/4.0/")
    assert len(row["source_sha256"]) == 64
    with open(os.path.join(out, photos.MANIFEST_FILE)) as f:
        assert json.load(f) == manifest
    with open(os.path.join(out, photos.ATTRIBUTION_FILE)) as f:
        assert '| train/b_by_Bo.png | "Bo", 2018 and friends | [CC0-1.0]' in f.read()


def test_a_photo_without_a_licence_is_refused_before_writing(tmp_path):
    source, copyright_file = _package(tmp_path, ["a_by_Ann.jpg", "c_unknown.jpg"])
    out = tmp_path / "photos"
    with pytest.raises(ValueError, match=r"no licence entry .*\['c_unknown.jpg'\]"):
        photos.build(str(out), source_dir=source, copyright_file=copyright_file)
    assert not out.exists()


def test_a_missing_package_names_the_make_target(tmp_path):
    with pytest.raises(FileNotFoundError, match="make photos"):
        photos.build(str(tmp_path / "o"), source_dir=str(tmp_path / "none"))
