"""Plumbing lives on the ground floor, once: atomic writes, temp-then-rename, output-folder
swaps and "is this path remote" in `dlss_dist/files.py`; TFRecord framing (the CRCs and the
frame layout) in `dlss_dist/data/schema.py`. This test reads the source of `dlss_dist/`,
`beam_jobs/` and `bench/` and fails on a new copy anywhere else; the few exceptions name their
reason."""

from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("dlss_dist", "beam_jobs", "bench")
FILES = "dlss_dist/files.py"
SCHEMA = "dlss_dist/data/schema.py"

# (file, what) -> why it is not `files.py`'s.
EXCEPTIONS = {
    (
        "dlss_dist/run_lock.py",
        "gfile rename",
    ): "a lock's exclusive create on a remote file system: rename without overwrite",
    (
        "beam_jobs/images_to_tfrecords/job.py",
        "FileSystems rename",
    ): "the dataset swap through Beam's filesystems: the job runs without TensorFlow",
    (
        "beam_jobs/images_to_tfrecords/shards.py",
        "FileSystems rename",
    ): "shards renamed into place by Beam workers, which never import TensorFlow",
}


def _sources():
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(REPO, package)):
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    yield os.path.relpath(path, REPO).replace(os.sep, "/"), path


def _dotted(node: ast.AST) -> str:
    """`os.path.join` for an attribute chain; calls in the chain show as `name()`."""
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return f"{_dotted(node.func)}()"
    return "?"


def plumbing_in(tree: ast.AST) -> list[tuple[str, int]]:
    """(what, line) for each piece of file or TFRecord plumbing written out in `tree`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in (
                "os.replace",
                "os.rename",
                "os.fsync",
                "tempfile.mkstemp",
            ):
                found.append((name, node.lineno))
            elif name.endswith(".rename") and "gfile" in name:
                found.append(("gfile rename", node.lineno))
            elif name.endswith(".rename") and "FileSystems" in name:
                found.append(("FileSystems rename", node.lineno))
            elif name.endswith(".listdir") and "gfile" in name:
                found.append(("gfile listdir", node.lineno))
            elif name.startswith("struct.") and node.args:
                layout = node.args[0]
                if isinstance(layout, ast.Constant) and layout.value in ("<Q", "<I"):
                    found.append(("TFRecord frame field", node.lineno))
            elif ("crc32c" in name.lower() or "CrcFun" in name) and not name.startswith("schema."):
                found.append(("CRC32C", node.lineno))
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value == "://" for o in operands):
                found.append(('"://" test', node.lineno))
    return found


def test_the_checker_finds_each_kind_of_plumbing():
    source = """
import os, struct, tempfile
os.replace(a, b)
tf.io.gfile.rename(a, b)
files.gfile().rename(a, b)
FileSystems.rename([a], [b])
tempfile.mkstemp()
struct.pack("<Q", n)
crcmod.predefined.mkPredefinedCrcFun("crc-32c")
remote = "://" in path
"""
    kinds = [what for what, _ in plumbing_in(ast.parse(source))]
    assert kinds == [
        "os.replace",
        "gfile rename",
        "gfile rename",
        "FileSystems rename",
        "tempfile.mkstemp",
        "TFRecord frame field",
        "CRC32C",
        '"://" test',
    ]


def test_file_and_tfrecord_plumbing_is_written_once():
    repeated = []
    for relative, path in _sources():
        if relative == FILES:
            continue
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for what, line in plumbing_in(tree):
            if relative == SCHEMA and what in ("TFRecord frame field", "CRC32C"):
                continue
            if (relative, what) not in EXCEPTIONS:
                repeated.append(f"{relative}:{line}: {what}")
    assert repeated == [], "use dlss_dist.files / dlss_dist.data.schema instead:\n" + "\n".join(
        repeated
    )


def test_every_exception_is_still_needed():
    used = set()
    for relative, path in _sources():
        with open(path) as f:
            used.update((relative, what) for what, _ in plumbing_in(ast.parse(f.read(), path)))
    assert set(EXCEPTIONS) <= used, set(EXCEPTIONS) - used
