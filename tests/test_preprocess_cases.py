"""dlss-preprocess on unlucky inputs and settings (issue 13), and its memory, swap and console.

Every awkward file gets a reject reason (never an abort or a hang), every bad setting a
one-line ``dlss-preprocess: error: ...`` before any work, and a failed ``--overwrite``
rerun leaves the previous dataset as it was.
"""

import io
import json
import os
import pathlib
import stat
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
import simplejpeg
from absl import logging as absl_logging
from apache_beam.metrics.metric import MetricsFilter
from conftest import jpeg_bytes, load_photo, photo_crops, save_image
from PIL import Image

from beam_jobs.images_to_tfrecords import cli, examples, job, manifest, sources
from dlss_dist import imaging, run_lock
from dlss_dist.data import schema

REPO = pathlib.Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The console script in a fresh process (a hang fails the test instead of the suite)."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run(
        [sys.executable, "-m", "beam_jobs.images_to_tfrecords", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def run_cli(argv: list[str]) -> int:
    """``dlss-preprocess`` in this process (the shell's absl parsing included): exit status."""
    with pytest.raises(SystemExit) as info:
        cli.run(argv)
    return info.value.code or 0


def _rejects(out) -> dict[str, str]:
    with open(os.path.join(out, schema.REJECTS_FILE)) as f:
        return {r["key"]: r["reason"] for r in map(json.loads, f)}


def corrupt_jpeg() -> bytes:
    """A JPEG with three flipped bits that Pillow decodes silently and libjpeg warns about."""
    data = jpeg_bytes(load_photo("coffee")[:64, :64])
    rng = np.random.default_rng(0)
    while True:
        damaged = bytearray(data)
        for position in rng.integers(len(data) // 3, len(data) - 10, 3):
            damaged[position] ^= 1 << int(rng.integers(8))
        try:
            Image.open(io.BytesIO(bytes(damaged))).load()
            simplejpeg.decode_jpeg(bytes(damaged), strict=True)
        except ValueError:
            return bytes(damaged)  # Pillow loaded it; only the strict decoder objects
        except OSError:
            continue


def test_corrupt_jpeg_is_a_reject():
    with pytest.raises(imaging.ImageRejected) as info:
        imaging.decode_image(corrupt_jpeg())
    assert info.value.reason == "corrupt"
    imaging.decode_image(jpeg_bytes(load_photo("coffee")[:64, :64]))  # the intact one is fine


@pytest.mark.slow
def test_links_special_files_and_bad_names_are_rejected_with_reasons(tmp_path):
    root = tmp_path / "in"
    crops = photo_crops(4, 48, 48, seed=21)
    save_image(root / "a.png", crops[0])
    save_image(root / "sub/b.png", crops[1])
    save_image(tmp_path / "elsewhere/c.png", crops[2])
    os.symlink(tmp_path / "elsewhere", root / "linked")  # followed
    os.symlink(root, root / "sub/loop")  # back to an ancestor
    os.symlink(tmp_path / "missing.png", root / "dangling.png")
    os.mkfifo(root / "fifo.png")  # opening it would block forever
    with open(os.path.join(os.fsencode(root), b"bad\xff.png"), "wb") as f:
        f.write(b"\x89PNG not read")
    (root / "corrupt.jpg").write_bytes(corrupt_jpeg())
    expected = {
        "sub/loop/": "symlink_loop",
        "dangling.png": "broken_link",
        "fifo.png": "not_a_regular_file",
        "bad\\xff.png": "bad_file_name",
        "corrupt.jpg": "corrupt",
    }
    try:
        os.mknod(root / "device.png", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        expected["device.png"] = "not_a_regular_file"
    except (PermissionError, OSError):
        pass  # not allowed here (no CAP_MKNOD): the FIFO covers special files
    out = tmp_path / "out"
    result = _cli(
        "--source=folder",
        f"--input_dir={root}",
        f"--output_dir={out}",
        "--scale=2",
        "--hr_size=32",
        "--split_ratios=1,0,0",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert _rejects(out) == expected
    found = schema.read_manifest(str(out))
    assert found["splits"]["train"]["written"] == 3  # a.png, sub/b.png, linked/c.png
    assert found["totals"]["read"] == 3 + len(expected)


def test_unreadable_file_and_folder_are_rejects(tmp_path, monkeypatch, make_dataset):
    root = tmp_path / "in"
    crops = photo_crops(3, 48, 48, seed=22)
    save_image(root / "ok.png", crops[0])
    save_image(root / "secret.png", crops[1])
    save_image(root / "locked/inside.png", crops[2])
    if IS_ROOT:
        # Permission bits do not stop root: make the same system calls fail as they would.
        real_scandir, real_open = os.scandir, examples.FileSystems.open

        def scandir(path):
            if isinstance(path, str) and path.endswith("locked"):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        def fs_open(path, *args, **kwargs):
            if path.endswith("secret.png"):
                raise PermissionError(13, "Permission denied", path)
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(sources.os, "scandir", scandir)
        monkeypatch.setattr(examples.FileSystems, "open", fs_open)
    else:
        os.chmod(root / "secret.png", 0)
        os.chmod(root / "locked", 0)
    try:
        out = make_dataset("--split_ratios=1,0,0", input_dir=str(root))
    finally:
        if not IS_ROOT:
            os.chmod(root / "secret.png", 0o644)
            os.chmod(root / "locked", 0o755)
    assert _rejects(out) == {"secret.png": "unreadable", "locked/": "unreadable"}


def _partition_case(tmp_path, lines: list[str], bom: bool = False) -> pathlib.Path:
    root = tmp_path / "celeba"
    for index, face in enumerate(photo_crops(3, 218, 178, seed=23)):
        save_image(root / "img_align_celeba" / f"{index + 1:06d}.jpg", face, quality=90)
    text = "\n".join(lines) + "\n"
    (root / "list_eval_partition.txt").write_bytes(
        (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    )
    return root


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["000001.jpg 0", "000002.jpg 1", "000001.jpg 2"], "line 3: img_align_celeba/000001.jpg"),
        (["000001.jpg 0", "000002.jpg 3"], "line 2: expected '<file>.jpg 0|1|2'"),
        (["image_id partition", "000001.jpg 0"], "line 1: expected"),
    ],
)
def test_partition_file_problems_are_clean_preflight_errors(tmp_path, capsys, lines, message):
    root = _partition_case(tmp_path, lines)
    argv = ["--source=celeba", f"--celeba_dir={root}", f"--output_dir={tmp_path / 'out'}"]
    assert run_cli(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dlss-preprocess: error: ") and message in err, err
    assert "\n" not in err and not (tmp_path / "out").exists()


def test_partition_file_with_a_byte_order_mark_is_fine(tmp_path, make_dataset):
    root = _partition_case(tmp_path, ["000001.jpg 0", "000002.jpg 1", "000003.jpg 2"], bom=True)
    out = make_dataset("--source=celeba", f"--celeba_dir={root}", "--scale=4", "--hr_size=128")
    assert schema.read_manifest(out)["totals"]["examples"] == 3


@pytest.mark.parametrize(
    ("flags", "message", "exit_code"),
    [
        (["--split_ratios=nan,1,1"], "--split_ratios must be 3 finite", 2),
        (["--split_ratios=inf,1,0"], "--split_ratios must be 3 finite", 2),
        (["--output_dir={a_file}"], "is a file, not a folder", 1),
        (["--output_dir={read_only}"], "writ", 1),
        (["--hr-size=64"], "unknown option(s) --hr-size=64", 2),
    ],
)
def test_bad_settings_and_outputs_stop_before_any_work(
    flags, message, exit_code, tmp_path, sample_photos, capsys
):
    (tmp_path / "a_file").write_text("not a folder")
    if IS_ROOT:
        read_only = "/proc/dlss_preprocess_test/out"  # even root cannot create folders there
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        read_only = str(tmp_path / "ro" / "out")
    paths = {"a_file": tmp_path / "a_file", "read_only": read_only}
    argv = ["--source=folder", f"--input_dir={sample_photos}", "--scale=2", "--hr_size=32"]
    argv += [f.format(**paths) for f in flags]
    if not any(f.startswith("--output_dir") for f in flags):
        argv.append(f"--output_dir={tmp_path / 'out'}")
    assert run_cli(argv) == exit_code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_second_job_into_the_same_folder_refuses(tmp_path, sample_photos, capsys):
    out = tmp_path / "out"
    with run_lock.RunLock(str(out), "dlss-preprocess"):
        argv = ["--source=folder", f"--input_dir={sample_photos}", f"--output_dir={out}"]
        assert run_cli([*argv, "--scale=2", "--hr_size=32"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dlss-preprocess: error: ") and "is in use by dlss-preprocess" in err
    assert sorted(os.listdir(out)) == []  # the refused run wrote nothing


def _snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(folder).iterdir())}


def test_a_failed_overwrite_keeps_the_old_dataset(sample_photos, make_dataset, monkeypatch):
    out = make_dataset("--num_shards=2", input_dir=sample_photos)
    before = _snapshot(out)
    real = examples.examples_for_item

    def fails_midway(item, config):
        if item.key.endswith("photo_05.png"):
            raise RuntimeError("the disk caught fire")
        return real(item, config)

    monkeypatch.setattr(examples, "examples_for_item", fails_midway)
    with pytest.raises(Exception, match="the disk caught fire"):
        make_dataset("--num_shards=1", "--overwrite", input_dir=sample_photos, output_dir=out)
    assert _snapshot(out) == before  # no staging folder, no lock, the same bytes
    monkeypatch.setattr(examples, "examples_for_item", real)
    make_dataset("--num_shards=1", "--overwrite", input_dir=sample_photos, output_dir=out)
    assert [n for n in os.listdir(out) if n.startswith("dlss_sr-train")] == [
        "dlss_sr-train.tfrecord-00000-of-00001"
    ]


def _largest_group(tmp_path, count: int) -> tuple[int, dict]:
    """Runs the composite on ``count`` tiny inputs (half rejected); the most records one
    worker held at once in a shard or rejects group, and the manifest."""
    root = tmp_path / f"tiny_{count}"
    root.mkdir()
    pixel = np.full((4, 4, 3), 7, np.uint8)
    for index in range(count):
        if index % 2:
            (root / f"{index:05d}.png").write_bytes(b"")  # rejected: empty_file
        else:
            Image.fromarray(pixel + index % 200).save(root / f"{index:05d}.png")
    options = job.preflight(
        job.JobOptions(
            source="folder",
            inputs={"input_dir": str(root)},
            output_dir=str(tmp_path / f"out_{count}"),
            scale=2,
            hr_size=4,
            split_ratios=(1, 0, 0),
            examples_per_shard=25,
        )
    )
    pipeline = beam.Pipeline(options=job.beam_options(()))
    _ = pipeline | job.ImagesToTfrecords(options, options.output_dir)
    result = pipeline.run()
    result.wait_until_finish()
    held = result.metrics().query(MetricsFilter().with_name("records_held_per_group"))
    largest = max(d.committed.max for d in held["distributions"])
    return largest, schema.read_manifest(options.output_dir)


def test_memory_per_worker_does_not_grow_with_the_number_of_inputs(tmp_path):
    small, small_manifest = _largest_group(tmp_path, 100)
    large, large_manifest = _largest_group(tmp_path, 800)
    assert large_manifest["totals"] == {
        "read": 800,
        "written": 400,
        "rejected": 400,
        "examples": 400,
    }
    assert large_manifest["splits"]["train"]["num_shards"] == 16
    with open(tmp_path / "out_800" / schema.REJECTS_FILE) as f:
        assert sum(1 for _ in f) == 400
    # Groups hold about examples_per_shard (25) records whatever the count (hash imbalance
    # allowed); holding every reject at once (the old design) would be 400.
    assert small <= 60 and large <= 60, (small, large)


def test_tfds_metadata_is_what_tfds_writes(tmp_path, sample_photos, make_dataset):
    import tensorflow_datasets as tfds

    out = make_dataset("--split_ratios=1,0,0", input_dir=sample_photos)
    found = schema.read_manifest(out)
    reference = tmp_path / "reference"
    reference.mkdir()
    for name in os.listdir(out):
        if ".tfrecord-" in name:
            os.symlink(os.path.join(out, name), reference / name)
    info = found["splits"]["train"]
    tfds.folder_dataset.write_metadata(
        data_dir=str(reference),
        features=schema.features(),
        split_infos=[
            tfds.core.SplitInfo(
                name="train", shard_lengths=info["shard_lengths"], num_bytes=info["num_bytes"]
            )
        ],
        check_data=False,
        description=json.loads(pathlib.Path(out, "dataset_info.json").read_text())["description"],
        metadata=tfds.core.MetadataDict(
            {k: found[k] for k in ("scale", "hr_size", "degradation", "source")}
        ),
    )
    for name in (manifest.DATASET_INFO_FILE, manifest.FEATURES_FILE, manifest.METADATA_FILE):
        ours = json.loads(pathlib.Path(out, name).read_text())
        assert ours == json.loads((reference / name).read_text()), name


CHATTER = (
    "Creating insecure control channel",
    "semi_persistent_directory",
    "Logging handler created",
    "apitools",
    "INFO:",
    "WARNING",
    "Traceback",
    "error",
)


@pytest.mark.slow
def test_default_console_is_a_short_story(tmp_path, sample_photos):
    out = tmp_path / "out"
    result = _cli(
        "--source=folder",
        f"--input_dir={sample_photos}",
        f"--output_dir={out}",
        "--scale=2",
        "--hr_size=32",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    )
    assert result.returncode == 0, result.stderr
    console = result.stdout + result.stderr
    for line in CHATTER:
        assert line.lower() not in console.lower(), console
    lines = console.strip().splitlines()
    assert len(lines) <= 10, console
    assert lines[0].startswith("dlss-preprocess: folder source")
    assert any("12 inputs: 12 written, 0 rejected" in line for line in lines), console
    assert lines[-1].startswith(f"  dataset: {out}")


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(sample_photos, make_dataset):
    out = make_dataset("--num_shards=1", input_dir=sample_photos)
    dead = pathlib.Path(out, f"{job.STAGING_PREFIX}20260101-000000-deadbeef")
    dead.mkdir()
    (dead / "dlss_sr-train.tfrecord-00000-of-00001").write_bytes(b"half")
    make_dataset("--num_shards=1", "--overwrite", input_dir=sample_photos, output_dir=out)
    assert not dead.exists()
    assert not [n for n in os.listdir(out) if n.startswith("_")]


def test_a_stale_lock_is_taken_over_with_the_promised_warning(
    tmp_path, sample_photos, capsys, monkeypatch
):
    # Issue 19 "also noticed": the takeover's warning was not shown at the default verbosity.
    # absl's handler holds the stderr of the moment it was made: point it at this test's.
    monkeypatch.setattr(absl_logging.get_absl_handler().python_handler, "stream", sys.stderr)
    out = tmp_path / "out"
    out.mkdir()
    stale = {"tool": "dlss-preprocess", "owner": "alice", "host": "gone-pod", "pid": 7}
    stale.update(token="dead", started=0.0, heartbeat=0.0)
    (out / run_lock.LOCK_FILE).write_text(json.dumps(stale))
    argv = ["--source=folder", f"--input_dir={sample_photos}", f"--output_dir={out}"]
    assert run_cli([*argv, "--scale=2", "--hr_size=32"]) == 0
    err = capsys.readouterr().err
    assert "warning: Taking over the lock on" in err and "alice" in err, err
    assert not (out / run_lock.LOCK_FILE).exists()


def test_ctrl_c_exits_130_with_one_line(tmp_path, sample_photos, monkeypatch, capsys):
    # Issue 19 "also noticed": Ctrl-C exited 1 with Beam's "RuntimeError: KeyboardInterrupt".
    def interrupted(item, config):
        raise KeyboardInterrupt

    monkeypatch.setattr(examples, "examples_for_item", interrupted)
    out = tmp_path / "out"
    argv = ["--source=folder", f"--input_dir={sample_photos}", f"--output_dir={out}"]
    assert run_cli([*argv, "--scale=2", "--hr_size=32"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "dlss-preprocess: error: interrupted", err
    assert "RuntimeError" not in err and "Traceback" not in err, err
    assert os.listdir(out) == []  # no staging folder, no lock


def test_huge_split_ratios_keep_their_shares(sample_photos, make_dataset):
    # Issue 19 case 13: 1e308,1e308,1e308 overflowed the sum and sent everything to test.
    keys = [f"photo_{index:03d}.png" for index in range(300)]
    huge = [sources.split_for_key(key, (1e308, 1e308, 1e308)) for key in keys]
    assert huge == [sources.split_for_key(key, (1.0, 1.0, 1.0)) for key in keys]
    assert {name: huge.count(name) for name in set(huge)}.keys() == {"train", "validation", "test"}
    out = make_dataset("--split_ratios=1e308,1e308,1e308", input_dir=sample_photos)
    with open(os.path.join(out, schema.MANIFEST_FILE)) as f:
        splits = json.load(f)["splits"]
    assert splits["train"]["written"] > 0, splits
