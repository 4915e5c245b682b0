"""The dlss-preprocess Beam job end to end on tiny real and broken inputs."""

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import load_photo, photo_crops, save_image
from PIL import Image

from beam_jobs.images_to_tfrecords import cli, job, sources
from dlss_dist import imaging
from dlss_dist.data import schema

WRITTEN = "written"


def _write_bytes(path, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _build_zoo(root) -> dict[str, str]:
    """Good photos plus every kind of awkward file; returns key -> expected outcome."""
    expected = {}
    for index, crop in enumerate(photo_crops(10, 48, 48, seed=3)):
        key = f"{'sub/' if index % 3 == 0 else ''}good_{index}.{'png' if index % 2 else 'jpg'}"
        save_image(os.path.join(root, key), crop, quality=95)
        expected[key] = WRITTEN
    photo = load_photo("coffee")[:48, :64]
    jpeg = io.BytesIO()
    Image.fromarray(photo).save(jpeg, format="JPEG", quality=95)
    _write_bytes(os.path.join(root, "bad/truncated.jpg"), jpeg.getvalue()[:-400])
    expected["bad/truncated.jpg"] = "truncated"
    _write_bytes(os.path.join(root, "bad/text.jpg"), b"not a picture\n")
    expected["bad/text.jpg"] = "undecodable"
    _write_bytes(os.path.join(root, "bad/zero.png"), b"")
    expected["bad/zero.png"] = "empty_file"
    save_image(os.path.join(root, "odd/tiny.png"), photo[:20, :30])
    expected["odd/tiny.png"] = "too_small"
    cmyk = Image.fromarray(photo).convert("CMYK")
    os.makedirs(os.path.join(root, "odd"), exist_ok=True)
    cmyk.save(os.path.join(root, "odd/cmyk.jpg"), format="JPEG", quality=95)
    expected["odd/cmyk.jpg"] = WRITTEN
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(os.path.join(root, "odd/sixteen.png"))
    expected["odd/sixteen.png"] = WRITTEN
    save_image(os.path.join(root, "odd/gray.png"), gray)
    expected["odd/gray.png"] = WRITTEN
    rgba = np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])
    save_image(os.path.join(root, "odd/rgba.png"), rgba)
    expected["odd/rgba.png"] = WRITTEN
    Image.fromarray(photo).convert("P", palette=Image.ADAPTIVE, colors=32).save(
        os.path.join(root, "odd/palette.png")
    )
    expected["odd/palette.png"] = WRITTEN
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo[:, :40]).save(
        os.path.join(root, "odd/rotated.jpg"), format="JPEG", quality=95, exif=exif
    )
    expected["odd/rotated.jpg"] = WRITTEN
    # Not images: counted as ignored, never examples nor rejects.
    _write_bytes(os.path.join(root, "README.txt"), b"notes")
    _write_bytes(os.path.join(root, ".hidden/x.jpg"), b"junk")
    return expected


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The zoo and one single-worker run over it (reused by several tests)."""
    root = tmp_path_factory.mktemp("zoo")
    inputs = str(root / "in")
    expected = _build_zoo(inputs)
    out = str(root / "out")
    _run(
        [
            "--source=folder",
            f"--input_dir={inputs}",
            f"--output_dir={out}",
            "--scale=2",
            "--hr_size=32",
            "--split_ratios=0.6,0.2,0.2",
            "--num_shards=2",
        ]
    )
    return {"inputs": inputs, "out": out, "expected": expected}


def _run(argv: list[str]) -> dict:
    return job.run_job(cli.parse_options(argv))


def _examples(out: str) -> dict[str, dict]:
    """key -> decoded example (numpy) over every split, via TFDS."""
    builder = tfds.builder_from_directory(out)
    result = {}
    for split in builder.info.splits:
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            key = example["key"].decode()
            result[key] = dict(example, split=split)
    return result


def _rejects(out: str) -> dict[str, dict]:
    with open(os.path.join(out, schema.REJECTS_FILE)) as f:
        return {r["key"]: r for r in map(json.loads, f)}


def _manifest(out: str) -> dict:
    return schema.read_manifest(out)


def _shard_bytes(out: str) -> dict[str, bytes]:
    names = sorted(n for n in os.listdir(out) if ".tfrecord-" in n)
    return {n: pathlib.Path(out, n).read_bytes() for n in names}


def test_every_input_is_written_or_rejected_with_its_reason(zoo):
    examples = _examples(zoo["out"])
    rejects = _rejects(zoo["out"])
    expected = zoo["expected"]
    assert set(examples) | set(rejects) == set(expected)
    assert not set(examples) & set(rejects)
    for key, outcome in expected.items():
        if outcome == WRITTEN:
            assert key in examples, (key, rejects.get(key))
        else:
            assert rejects[key]["reason"] == outcome, rejects[key]
            assert rejects[key]["message"]


def test_manifest_counts_per_split(zoo):
    manifest = _manifest(zoo["out"])
    examples = _examples(zoo["out"])
    rejects = _rejects(zoo["out"])
    assert manifest["degradation"] == imaging.DEGRADATION
    assert manifest["scale"] == 2 and manifest["hr_size"] == 32
    assert manifest["parameters"]["split_ratios"] == [0.6, 0.2, 0.2]
    for split in schema.SPLITS:
        info = manifest["splits"][split]
        keys = [k for k in zoo["expected"] if sources.split_for_key(k, (0.6, 0.2, 0.2)) == split]
        assert info["read"] == len(keys) == info["written"] + info["rejected"]
        assert info["written"] == sum(e["split"] == split for e in examples.values())
        assert info["rejected"] == sum(r["split"] == split for r in rejects.values())
        assert info["examples"] == info["written"] and sum(info["shard_lengths"]) == info["written"]
    assert manifest["totals"]["read"] == len(zoo["expected"])
    reasons = [o for o in zoo["expected"].values() if o != WRITTEN]
    assert manifest["rejected_by_reason"] == {r: reasons.count(r) for r in sorted(set(reasons))}


def test_tfds_round_trip_and_lr_is_degraded_hr(zoo):
    builder = tfds.builder_from_directory(zoo["out"])
    manifest = _manifest(zoo["out"])
    for split, info in builder.info.splits.items():
        assert info.num_examples == manifest["splits"][split]["examples"]
        assert info.shard_lengths == manifest["splits"][split]["shard_lengths"]
        assert len(schema.tfrecord_files(zoo["out"], split)) == 2
    train = manifest["splits"]["train"]["examples"]
    half = len(list(builder.as_dataset(split="train[:50%]")))
    assert half in (train // 2, (train + 1) // 2)  # TFDS rounds to the closest
    for key, example in _examples(zoo["out"]).items():
        assert example["hr"].shape == (32, 32, 3) and example["lr"].shape == (16, 16, 3), key
        np.testing.assert_array_equal(example["lr"], imaging.degrade_bicubic(example["hr"], 2))
    # The reader-side decoder gives the same.
    import tensorflow as tf

    files = schema.tfrecord_files(zoo["out"], "train")
    first = next(iter(tf.data.TFRecordDataset(files).map(schema.decode_example)))
    assert first["hr"].shape == (32, 32, 3)


def test_odd_images_decoded_as_defined(zoo):
    examples = _examples(zoo["out"])
    photo = load_photo("coffee")[:48, :64]
    # EXIF orientation 6: the stored 48x40 picture is shown rotated to 40x48.
    rotated = examples["odd/rotated.jpg"]["hr"]
    decoded = imaging.decode_image(pathlib.Path(zoo["inputs"], "odd/rotated.jpg").read_bytes())
    assert decoded.shape == (40, 48, 3)
    np.testing.assert_array_equal(
        rotated, imaging.imresize(imaging.center_crop_square(decoded), 32, 32)
    )
    # RGBA at alpha 128 is composited on white: brighter than the photo.
    rgba = examples["odd/rgba.png"]["hr"].astype(int)
    plain = imaging.imresize(imaging.center_crop_square(photo), 32, 32).astype(int)
    assert (rgba >= plain - 1).all() and rgba.mean() > plain.mean() + 30
    # 16-bit grayscale is scaled down, not clipped to white.
    sixteen = examples["odd/sixteen.png"]["hr"]
    assert sixteen.mean() < 250 and (sixteen[..., 0] == sixteen[..., 2]).all()


@pytest.mark.slow
def test_one_and_two_workers_and_reruns_give_identical_files(zoo, tmp_path):
    out = str(tmp_path / "two")
    _run(
        [
            "--source=folder",
            f"--input_dir={zoo['inputs']}",
            f"--output_dir={out}",
            "--scale=2",
            "--hr_size=32",
            "--split_ratios=0.6,0.2,0.2",
            "--num_shards=2",
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        ]
    )
    assert _shard_bytes(out) == _shard_bytes(zoo["out"])
    assert _rejects(out) == _rejects(zoo["out"])
    for name in ("dataset_info.json", "features.json"):
        assert json.loads(pathlib.Path(out, name).read_text()) == json.loads(
            pathlib.Path(zoo["out"], name).read_text()
        )


@pytest.mark.slow
def test_portable_runner_loopback(sample_photos, make_dataset, tmp_path):
    reference = make_dataset("--num_shards=1", input_dir=sample_photos)
    out = make_dataset(
        "--num_shards=1",
        "--runner=PortableRunner",
        "--job_endpoint=embed",
        "--environment_type=LOOPBACK",
        input_dir=sample_photos,
    )
    assert _shard_bytes(out) == _shard_bytes(reference)
    assert _manifest(out)["totals"]["examples"] == 12


def test_celeba_splits_follow_the_partition_file(tmp_path, make_dataset):
    root = tmp_path / "celeba"
    partition = []
    faces = photo_crops(12, 218, 178, seed=5)
    for index, face in enumerate(faces):
        name = f"{index + 1:06d}.jpg"
        save_image(root / "img_align_celeba" / name, face, quality=90)
        partition.append(f"{name} {0 if index < 6 else 1 if index < 9 else 2}")
    partition.append("000099.jpg 2")  # listed, but the file is missing
    save_image(root / "img_align_celeba" / "000100.jpg", faces[0])  # not listed
    (root / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    out = make_dataset("--source=celeba", f"--celeba_dir={root}", "--scale=4", "--hr_size=128")
    manifest = _manifest(out)
    assert {s: manifest["splits"][s]["examples"] for s in schema.SPLITS} == {
        "train": 6,
        "validation": 3,
        "test": 3,
    }
    assert manifest["splits"]["test"]["rejected"] == 1
    assert manifest["unassigned"] == {"read": 1, "rejected": 1}
    rejects = _rejects(out)
    assert rejects["img_align_celeba/000099.jpg"]["reason"] == "missing_file"
    assert rejects["img_align_celeba/000100.jpg"]["reason"] == "unlisted"
    builder = tfds.builder_from_directory(out)
    assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
        "train": 6,
        "validation": 3,
        "test": 3,
    }
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="validation[:1]"))))
    assert example["hr"].shape == (128, 128, 3) and example["lr"].shape == (32, 32, 3)
    # The face crop is the centre square of the aligned image.
    index = int(example["key"].decode().split("/")[1][:6]) - 1
    expected = imaging.imresize(faces[index][20:198], 128, 128)
    decoded = imaging.decode_image(
        (root / "img_align_celeba" / f"{index + 1:06d}.jpg").read_bytes()
    )
    np.testing.assert_array_equal(example["hr"], imaging.imresize(decoded[20:198], 128, 128))
    assert np.abs(example["hr"].astype(int) - expected).mean() < 3


def test_paired_source(tmp_path, make_dataset):
    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    crops = photo_crops(5, 64, 64, seed=7)
    for index, hr in enumerate(crops[:3]):
        save_image(hr_dir / f"set/{index}.png", hr)
        save_image(lr_dir / f"set/{index}.png", imaging.degrade_bicubic(hr, 2))
    save_image(hr_dir / "wrong_ratio.png", crops[3])
    save_image(lr_dir / "wrong_ratio.png", crops[3][:20, :20])
    save_image(hr_dir / "hr_only.png", crops[4])
    save_image(lr_dir / "lr_only.png", crops[4][:32, :32])
    out = make_dataset(
        "--source=paired", f"--lr_dir={lr_dir}", f"--hr_dir={hr_dir}", "--split_ratios=1,0,0"
    )
    manifest = _manifest(out)
    assert manifest["degradation"] == sources.DEGRADATION_PAIRED
    assert manifest["splits"]["train"] == dict(
        manifest["splits"]["train"], read=6, written=3, rejected=3
    )
    assert {k: r["reason"] for k, r in _rejects(out).items()} == {
        "wrong_ratio.png": "scale_mismatch",
        "hr_only.png": "missing_lr",
        "lr_only.png": "missing_hr",
    }
    examples = _examples(out)
    np.testing.assert_array_equal(examples["set/1.png"]["hr"], crops[1])
    assert examples["set/1.png"]["lr"].shape == (32, 32, 3)


def test_patches_and_empty_splits(sample_photos, make_dataset):
    out = make_dataset(
        "--patches_per_image=3", "--split_ratios=1,0,0", "--num_shards=5", input_dir=sample_photos
    )
    manifest = _manifest(out)
    train = manifest["splits"]["train"]
    assert train["written"] == 12 and train["examples"] == 36 and train["num_shards"] == 5
    assert len(manifest["warnings"]) == 2
    assert manifest["splits"]["validation"]["num_shards"] == 0
    builder = tfds.builder_from_directory(out)
    assert list(builder.info.splits) == ["train"]  # empty splits are left out
    keys = sorted(_examples(out))
    assert keys[:3] == ["more/photo_00.jpg#p0", "more/photo_00.jpg#p1", "more/photo_00.jpg#p2"]
    assert len(schema.tfrecord_files(out, "train")) == 5
    assert schema.tfrecord_files(out, "test") == []


def test_alpha_reject(tmp_path, make_dataset):
    photo = load_photo("astronaut")[:40, :40]
    save_image(tmp_path / "in/opaque.png", np.dstack([photo, np.full((40, 40), 255, np.uint8)]))
    save_image(tmp_path / "in/clear.png", np.dstack([photo, np.zeros((40, 40), np.uint8)]))
    out = make_dataset("--alpha=reject", "--split_ratios=1,0,0", input_dir=str(tmp_path / "in"))
    assert {k: r["reason"] for k, r in _rejects(out).items()} == {"clear.png": "alpha"}


def test_nothing_written_is_an_error(tmp_path, make_dataset):
    _write_bytes(str(tmp_path / "in/a.jpg"), b"")
    with pytest.raises(RuntimeError, match="no example was written"):
        make_dataset(input_dir=str(tmp_path / "in"))


# Exit 2: the command line alone is wrong; exit 1: what it names is (as in every dlss tool).
@pytest.mark.parametrize(
    ("flags", "message", "exit_code"),
    [
        (["--hr_size=30", "--scale=4"], "multiple of --scale", 2),
        (["--scale=3", "--hr_size=36"], "power of 2", 2),
        (["--input_dir={missing}"], "does not exist", 1),
        (["--input_dir={empty}"], "holds no image files", 1),
        (["--source=celeba", "--celeba_dir={celeba_no_partition}"], "list_eval_partition.txt", 1),
        (["--source=celeba", "--celeba_dir={empty}"], "img_align_celeba", 1),
        (["--source=paired", "--lr_dir={photos}"], "needs --hr_dir", 2),
        (["--output_dir={existing}"], "--overwrite", 1),
    ],
)
def test_preflight_errors(flags, message, exit_code, tmp_path, sample_photos, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    save_image(tmp_path / "celeba/img_align_celeba/000001.jpg", load_photo("chelsea"))
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "manifest.json").write_text("{}")
    paths = {
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "celeba_no_partition": tmp_path / "celeba",
        "photos": sample_photos,
        "existing": tmp_path / "existing",
    }
    argv = ["--source=folder", "--scale=2", "--hr_size=32"]
    argv += [f.format(**paths) for f in flags]
    if not any(f.startswith(("--input_dir", "--source=celeba", "--source=paired")) for f in flags):
        argv.append(f"--input_dir={sample_photos}")
    if not any(f.startswith("--output_dir") for f in flags):
        argv.append(f"--output_dir={tmp_path / 'out'}")
    with pytest.raises(SystemExit) as info:
        cli.run(argv)
    assert info.value.code == exit_code
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("dlss-preprocess: error: ") and message in line, line
    assert not (tmp_path / "out").exists()  # nothing was written


def test_overwrite_replaces_a_dataset(sample_photos, make_dataset, tmp_path):
    out = make_dataset("--num_shards=3", input_dir=sample_photos)
    make_dataset("--num_shards=1", "--overwrite", input_dir=sample_photos, output_dir=out)
    assert sorted(n for n in os.listdir(out) if ".tfrecord-" in n) == [
        f"dlss_sr-{s}.tfrecord-00000-of-00001"
        for s in sorted(s for s, v in _manifest(out)["splits"].items() if v["num_shards"])
    ]


@pytest.mark.slow
def test_console_script_exit_code(tmp_path):
    script = shutil.which("dlss-preprocess", path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, "-m", "beam_jobs.images_to_tfrecords"]
    result = subprocess.run(
        [*command, "--source=folder", f"--input_dir={tmp_path}", f"--output_dir={tmp_path}/o"],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=120,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()  # one line: no usage block, no traceback
    assert line.startswith(f"dlss-preprocess: error: --input_dir={tmp_path} holds no image files")
