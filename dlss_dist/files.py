"""Ground floor: how every tool writes files, so that nothing is lost or left half-written.

* `is_remote` / `same_path` / `list_dir`: paths with a scheme (``gs://``, ``s3://``, ...) go
  through `tf.io.gfile` (imported only then, so local work never loads TensorFlow); local
  paths through `os`, which keeps file names that are not UTF-8 (as surrogates) instead of
  failing on them.
* `atomic_write` / `atomic_write_json`: a file is written to a hidden temporary name beside
  its target and renamed over it when complete. A full disk, a crash or Ctrl-C leaves the
  old file (or none), never a truncated one; the temporary file is removed on failure.
  `staged_file` is the same for a writer that needs a file name (FFmpeg, an archive
  extractor): it yields the temporary name and renames it into place when the body ends.
* `staged_folder`: a whole folder (e.g. an export version TF Serving watches) is written
  under a hidden temporary name and renamed into place in one step; on failure the partial
  folder is deleted. With ``replace=True`` an existing folder is moved aside first and
  deleted only after the new one is in place.
* `SetAside`: the output-folder swap itself. Existing outputs are moved into a folder beside
  them before new ones are written; `discard` deletes them once the new ones are complete,
  `restore` deletes the new partial ones and puts the old back (`publish_folder`, the demo).
* `check_no_overwrite`: THE no-overwrite rule of every tool: an existing file that this run
  did not create is never replaced without ``--overwrite``. Tools call it with every path
  they will write, before any work, and it raises `OutputExistsError` (an OSError, so the
  CLIs print one line and exit 1) naming the files and the flag that allows it.

Remote renames are as atomic as the file system makes them (object stores copy, then
delete): a reader of ``gs://`` may briefly see both names, never a partial object.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence

TEMP_PREFIX = ".tmp-"  # hidden temporary names; every writer here starts them with this
# Longest file name (one path component) in bytes on the common local file systems
# (ext4, XFS, APFS, NTFS in UTF-16 units); longer names fail with ENAMETOOLONG.
NAME_MAX = 255


class OutputExistsError(FileExistsError):
    """A tool would replace files it did not create; the message names them and the fix."""


def is_remote(path: str) -> bool:
    """True for a path with a URL scheme (``gs://bucket/x``), handled by `tf.io.gfile`."""
    return "://" in os.fspath(path)


def gfile():
    """`tf.io.gfile`, for remote paths (imports TensorFlow on first use, so local work never
    loads it)."""
    import tensorflow as tf

    return tf.io.gfile


def exists(path: str) -> bool:
    return gfile().exists(path) if is_remote(path) else os.path.lexists(path)


def isdir(path: str) -> bool:
    return gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    if is_remote(path):
        gfile().makedirs(path)
    elif path:
        os.makedirs(path, exist_ok=True)


def remove_file(path: str) -> None:
    """Deletes a file; a missing one is fine (another process may have removed it)."""
    if is_remote(path):
        import tensorflow as tf  # a remote path needs it anyway

        with contextlib.suppress(tf.errors.NotFoundError):
            gfile().remove(path)
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def read_text(path: str) -> str:
    """The whole content of a local or remote UTF-8 text file."""
    return read_bytes(path).decode("utf-8")


def remove_tree(path: str) -> None:
    """Deletes a file or folder if it exists."""
    if is_remote(path):
        remote = gfile()
        if remote.isdir(path):
            remote.rmtree(path)
        elif remote.exists(path):
            remote.remove(path)
    elif os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def same_path(a: str, b: str) -> bool:
    """True when `a` and `b` name the same file (symlinks and ``..`` resolved locally)."""
    if is_remote(a) or is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def list_dir(path: str) -> list[str]:
    """The names in a folder (unsorted, no trailing slashes).

    Local folders keep names that are not UTF-8 (as surrogates, see `printable`);
    `tf.io.gfile.listdir` would raise on them and abort a whole run.
    """
    if is_remote(path):
        return [name.rstrip("/") for name in gfile().listdir(path)]
    return os.listdir(path)


def printable(path: str) -> str:
    """`path` with bytes that are not UTF-8 (kept by Python as surrogates) shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def name_too_long(name: str) -> bool:
    """True if a file name (one component) is over `NAME_MAX` bytes."""
    return len(os.fsencode(name)) > NAME_MAX


def temp_path_beside(path: str, *, keep_extension: bool = False) -> str:
    """A hidden, unique name in `path`'s folder (``.tmp-<hex>``).

    With `keep_extension`, the name ends in `path`'s extension (writers such as FFmpeg
    choose the format from it).
    """
    parent, base = os.path.split(path)
    suffix = os.path.splitext(base)[1] if keep_extension else ""
    return os.path.join(parent, f"{TEMP_PREFIX}{uuid.uuid4().hex}{suffix}")


def _write_local(path: str, data: bytes) -> None:
    """The one local write call (tests inject ENOSPC here)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_file(path: str, data: bytes) -> None:
    """Writes `data` to `path` in place (local: flushed to disk), not atomically: for a
    temporary file that is renamed into place afterwards (`atomic_write`, the run lock)."""
    if is_remote(path):
        with gfile().GFile(path, "wb") as f:
            f.write(data)
    else:
        _write_local(path, data)


def rename_over(source: str, target: str) -> None:
    """Renames `source` over `target` (atomic on a local file system)."""
    if is_remote(source) or is_remote(target):
        gfile().rename(source, target, overwrite=True)
    else:
        os.replace(source, target)


@contextlib.contextmanager
def staged_file(path: str, *, keep_extension: bool = False) -> Iterator[str]:
    """Yields a hidden temporary name beside `path`; renames it over `path` when the body ends.

    For writers that need a file name (FFmpeg, an archive extractor, a checksum check before
    the file is accepted). If the body raises, the temporary file is removed and `path` keeps
    its old content, or stays absent. With `keep_extension`, the temporary name ends in
    `path`'s extension (FFmpeg picks the container from it). The folder is created if needed.
    """
    parent = os.path.dirname(path)
    if parent:
        makedirs(parent)
    temp = temp_path_beside(path, keep_extension=keep_extension)
    try:
        yield temp
        rename_over(temp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            remove_tree(temp)
        raise


def atomic_write(path: str, data: bytes | str) -> str:
    """Writes `data` (str is UTF-8 encoded) to `path` in one step; returns `path`.

    The bytes go to a hidden temporary file beside `path`, renamed over it when complete;
    on any error (a full disk: OSError ENOSPC) the temporary file is removed and `path`
    keeps its old content, or stays absent. The folder is created if needed.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    with staged_file(path) as temp:
        write_file(temp, data)
    return path


def atomic_write_json(path: str, payload) -> str:
    """`atomic_write` of `payload` as indented JSON with a final newline."""
    return atomic_write(path, json.dumps(payload, indent=2) + "\n")


@contextlib.contextmanager
def staged_folder(final: str, *, replace: bool = False) -> Iterator[str]:
    """Yields a hidden folder beside `final` to write into; renames it to `final` at the end.

    Readers (TF Serving watching a version folder, say) see no folder, then the whole one.
    If the body raises, the staged folder is deleted and `final` is untouched. With
    `replace`, an existing `final` is moved aside, the new folder renamed in, and the old one
    deleted; without it an existing non-empty `final` raises `OutputExistsError` before the
    rename (callers check first with `check_no_overwrite`, so no work is wasted).
    """
    parent = os.path.dirname(final.rstrip("/"))
    makedirs(parent)
    staging = os.path.join(parent, f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    makedirs(staging)
    try:
        yield staging
        publish_folder(staging, final, replace=replace)
    except BaseException:
        with contextlib.suppress(Exception):
            remove_tree(staging)
        raise


def _is_empty_dir(path: str) -> bool:
    return isdir(path) and not list_dir(path)


class SetAside:
    """Moves entries of `folder` into the folder `aside` and later deletes or restores them.

    The output-folder swap: `move` the previous outputs aside before writing new ones; when
    the new ones are complete, `discard` deletes the old; if writing fails, `restore` deletes
    what was written at each moved name and renames the old entries back. A caller that names
    `aside` itself (not hidden under `TEMP_PREFIX`) can tell a user where a killed run left
    them.
    """

    def __init__(self, folder: str, aside: str):
        self.folder = folder
        self.aside = aside
        self.moved: list[str] = []

    def move(self, names: Iterable[str]) -> None:
        """Renames each of `names` (files or folders) from `folder` into `aside`, in order."""
        makedirs(self.aside)
        for name in names:
            _rename_folder(os.path.join(self.folder, name), os.path.join(self.aside, name))
            self.moved.append(name)

    def discard(self) -> None:
        """The new entries are in place: deletes the old ones."""
        remove_tree(self.aside)
        self.moved = []

    def restore(self) -> None:
        """Writing failed: deletes what is at each moved name and puts the old entry back."""
        for name in self.moved:
            remove_tree(os.path.join(self.folder, name))
            _rename_folder(os.path.join(self.aside, name), os.path.join(self.folder, name))
        remove_tree(self.aside)
        self.moved = []


def publish_folder(staging: str, final: str, *, replace: bool = False) -> None:
    """Renames the finished folder `staging` to `final` (see `staged_folder`)."""
    if exists(final) and not _is_empty_dir(final):
        if not replace:
            raise OutputExistsError(f"{final} already exists and is not empty")
        parent, name = os.path.split(final.rstrip("/"))
        old = SetAside(parent, os.path.join(parent, f"{TEMP_PREFIX}old-{uuid.uuid4().hex}"))
        old.move([name])
        try:
            _rename_folder(staging, final)
        except BaseException:
            old.restore()
            raise
        old.discard()
        return
    if exists(final):
        remove_tree(final)  # an empty folder: nothing in it to lose
    _rename_folder(staging, final)


def publish_entries(
    staging: str, target_dir: str, names: Sequence[str], *, replace: bool = False
) -> None:
    """Moves each of `names` (files or folders) from `staging` into `target_dir`, in order.

    The output-folder swap of a tool whose outputs share a folder with other files (an
    evaluation's reports beside the user's): the work is done in a hidden staging folder and
    each entry renamed into place at the end, folders whole (`publish_folder`), so a failed
    run leaves nothing behind. Names missing from `staging` are skipped. An existing target
    is replaced only with `replace`, else `OutputExistsError`.
    """
    for name in names:
        source, target = os.path.join(staging, name), os.path.join(target_dir, name)
        if not exists(source):
            continue
        if isdir(source):
            publish_folder(source, target, replace=replace)
        elif exists(target) and not replace:
            raise OutputExistsError(f"{target} already exists")
        else:
            rename_over(source, target)


def _rename_folder(source: str, target: str) -> None:
    if is_remote(source) or is_remote(target):
        gfile().rename(source, target, overwrite=False)
    else:
        os.rename(source, target)


def existing(paths: Iterable[str]) -> list[str]:
    """The paths among `paths` that exist (as files, folders or links)."""
    return [path for path in paths if exists(path)]


def check_no_overwrite(
    paths: Sequence[str],
    *,
    overwrite: bool,
    where: str | None = None,
    flag: str = "--overwrite",
) -> list[str]:
    """THE no-overwrite rule: refuses to replace existing files unless `overwrite`.

    Args:
      paths: every file (or folder) the run is about to write.
      overwrite: the user passed `flag`.
      where: the folder they are in, for the message, e.g. ``--output=out/``; None names
        each path in full.
      flag: the flag that allows replacing them.

    Returns:
      The paths that exist (they will be replaced: `overwrite` was given).

    Raises:
      OutputExistsError: some exist and `overwrite` is False; the message names up to
        three of them and says how many there are.
    """
    found = existing(paths)
    if found and not overwrite:
        if where is None:
            shown = ", ".join(printable(p) for p in found[:3])
        else:
            shown = ", ".join(printable(os.path.basename(p.rstrip("/")) or p) for p in found[:3])
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        them = "them" if len(found) > 1 else "it"
        what = f"{where} already has {shown}{more}" if where else f"{shown}{more} already exists"
        raise OutputExistsError(
            f"{what}, which this run did not create; pass {flag} to replace {them}, or choose "
            "another output"
        )
    return found


def no_space(error: BaseException) -> bool:
    """True if `error` is a full disk (or quota) error."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def read_bytes(path: str) -> bytes:
    """The whole content of a local or remote file."""
    if is_remote(path):
        with gfile().GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()
