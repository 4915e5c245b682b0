"""Where inputs come from: one class per ``--source``, registered in :data:`SOURCES`.

A source owns its flags (the folders it reads), their pre-flight checks, the Beam steps
that list its inputs as :class:`SourceItem`\\ s with a split, and the name of the
degradation that made its LR images. Adding a source is one class here.

Listing accounts for every file (issue 13): on local disks symlinks are followed, with
loop protection; dangling links, symlink loops, unreadable folders, special files
(FIFOs, devices, sockets: never opened) and names that are not UTF-8 each become an
input rejected with its own reason instead of an abort, a hang or silence.
"""

from __future__ import annotations

import hashlib
import math
import os
import posixpath
import stat
from collections.abc import Iterator
from typing import ClassVar, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.images_to_tfrecords.errors import PreflightError
from beam_jobs.images_to_tfrecords.options import SOURCE_FOLDERS
from dlss_dist import files, imaging

SPLIT_NAMES = ("train", "validation", "test")
UNASSIGNED_SPLIT = "unassigned"  # CelebA files that the partition file does not list
DEGRADATION_PAIRED = "paired_external"  # LR files come from the user, not from imaging.py
CELEBA_IMAGES = "img_align_celeba"
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_SPLITS = {"0": "train", "1": "validation", "2": "test"}


class SourceItem(NamedTuple):
    """One input: a file (or an LR/HR pair) with its stable key and split.

    ``reject_reason``/``reject_message`` are set when the input is already known to be
    unusable while listing (e.g. an LR file without its HR file, a dangling link).
    """

    key: str
    split: str
    hr_path: str | None
    lr_path: str | None = None
    reject_reason: str | None = None
    reject_message: str | None = None


class Listed(NamedTuple):
    """A file found under a source folder: its key (relative path) and path, or why not."""

    key: str
    path: str
    reject_reason: str | None = None
    reject_message: str | None = None


def stable_fraction(text: str, salt: str) -> float:
    """A number in [0, 1) that depends only on ``text`` and ``salt`` (not on the process)."""
    digest = hashlib.sha256(f"{salt}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_for_key(key: str, split_ratios: tuple[float, float, float]) -> str:
    """Assigns train/validation/test from a stable hash of ``key``.

    ``split_ratios`` need not be normalised; a zero ratio means the split gets nothing.
    """
    total = sum(split_ratios)
    if not math.isfinite(total):  # e.g. 1e308,1e308,1e308: the same shares, scaled down
        largest = max(split_ratios)
        split_ratios = tuple(ratio / largest for ratio in split_ratios)
        total = sum(split_ratios)
    point = stable_fraction(key, "split") * total
    cumulative = 0.0
    for name, ratio in zip(SPLIT_NAMES, split_ratios, strict=True):
        cumulative += ratio
        if point < cumulative:
            return name
    return "test" if split_ratios[2] > 0 else ("validation" if split_ratios[1] > 0 else "train")


def is_local(path: str) -> bool:
    return not files.is_remote(path)


def normalize_root(path: str) -> str:
    """Absolute for local paths; no trailing separator (keys are computed from it)."""
    if is_local(path):
        return os.path.abspath(path)
    return path.rstrip("/") if len(path) > 1 else path


def _printable(text: str) -> str:
    """``text`` with bytes that are not UTF-8 shown as ``\\xNN`` (names from os.* APIs)."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: undecodable bytes in a file name
        return False
    return True


def _candidate(name: str) -> bool:
    """A visible name with an image extension (the only files the job reads)."""
    return not name.startswith(".") and imaging.is_image_name(name)


def walk_local(root: str, recursive: bool = True) -> Iterator[Listed]:
    """Every image file under a local ``root``, and every one that cannot be read, once.

    Symlinks are followed; a link back to a folder being walked (a loop) is rejected
    as ``symlink_loop``. Hidden entries and files without an image extension are skipped
    (they are not inputs). Rejects: ``broken_link``, ``symlink_loop``, ``unreadable``
    (a folder that cannot be listed, or an entry that cannot be examined),
    ``not_a_regular_file`` (FIFO, device, socket with an image name; never opened) and
    ``bad_file_name`` (not UTF-8; a folder with such a name is rejected whole).
    """
    root_stat = os.stat(root)
    stack = [("", root, frozenset({(root_stat.st_dev, root_stat.st_ino)}))]
    while stack:
        prefix, folder, ancestors = stack.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as e:
            yield Listed(
                _printable(prefix or "./"),
                _printable(folder),
                "unreadable",
                f"the folder cannot be listed: {e.strerror or e}",
            )
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            key = prefix + entry.name
            shown = _printable(key)
            path = _printable(entry.path)
            try:
                is_link = entry.is_symlink()
                info = os.stat(entry.path)  # follows links; never opens the file
            except FileNotFoundError:
                if is_link and (_candidate(entry.name) or not posixpath.splitext(entry.name)[1]):
                    target = _printable(os.readlink(entry.path))
                    yield Listed(
                        shown,
                        path,
                        "broken_link",
                        f"the link points to {target}, which does not exist",
                    )
                continue
            except OSError as e:
                reason = "symlink_loop" if e.errno == 40 else "unreadable"  # ELOOP
                if _candidate(entry.name) or not posixpath.splitext(entry.name)[1]:
                    yield Listed(shown, path, reason, f"cannot examine it: {e.strerror or e}")
                continue
            if stat.S_ISDIR(info.st_mode):
                if not recursive:
                    continue
                if not _is_utf8(entry.name):
                    yield Listed(
                        shown + "/",
                        path,
                        "bad_file_name",
                        "the folder's name is not UTF-8; rename it to include it",
                    )
                    continue
                identity = (info.st_dev, info.st_ino)
                if identity in ancestors:
                    yield Listed(
                        shown + "/",
                        path,
                        "symlink_loop",
                        "the link points back to a folder that contains it",
                    )
                    continue
                stack.append((key + "/", entry.path, ancestors | {identity}))
                continue
            if not _candidate(entry.name):
                continue
            if not _is_utf8(key):
                yield Listed(
                    shown,
                    path,
                    "bad_file_name",
                    "the file name is not UTF-8; rename the file to include it",
                )
            elif not stat.S_ISREG(info.st_mode):
                yield Listed(
                    shown,
                    path,
                    "not_a_regular_file",
                    f"a {_file_kind(info.st_mode)}, not a regular file (not opened)",
                )
            else:
                yield Listed(key, entry.path)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def list_remote(root: str, recursive: bool = True) -> Iterator[Listed]:
    """Image files under ``root`` on any Beam filesystem (``gs://``, ...): no links there."""
    pattern = posixpath.join(root, "**" if recursive else "*")
    prefix = root.rstrip("/") + "/"
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        key = metadata.path[len(prefix) :]
        if any(part.startswith(".") for part in key.split("/")) or not _candidate(key):
            continue
        yield Listed(key, metadata.path)


def list_images(root: str, recursive: bool = True) -> Iterator[Listed]:
    """:func:`walk_local` or :func:`list_remote`, by the kind of ``root``."""
    if is_local(root):
        return walk_local(root, recursive)
    return list_remote(root, recursive)


class _ListFiles(beam.DoFn):
    def __init__(self, key_prefix: str, recursive: bool):
        self._key_prefix = key_prefix
        self._recursive = recursive
        self._listed = Metrics.counter("dlss_preprocess", "files_listed")

    def process(self, root: str):
        for listed in list_images(root, self._recursive):
            self._listed.inc()
            yield listed._replace(key=self._key_prefix + listed.key)


class ListImageFiles(beam.PTransform):
    """Every image file under ``root`` as a :class:`Listed` (keys prefixed by ``key_prefix``)."""

    def __init__(self, root: str, key_prefix: str = "", recursive: bool = True):
        super().__init__()
        self._root = root
        self._key_prefix = key_prefix
        self._recursive = recursive

    def expand(self, pbegin):
        return (
            pbegin
            | "Root" >> beam.Create([self._root])
            | "List" >> beam.ParDo(_ListFiles(self._key_prefix, self._recursive))
        )


def _check_folder(flag: str, root: str) -> None:
    """Pre-flight: ``root`` exists, is a readable folder and holds at least one image."""
    if is_local(root):
        if not os.path.exists(root):
            raise PreflightError(f"--{flag}={root} does not exist")
        if not os.path.isdir(root):
            raise PreflightError(f"--{flag}={root} is not a folder")
        if not os.access(root, os.R_OK | os.X_OK):
            raise PreflightError(f"--{flag}={root} cannot be read (permission denied)")
    elif not FileSystems.exists(root):
        raise PreflightError(f"--{flag}={root} does not exist")
    if next(iter(list_images(root)), None) is None:
        raise PreflightError(
            f"--{flag}={root} holds no image files ({', '.join(sorted(imaging.IMAGE_EXTENSIONS))})"
        )


class Source:
    """One kind of input. Subclasses set the class attributes and :meth:`read`."""

    name: ClassVar[str]
    # flag (without --) -> help, from options.SOURCE_FOLDERS; each is JobOptions.inputs[flag].
    folders: ClassVar[dict[str, str]]
    degradation: ClassVar[str] = imaging.DEGRADATION
    uses_split_ratios: ClassVar[bool] = True
    supports_patches: ClassVar[bool] = False

    def check(self, inputs: dict[str, str]) -> None:
        """Pre-flight checks of the source's folders (already normalised)."""
        for flag, root in inputs.items():
            _check_folder(flag, root)

    def read(self, inputs: dict[str, str], split_ratios) -> beam.PTransform:
        """The steps that list every input as a :class:`SourceItem`."""
        raise NotImplementedError

    def list_inputs(self, inputs: dict[str, str]) -> Iterator[Listed]:
        """The input files, one per input, listed lazily outside Beam (to count them)."""
        (root,) = inputs.values()
        return list_images(root)


class _AssignSplit(beam.DoFn):
    def __init__(self, split_ratios):
        self._split_ratios = tuple(split_ratios)

    def process(self, listed: Listed):
        split = split_for_key(listed.key, self._split_ratios)
        yield SourceItem(
            listed.key, split, listed.path, None, listed.reject_reason, listed.reject_message
        )


class FolderSource(Source):
    """``--source=folder``: every image under ``input_dir``, split by a hash of its key."""

    name = "folder"
    folders = SOURCE_FOLDERS["folder"]
    supports_patches = True

    def read(self, inputs, split_ratios):
        return _ReadFolder(inputs["input_dir"], split_ratios)


class _ReadFolder(beam.PTransform):
    def __init__(self, root, split_ratios):
        super().__init__()
        self._root = root
        self._split_ratios = split_ratios

    def expand(self, pbegin):
        return (
            pbegin
            | "ListImages" >> ListImageFiles(self._root)
            | "AssignSplit" >> beam.ParDo(_AssignSplit(self._split_ratios))
        )


class _PairFiles(beam.DoFn):
    """Joins LR and HR files by relative path; a file without its partner is rejected."""

    def __init__(self, split_ratios):
        self._split_ratios = tuple(split_ratios)

    def process(self, element):
        key, grouped = element
        lr = sorted(grouped["lr"])
        hr = sorted(grouped["hr"])
        split = split_for_key(key, self._split_ratios)
        lr = lr[0] if lr else None
        hr = hr[0] if hr else None
        if hr is None:
            yield SourceItem(
                key, split, None, lr.path, "missing_hr", "LR file has no HR file with that path"
            )
        elif lr is None:
            yield SourceItem(
                key, split, hr.path, None, "missing_lr", "HR file has no LR file with that path"
            )
        elif hr.reject_reason or lr.reject_reason:
            side, bad = ("HR", hr) if hr.reject_reason else ("LR", lr)
            yield SourceItem(
                key,
                split,
                hr.path,
                lr.path,
                bad.reject_reason,
                f"{side} file: {bad.reject_message}",
            )
        else:
            yield SourceItem(key, split, hr.path, lr.path)


class PairedSource(Source):
    """``--source=paired``: LR and HR folders matched by relative path."""

    name = "paired"
    folders = SOURCE_FOLDERS["paired"]
    degradation = DEGRADATION_PAIRED

    def read(self, inputs, split_ratios):
        return _ReadPaired(inputs["lr_dir"], inputs["hr_dir"], split_ratios)

    def list_inputs(self, inputs):
        return list_images(inputs["hr_dir"])


class _ReadPaired(beam.PTransform):
    def __init__(self, lr_dir, hr_dir, split_ratios):
        super().__init__()
        self._lr_dir = lr_dir
        self._hr_dir = hr_dir
        self._split_ratios = split_ratios

    def expand(self, pbegin):
        def keyed(side):
            return (
                pbegin
                | f"List{side.upper()}" >> ListImageFiles(getattr(self, f"_{side}_dir"))
                | f"Key{side.upper()}" >> beam.Map(lambda listed: (listed.key, listed))
            )

        return (
            {"lr": keyed("lr"), "hr": keyed("hr")}
            | "JoinByPath" >> beam.CoGroupByKey()
            | "Pair" >> beam.ParDo(_PairFiles(self._split_ratios))
        )


def parse_partition_line(line: str) -> tuple[str, str] | None:
    """``"000001.jpg 0"`` → ``("img_align_celeba/000001.jpg", "train")``; blank → None.

    Raises:
      ValueError: saying what is wrong with the line.
    """
    fields = line.lstrip("\ufeff").split()
    if not fields:
        return None
    if len(fields) != 2 or fields[1] not in CELEBA_SPLITS:
        raise ValueError(
            f"expected '<file>.jpg 0|1|2' (0 train, 1 validation, 2 test), got {line!r}"
        )
    return f"{CELEBA_IMAGES}/{fields[0]}", CELEBA_SPLITS[fields[1]]


def check_partition_file(path: str) -> int:
    """Pre-flight: every line parses and no image is in two splits; returns the line count.

    A UTF-8 byte-order mark is tolerated. Raises PreflightError naming the line.
    """
    seen: dict[str, tuple[int, str]] = {}
    with FileSystems.open(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise PreflightError(f"{path}, line {number}: not UTF-8 text ({e.reason})") from e
            try:
                parsed = parse_partition_line(line)
            except ValueError as e:
                raise PreflightError(f"{path}, line {number}: {e}") from e
            if parsed is None:
                continue
            key, split = parsed
            if key in seen and seen[key][1] != split:
                raise PreflightError(
                    f"{path}, line {number}: {key} is put in {split}, but line {seen[key][0]} "
                    f"put it in {seen[key][1]}; an image must be in one split"
                )
            seen.setdefault(key, (number, split))
    return len(seen)


class _JoinPartition(beam.DoFn):
    """Joins CelebA files with the partition file's split of each."""

    def process(self, element):
        key, grouped = element
        files = sorted(grouped["file"])
        splits = sorted(set(grouped["partition"]))  # one, checked before the job ran
        if not splits:
            path = files[0].path
            yield SourceItem(
                key,
                UNASSIGNED_SPLIT,
                path,
                None,
                "unlisted",
                f"the file is not listed in {CELEBA_PARTITION}",
            )
        elif not files:
            yield SourceItem(
                key, splits[0], None, None, "missing_file", f"listed in {CELEBA_PARTITION}"
            )
        else:
            listed = files[0]
            yield SourceItem(
                key, splits[0], listed.path, None, listed.reject_reason, listed.reject_message
            )


def _parse_partition(line: str):
    parsed = parse_partition_line(line)
    if parsed is not None:
        yield parsed


class CelebASource(Source):
    """``--source=celeba``: ``img_align_celeba/*.jpg`` split by ``list_eval_partition.txt``."""

    name = "celeba"
    folders = SOURCE_FOLDERS["celeba"]
    uses_split_ratios = False

    def check(self, inputs):
        root = inputs["celeba_dir"]
        images = posixpath.join(root, CELEBA_IMAGES)
        try:
            _check_folder("celeba_dir", images)
        except PreflightError as e:
            raise PreflightError(
                f"no images in {images}: --celeba_dir must hold the aligned CelebA images in "
                f"{CELEBA_IMAGES}/ (img_align_celeba.zip, extracted) ({e})"
            ) from e
        partition = posixpath.join(root, CELEBA_PARTITION)
        if not FileSystems.exists(partition):
            raise PreflightError(
                f"{partition} is missing: CelebA's splits come from {CELEBA_PARTITION} "
                "(Eval/ in the CelebA release); put it there"
            )
        check_partition_file(partition)

    def read(self, inputs, split_ratios):
        return _ReadCelebA(inputs["celeba_dir"])

    def list_inputs(self, inputs):
        return list_images(posixpath.join(inputs["celeba_dir"], CELEBA_IMAGES), recursive=False)


class _ReadCelebA(beam.PTransform):
    def __init__(self, root):
        super().__init__()
        self._root = root

    def expand(self, pbegin):
        files = (
            pbegin
            | "ListImages"
            >> ListImageFiles(
                posixpath.join(self._root, CELEBA_IMAGES), f"{CELEBA_IMAGES}/", recursive=False
            )
            | "KeyFiles" >> beam.Map(lambda listed: (listed.key, listed))
        )
        partition = (
            pbegin
            | "ReadPartition" >> beam.io.ReadFromText(posixpath.join(self._root, CELEBA_PARTITION))
            | "ParsePartition" >> beam.FlatMap(_parse_partition)
        )
        return (
            {"file": files, "partition": partition}
            | "JoinPartition" >> beam.CoGroupByKey()
            | "Split" >> beam.ParDo(_JoinPartition())
        )


SOURCES: dict[str, Source] = {s.name: s for s in (FolderSource(), PairedSource(), CelebASource())}
