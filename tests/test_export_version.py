"""dlss-export's version folder: checked before writing, staged, renamed whole, never mixed.

Issue 19 cases 3 (another model's export replaced), 6 (a full disk leaves partial files in
the folder TF Serving watches) and 8 (a bad --tflite_variants refused only after the
SavedModel and ONNX were written).
"""

import errno
import os

import pytest
from test_export import tiny_generator, write_model_dir
from test_files import fill_disk_after, small_tmpfs  # noqa: F401 (a fixture)

from dlss_dist import exporters, files
from dlss_dist.cli import export as export_cli

SCALE = 2


@pytest.fixture(scope="module")
def generator():
    return tiny_generator()


def other_models_export(folder) -> None:
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"another model")
    (folder / "model.onnx").write_bytes(b"another model")


def test_another_models_version_folder_is_refused_unless_overwrite(generator, tmp_path):
    version = tmp_path / "serving" / "7"
    other_models_export(version)
    with pytest.raises(files.OutputExistsError, match=r"already holds an export.*--overwrite"):
        exporters.export_version(
            generator, str(tmp_path / "serving"), 7, scale=SCALE, formats=["savedmodel"]
        )
    assert (version / "model.onnx").read_bytes() == b"another model"
    assert (version / "saved_model.pb").read_bytes() == b"another model"

    written = exporters.export_version(
        generator, str(tmp_path / "serving"), 7, scale=SCALE, formats=["savedmodel"], overwrite=True
    )
    assert written == {"SavedModel": str(version)}
    # Replaced whole: the other model's ONNX file is gone, not left beside the new SavedModel.
    assert sorted(os.listdir(version)) == [
        "assets",
        "fingerprint.pb",
        "saved_model.pb",
        "variables",
    ]
    assert os.listdir(tmp_path / "serving") == ["7"]


def test_a_full_disk_half_way_leaves_no_version_folder(generator, tmp_path, monkeypatch):
    # The SavedModel is written, then the ONNX file hits a full disk.
    fill_disk_after(monkeypatch, 1000)
    with pytest.raises(OSError) as raised:
        exporters.export_version(
            generator, str(tmp_path), 3, scale=SCALE, formats=["savedmodel", "onnx"]
        )
    assert raised.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []  # no "3", no staging folder, no saved_model.pb.tmp


def test_a_real_full_disk_leaves_no_version_folder(generator, small_tmpfs):  # noqa: F811
    with open(small_tmpfs / "filler", "wb") as f:
        f.write(b"\0" * (1024 * 1024 - 64 * 1024))  # leave 64 KiB: too little for the export
    with pytest.raises(Exception):  # noqa: B017 (TensorFlow's or Python's write error)
        exporters.export_version(
            generator, str(small_tmpfs), 3, scale=SCALE, formats=["savedmodel"]
        )
    assert os.listdir(small_tmpfs) == ["filler"]


@pytest.mark.slow
def test_a_bad_variant_is_refused_before_anything_is_written(tmp_path, in_process):
    write_model_dir(tmp_path / "model", generator=tiny_generator(seed=4), step=5)
    result = in_process(
        "export",
        f"--model={tmp_path / 'model'}",
        f"--export_dir={tmp_path / 'serving'}",
        "--format=savedmodel,onnx,tflite",
        "--tflite_variants=int8",
    )
    assert result.returncode == 2, result.stderr
    assert "--tflite_variants=int8: choose from float32, float16" in result.stderr
    assert not (tmp_path / "serving").exists()
    result = in_process(
        "export",
        f"--model={tmp_path / 'model'}",
        f"--export_dir={tmp_path / 'serving'}",
        "--format=bogus",
    )
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "serving").exists()


@pytest.mark.slow
def test_cli_refuses_an_occupied_version_in_one_line(tmp_path, in_process):
    write_model_dir(tmp_path / "model", generator=tiny_generator(seed=4), step=5)
    other_models_export(tmp_path / "serving" / "5")
    result = in_process(
        "export", f"--model={tmp_path / 'model'}", f"--export_dir={tmp_path / 'serving'}"
    )
    assert result.returncode == 1, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "--overwrite" in error_lines[0], result.stderr
    assert sorted(os.listdir(tmp_path / "serving" / "5")) == ["model.onnx", "saved_model.pb"]


def test_the_cli_knows_the_library_formats():
    assert export_cli.FORMATS == exporters.FORMATS
    assert tuple(exporters.TFLITE_FILES) == export_cli.TFLITE_VARIANTS
