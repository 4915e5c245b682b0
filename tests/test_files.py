"""The ground-floor file plumbing: atomic writes, staged folders, the no-overwrite rule."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlss_dist import files


def fill_disk_after(monkeypatch, budget: int) -> None:
    """Makes `files`' local write call fail with ENOSPC after `budget` bytes (a full disk),
    having written what fitted, as a real write() on a full file system does."""

    def write(path, data):
        with open(path, "wb") as f:
            f.write(data[:budget])
        if len(data) > budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(files, "_write_local", write)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (a real full disk); skipped where mounting is not allowed."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the ENOSPC-injection tests cover this")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.json"
    files.atomic_write_json(str(path), {"x": 1})
    files.atomic_write(str(path), "new")
    assert path.read_text() == "new"
    assert os.listdir(path.parent) == ["a.json"]


def test_a_full_disk_keeps_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    path.write_bytes(b"old content")
    fill_disk_after(monkeypatch, 3)
    with pytest.raises(OSError) as raised:
        files.atomic_write(str(path), b"x" * 100)
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["a.png"]
    # And a new file is not created at all.
    with pytest.raises(OSError):
        files.atomic_write(str(tmp_path / "b.png"), b"x" * 100)
    assert os.listdir(tmp_path) == ["a.png"]


def test_a_real_full_disk_leaves_nothing_half_written(small_tmpfs):
    with pytest.raises(OSError) as raised:
        files.atomic_write(str(small_tmpfs / "big.bin"), os.urandom(2 << 20))
    assert raised.value.errno == errno.ENOSPC
    assert os.listdir(small_tmpfs) == []
    files.atomic_write(str(small_tmpfs / "small.bin"), b"fits")  # the space came back
    assert os.listdir(small_tmpfs) == ["small.bin"]


def test_staged_folder_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "export" / "7"
    with pytest.raises(RuntimeError), files.staged_folder(str(final)) as staging:
        (Path(staging) / "half").write_text("half")
        assert not final.exists()
        raise RuntimeError("disk full half-way")
    assert os.listdir(tmp_path / "export") == []  # no staging folder left behind
    with files.staged_folder(str(final)) as staging:
        (Path(staging) / "saved_model.pb").write_text("new")
    assert os.listdir(final) == ["saved_model.pb"]
    assert os.listdir(tmp_path / "export") == ["7"]


def test_staged_folder_replaces_only_when_asked(tmp_path):
    final = tmp_path / "7"
    final.mkdir()
    (final / "model.onnx").write_text("other model")
    with pytest.raises(files.OutputExistsError), files.staged_folder(str(final)) as staging:
        (Path(staging) / "saved_model.pb").write_text("new")
    assert os.listdir(final) == ["model.onnx"]
    assert os.listdir(tmp_path) == ["7"]
    with files.staged_folder(str(final), replace=True) as staging:
        (Path(staging) / "saved_model.pb").write_text("new")
    assert os.listdir(final) == ["saved_model.pb"]  # whole folder replaced: never mixed
    assert os.listdir(tmp_path) == ["7"]


def test_no_overwrite_rule_names_the_files_and_the_flag(tmp_path):
    (tmp_path / "b.png").write_text("the user's own")
    paths = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    with pytest.raises(files.OutputExistsError, match=r"already has b\.png.*--overwrite"):
        files.check_no_overwrite(paths, overwrite=False, where="--output=out")
    assert files.check_no_overwrite(paths, overwrite=True, where="x") == [paths[1]]
    assert isinstance(files.OutputExistsError("x"), OSError)  # CLIs: one line, exit 1


def test_local_file_work_never_imports_tensorflow(tmp_path):
    code = (
        "import sys; from dlss_dist import files; "
        f"files.atomic_write_json({str(tmp_path / 'a.json')!r}, {{}}); "
        f"files.list_dir({str(tmp_path)!r}); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_paths_and_listing(tmp_path):
    assert files.is_remote("gs://bucket/x") and not files.is_remote(str(tmp_path))
    assert files.same_path(str(tmp_path / "a" / ".." / "b"), str(tmp_path / "b"))
    name = os.fsdecode(b"caf\xe9.png")  # not UTF-8: listed, not fatal
    (tmp_path / name).write_bytes(b"")
    assert files.list_dir(str(tmp_path)) == [name]
    assert files.printable(name) == "caf\\xe9.png"
    assert files.name_too_long("x" * 256) and not files.name_too_long("x" * 255)


def test_set_aside_discards_the_old_outputs_or_restores_them(tmp_path):
    """The output-folder swap: old outputs moved aside, then deleted or put back whole."""
    for name, text in (("report.md", "old report"), ("grids/a.png", "old grid")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    aside = files.SetAside(str(tmp_path), str(tmp_path / ".previous"))
    aside.move(["report.md", "grids"])
    assert sorted(os.listdir(tmp_path)) == [".previous"]
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "partial.png").write_text("half")
    aside.restore()  # the new run failed
    assert sorted(os.listdir(tmp_path)) == ["grids", "report.md"]
    assert os.listdir(tmp_path / "grids") == ["a.png"]
    assert (tmp_path / "report.md").read_text() == "old report"

    aside = files.SetAside(str(tmp_path), str(tmp_path / ".previous"))
    aside.move(["report.md"])
    (tmp_path / "report.md").write_text("new report")
    aside.discard()  # the new run succeeded
    assert sorted(os.listdir(tmp_path)) == ["grids", "report.md"]
    assert (tmp_path / "report.md").read_text() == "new report"
