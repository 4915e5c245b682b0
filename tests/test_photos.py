"""dlss_dist.photos / qt_rcc: Debian packages' photos become HR folders split per package."""

import io
import json
import os
import struct
import zlib

import numpy as np
import pytest
from conftest import photo_crops, save_image
from PIL import Image

from dlss_dist import photos, qt_rcc

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: test

Files: *
Copyright: 2020 Everyone
License: GPL-2+

Files: 16.04/a_by_Ann.jpg
Copyright: Ann, 2018
License: CC-BY-4.0

Files: nature/b.jpg
       nature/c*.jpg
Copyright: "Bo", 2018
           and friends
License: CC0-1.0

License: CC0-1.0
 To the extent possible under law...
"""

README = """Copyright: Timothee Giet, 2018
License: CC-BY-SA 4.0
Files:
key.svg

Copyright: Someone
License: Public Domain
Source: https://example.org/a.jpg
Comments: cropping, sharpening
Files: a.webp

Files:
usa/b.webp
germany/audaPalatina.webp
Source: https://example.org/b.jpg
License: CC-BY-SA 4.0
Copyright: Other One
"""


def _rcc(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """A binary Qt resource file (the layout qt_rcc documents) holding ``files``.

    ``files`` maps ``a/b/name`` to (content, zlib-compressed?).
    """
    tree: dict = {}
    for path, content in files.items():
        node = tree
        parts = path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = content
    names, name_offsets, data = b"", {}, b""
    nodes = []  # [name offset, flags, a, b, data offset]

    def name_offset(name):
        nonlocal names
        if name not in name_offsets:
            name_offsets[name] = len(names)
            encoded = name.encode("utf-16-be")
            names += struct.pack(">HI", len(name), 0) + encoded
        return name_offsets[name]

    nodes.append([0, 2, 0, 0])
    queue = [(0, tree)]
    while queue:  # breadth first, children of a directory contiguous, as rcc writes them
        index, children = queue.pop(0)
        nodes[index][2], nodes[index][3] = len(children), len(nodes)
        for name in sorted(children):
            child = children[name]
            if isinstance(child, dict):
                nodes.append([name_offset(name), 2, 0, 0])
                queue.append((len(nodes) - 1, child))
            else:
                content, compress = child
                blob = (
                    struct.pack(">I", len(content)) + zlib.compress(content)
                    if compress
                    else content
                )
                nodes.append([name_offset(name), 1 if compress else 0, 0, len(data)])
                data += struct.pack(">I", len(blob)) + blob
    node_size = 14 if version == 1 else 22
    tree_bytes = b""
    for offset, flags, a, b in nodes:
        if flags & 2:
            tree_bytes += struct.pack(">IHII", offset, flags, a, b)
        else:
            tree_bytes += struct.pack(">IHHHI", offset, flags, 0, 0, b)
        tree_bytes += b"\0" * (node_size - 14)
    header_size = 24 if version >= 3 else 20
    data_start = header_size
    names_start = data_start + len(data)
    tree_start = names_start + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_start, data_start, names_start)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + data + names + tree_bytes


@pytest.mark.parametrize("version", [1, 3])
def test_read_rcc_returns_every_file_plain_and_zlib(version):
    files = {
        "gcompris/resource/README": (b"hello", False),
        "gcompris/resource/usa/b.webp": (b"\x00\x01" * 300, True),
        "gcompris/resource/a.webp": (b"photo", True),
    }
    assert qt_rcc.read_rcc(_rcc(files, version)) == {p: c for p, (c, _) in files.items()}


def test_read_rcc_refuses_other_files_with_a_reason():
    with pytest.raises(ValueError, match="no 'qres' magic"):
        qt_rcc.read_rcc(b"PK\x03\x04" + b"\0" * 30)
    with pytest.raises(ValueError, match="truncated"):
        qt_rcc.read_rcc(_rcc({"a/b": (b"x" * 100, False)})[:40])


def test_dep5_globs_and_the_last_matching_paragraph_wins():
    paragraphs = photos.parse_dep5(DEP5)
    assert photos.dep5_lookup(paragraphs, "16.04/a_by_Ann.jpg") == {
        "copyright": "Ann, 2018",
        "license": "CC-BY-4.0",
    }
    assert photos.dep5_lookup(paragraphs, "nature/c2.jpg") == {
        "copyright": '"Bo", 2018 and friends',
        "license": "CC0-1.0",
    }
    assert photos.dep5_lookup(paragraphs, "abstract/x.jpg")["license"] == "GPL-2+"
    assert photos.dep5_lookup(photos.parse_dep5(DEP5.split("\n\n", 2)[2]), "x/y.jpg") is None


def test_gcompris_readme_files_in_any_order_and_upstreams_typo():
    entries = photos.parse_gcompris_readme(README)
    assert entries["a.webp"] == {
        "copyright": "Someone",
        "license": "public-domain",
        "source_url": "https://example.org/a.jpg",
        "note": "cropping, sharpening",
    }
    assert entries["usa/b.webp"]["license"] == "CC-BY-SA-4.0"
    assert entries["germany/aulaPalatina.webp"]["copyright"] == "Other One"
    assert entries["key.svg"]["license"] == "CC-BY-SA-4.0"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("CC-BY-SA 4.0", "CC-BY-SA-4.0"),
        ("cc-by 2.0", "CC-BY-2.0"),
        ("Public Domain", "public-domain"),
        ("GNU-FDL", "GFDL"),
        ("FDL", "GFDL"),
        ("CC0", "CC0-1.0"),
        ("GPL-2+", "GPL-2+"),
    ],
)
def test_licence_spellings_are_normalised(text, expected):
    assert photos.normalise_license(text) == expected


def test_lxqt_license_file():
    text = "Copyright 2022: LXQt Project Team\nLicensed under https://creativecommons.org/licenses/by-sa/3.0/\n"
    assert photos.parse_lxqt_license(text) == {
        "copyright": "2022 LXQt Project Team (credits in wallpapers/License)",
        "license": "CC-BY-SA-3.0",
    }
    with pytest.raises(ValueError, match="License"):
        photos.parse_lxqt_license("All rights reserved")


@pytest.mark.parametrize(
    "short_side, minimum, expected",
    [
        (1080, 1.5, 1.5),
        (768, 1.5, 1.5),
        (2988, 2.0, 2988 / 768),
        (500, 1.0, 1.0),
        (1600, 2.0, 1600 / 768),
    ],
)
def test_downscale_factor_is_the_larger_of_minimum_and_short_side_over_target(
    short_side, minimum, expected
):
    assert photos.downscale_factor(short_side, minimum) == pytest.approx(expected)


def test_downscale_gives_multiples_of_8_from_a_centred_crop():
    image = np.zeros((100, 130, 3), np.uint8)
    image[:, :5] = 255  # a white strip at the left edge, cut away by the centred crop
    small = photos.downscale(image, 1.5)
    # 100 / 1.5 = 66.7 -> 64; 130 / 1.5 = 86.7 -> 80; crop 96x120 from (2, 5).
    assert small.shape == (64, 80, 3)
    assert small.max() == 0
    with pytest.raises(ValueError, match="too small"):
        photos.downscale(np.zeros((10, 10, 3), np.uint8), 2.0)


def test_the_split_holds_out_whole_packages():
    names = [p.name for p in photos.PACKAGES]
    assert len(set(names)) == len(names) and len({p.tag for p in photos.PACKAGES}) == len(names)
    assert set(photos.SPLITS) <= set(names)
    held_out = {s: [n for n in names if photos.split_of(n) == s] for s in photos.SPLIT_NAMES}
    assert held_out["test"] == ["mate-backgrounds", "palapeli-data"]
    assert held_out["validation"] == ["lomiri-wallpapers-20.04", "libjxl-testdata"]
    assert len(held_out["train"]) == len(names) - 4


def _webp(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="WEBP", quality=90)
    return buffer.getvalue()


def _fake_packages(tmp_path):
    """A DEP-5 package (in the test split) and a GCompris-style one (train), extracted."""
    crops = photo_crops(3, 40, 56, seed=3)
    mate = photos.Package(
        name="mate-backgrounds",
        tag="mate",
        version="1",
        min_downscale=2.0,
        licences="dep5",
        photos=("usr/share/backgrounds/mate/nature/b.jpg",),
        upstream=("usr/share/backgrounds/mate/", ""),
    )
    mate_root = tmp_path / "mate"
    save_image(mate_root / mate.photos[0], crops[0], quality=95)
    (mate_root / "usr/share/doc/mate-backgrounds").mkdir(parents=True)
    (mate_root / "usr/share/doc/mate-backgrounds/copyright").write_text(DEP5)
    gcompris = photos.Package(
        name="gcompris-qt-data",
        tag="gcompris",
        version="1",
        min_downscale=1.5,
        licences="gcompris",
        photos=("rcc/explore_monuments.rcc",),
        exclude=(("explore_monuments/usa/gone", "a drawing"),),
    )
    prefix = "gcompris/src/activities/explore_monuments/resource"
    rcc = _rcc(
        {
            f"{prefix}/README": (README.encode(), True),
            f"{prefix}/a.webp": (_webp(crops[1]), False),
            f"{prefix}/usa/b.webp": (_webp(crops[2]), True),
            f"{prefix}/usa/gone.webp": (b"not read", False),
        }
    )
    gcompris_root = tmp_path / "gcompris"
    (gcompris_root / "rcc").mkdir(parents=True)
    (gcompris_root / "rcc/explore_monuments.rcc").write_bytes(rcc)
    return (mate, str(mate_root)), (gcompris, str(gcompris_root))


def test_collect_and_write_split_downscale_and_record_licences(tmp_path):
    (mate, mate_root), (gcompris, gcompris_root) = _fake_packages(tmp_path)
    collected = {
        "mate-backgrounds": ("1", photos.collect(mate, mate_root)),
        "gcompris-qt-data": ("1", photos.collect(gcompris, gcompris_root)),
    }
    out = str(tmp_path / "photos")
    manifest = photos.write_set(out, collected, packages=(mate, gcompris), target_short_side=16)
    rows = {row["file"]: row for row in manifest["photos"]}
    assert set(rows) == {
        "test/mate-b.png",
        "train/gcompris-monuments-a.png",
        "train/gcompris-monuments-b.png",
    }
    # 56x40 photos: mate shrinks max(2, 40/16) = 2.5x -> 16x16; gcompris max(1.5, 2.5) too.
    assert rows["test/mate-b.png"]["size"] == [16, 16]
    assert rows["test/mate-b.png"]["downscale"] == 2.5
    assert Image.open(os.path.join(out, "test/mate-b.png")).size == (16, 16)
    assert rows["test/mate-b.png"]["license"] == "CC0-1.0"
    a = rows["train/gcompris-monuments-a.png"]
    assert a["license"] == "public-domain" and a["source_url"] == "https://example.org/a.jpg"
    assert (
        a["source"]
        == f"{gcompris.photos[0]}!gcompris/src/activities/explore_monuments/resource/a.webp"
    )
    assert manifest["counts"] == {"train": 2, "validation": 0, "test": 1}
    assert manifest["packages"]["mate-backgrounds"]["split"] == "test"
    with open(os.path.join(out, photos.MANIFEST_FILE)) as f:
        assert json.load(f) == manifest
    with open(os.path.join(out, photos.ATTRIBUTION_FILE)) as f:
        attribution = f.read()
    assert '| test/mate-b.png | "Bo", 2018 and friends | [CC0-1.0]' in attribution
    assert "(upstream: cropping, sharpening)" in attribution


def test_a_photo_without_a_licence_is_refused(tmp_path):
    (_, _), (gcompris, gcompris_root) = _fake_packages(tmp_path)
    unlicensed = photos.Package(**{**gcompris.__dict__, "exclude": ()})
    with pytest.raises(ValueError, match=r"no licence record for .*usa/gone.webp"):
        photos.collect(unlicensed, gcompris_root)


def test_a_missing_package_without_download_names_the_make_target(tmp_path):
    with pytest.raises(FileNotFoundError, match="make photos"):
        photos.fetch(photos.PACKAGES[0], str(tmp_path / "cache"), download=False)
    with pytest.raises(FileNotFoundError, match="make photos"):
        photos.build(str(tmp_path / "o"), cache_dir=str(tmp_path / "cache"), download=False)
    assert not (tmp_path / "o").exists()


def test_a_rerun_removes_the_images_the_previous_manifest_listed(tmp_path):
    out = tmp_path / "photos"
    old = save_image(
        out / "train" / "Bridge_by_Sander_Klootwijk.png", np.zeros((8, 8, 3), np.uint8)
    )
    mine = save_image(out / "train" / "mine.png", np.zeros((8, 8, 3), np.uint8))
    listed = [{"file": "train/Bridge_by_Sander_Klootwijk.png"}, {"file": "../outside.png"}]
    (out / photos.MANIFEST_FILE).write_text(json.dumps({"photos": listed}))
    (tmp_path / "outside.png").write_bytes(b"kept")
    manifest = photos.write_set(str(out), {})
    assert manifest["counts"] == {"train": 0, "validation": 0, "test": 0}
    assert not os.path.exists(old) and os.path.exists(mine)
    assert (tmp_path / "outside.png").exists()
