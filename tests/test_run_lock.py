"""run_lock: one live writer per folder, on local disks and on non-local tf.io.gfile paths.

`ram://` is TensorFlow's in-memory file system: it has no exclusive create, so it exercises
the same code path as `gs://`.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid

import pytest
import tensorflow as tf
from absl import logging

from dlss_dist import files, run_lock


def _wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def _write_lock(folder, **overrides):
    info = {
        "tool": "dlss-train",
        "owner": "alice",
        "host": "some-other-host",
        "pid": 4242,
        "token": "abc",
        "started": time.time(),
        "heartbeat": time.time(),
    }
    info.update(overrides)
    tf.io.gfile.makedirs(folder)
    path = run_lock.lock_path(folder)
    if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)  # ram:// does not truncate a file opened for writing.
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(info))
    return info


@pytest.fixture(params=["local", "ram"])
def folder(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "model")
    return f"ram://run_lock_test/{uuid.uuid4().hex}/model"


def test_acquire_writes_owner_host_pid_and_release_removes(folder):
    lock = run_lock.RunLock(folder, "dlss-train", settle_seconds=0)
    with lock:
        info = run_lock.read_lock(folder)
        assert info.tool == "dlss-train"
        assert info.host == socket.gethostname()
        assert info.pid == os.getpid()
        assert info.token == lock.info.token
    assert not tf.io.gfile.exists(run_lock.lock_path(folder))
    assert run_lock.read_lock(folder) is None


def test_live_lock_refuses_a_second_run_naming_the_owner(folder):
    _write_lock(folder)
    with pytest.raises(run_lock.LockHeldError) as raised:
        run_lock.RunLock(folder, "dlss-train", settle_seconds=0).acquire()
    message = str(raised.value)
    assert "dlss-train" in message and "alice" in message
    assert "some-other-host" in message and "4242" in message
    # The refused run left the holder's lock alone.
    assert run_lock.read_lock(folder).token == "abc"


def test_second_lock_in_the_same_process_is_refused(folder):
    with (
        run_lock.RunLock(folder, "dlss-train", settle_seconds=0),
        pytest.raises(run_lock.LockHeldError, match=str(os.getpid())),
    ):
        run_lock.RunLock(folder, "dlss-preprocess", settle_seconds=0).acquire()
    # Released: a third one may take it.
    with run_lock.RunLock(folder, "dlss-train", settle_seconds=0):
        pass


def test_stale_heartbeat_is_taken_over_with_a_warning(folder, monkeypatch):
    _write_lock(folder, heartbeat=time.time() - 3600)
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda fmt, *args: warnings.append(fmt % args))
    with run_lock.RunLock(folder, "dlss-train", settle_seconds=0) as lock:
        assert run_lock.read_lock(folder).token == lock.info.token
    assert any("Taking over" in w and "alice" in w for w in warnings), warnings


def test_dead_process_on_this_host_is_stale(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(finished.stdout)
    folder = str(tmp_path / "model")
    _write_lock(folder, host=socket.gethostname(), pid=dead_pid)
    with run_lock.RunLock(folder, "dlss-train") as lock:
        assert run_lock.read_lock(folder).token == lock.info.token


def test_same_host_and_pid_is_an_earlier_incarnation(tmp_path):
    # A container restarted in the same pod: same host name, same pid (often 1).
    folder = str(tmp_path / "model")
    _write_lock(folder, host=socket.gethostname(), pid=os.getpid())
    with run_lock.RunLock(folder, "dlss-train") as lock:
        assert run_lock.read_lock(folder).token == lock.info.token


def test_heartbeat_is_refreshed(folder):
    with run_lock.RunLock(
        folder, "dlss-train", heartbeat_seconds=0.05, stale_after_seconds=10, settle_seconds=0
    ) as lock:
        first = run_lock.read_lock(folder).heartbeat
        _wait_for(lambda: run_lock.read_lock(folder).heartbeat > first)
        assert run_lock.read_lock(folder).token == lock.info.token
        assert not lock.lost


def test_a_taken_over_lock_is_reported_lost_and_not_removed(folder):
    # A long heartbeat: the test calls refresh() itself, so no thread races the usurper.
    lock = run_lock.RunLock(folder, "dlss-train", heartbeat_seconds=1000, stale_after_seconds=2000)
    lock.settle_seconds = 0
    lock.acquire()
    try:
        assert lock.refresh() and not lock.lost
        _write_lock(folder, token="usurper")
        assert not lock.refresh()
        assert lock.lost
    finally:
        lock.release()
    # Release must not delete the new holder's lock.
    assert run_lock.read_lock(folder).token == "usurper"


def test_unreadable_lock_file_blocks_rather_than_being_deleted(folder):
    tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(run_lock.lock_path(folder), "w") as f:
        f.write("{not json")
    with pytest.raises(run_lock.LockHeldError, match="unreadable"):
        run_lock.RunLock(folder, "dlss-train", settle_seconds=0).acquire()
    assert tf.io.gfile.exists(run_lock.lock_path(folder))


def test_reader_does_not_need_the_lock(folder):
    with run_lock.RunLock(folder, "dlss-train", settle_seconds=0):
        holder = run_lock.read_lock(folder)
        assert dataclasses.asdict(holder)["tool"] == "dlss-train"


def test_settings_are_validated():
    with pytest.raises(ValueError, match="heartbeat_seconds"):
        run_lock.RunLock("x", "t", heartbeat_seconds=0)
    with pytest.raises(ValueError, match="stale_after_seconds"):
        run_lock.RunLock("x", "t", heartbeat_seconds=10, stale_after_seconds=5)


_HOLDER = """
import sys, time
from dlss_dist import run_lock
lock = run_lock.RunLock(sys.argv[1], "dlss-train", heartbeat_seconds=0.2)
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""


def test_another_live_process_is_refused_then_released(tmp_path):
    folder = str(tmp_path / "model")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, folder],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_lock.LockHeldError, match=f"pid {holder.pid}"):
            run_lock.RunLock(folder, "dlss-train").acquire()
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    with run_lock.RunLock(folder, "dlss-train"):
        pass


def _full_disk_write(path, data):
    """The file plumbing's local write on a full disk: the file is created, nothing written."""
    open(path, "wb").close()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_leaves_no_lock_and_the_error_names_the_file(tmp_path, monkeypatch):
    # Issue 19 case 4: a full disk at lock time left a 0-byte run.lock that blocked the folder.
    folder = str(tmp_path / "model")
    monkeypatch.setattr(files, "_write_local", _full_disk_write)
    with pytest.raises(OSError, match="No space left on device") as raised:
        run_lock.RunLock(folder, "dlss-train").acquire()
    monkeypatch.undo()
    assert run_lock.lock_path(folder) in str(raised.value)
    assert raised.value.errno == errno.ENOSPC
    assert os.listdir(folder) == []  # no empty run.lock, no staging file
    with run_lock.RunLock(folder, "dlss-train"):  # space freed: the next run goes ahead
        pass


@pytest.mark.parametrize("content", ["", "{not json", '{"tool": "dlss-train"}'])
def test_an_old_unreadable_lock_is_taken_over_with_a_warning(tmp_path, monkeypatch, content):
    # Issue 19 case 5: an empty or garbage lock file was never taken over, however old.
    folder = str(tmp_path / "model")
    os.makedirs(folder)
    path = run_lock.lock_path(folder)
    with open(path, "w") as f:
        f.write(content)
    old = time.time() - 3600
    os.utime(path, (old, old))
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda fmt, *args: warnings.append(fmt % args))
    with run_lock.RunLock(folder, "dlss-train") as lock:
        assert run_lock.read_lock(folder).token == lock.info.token
    assert any("Taking over" in w and path in w and "unreadable" in w for w in warnings), warnings


def test_a_recent_unreadable_lock_says_what_to_do(tmp_path):
    folder = str(tmp_path / "model")
    os.makedirs(folder)
    path = run_lock.lock_path(folder)
    open(path, "w").close()
    with pytest.raises(run_lock.LockHeldError) as raised:
        run_lock.RunLock(folder, "dlss-train").acquire()
    message = str(raised.value)
    assert path in message and "delete" in message and "60 s old" in message
    assert os.path.exists(path)


def test_a_live_lock_message_names_the_lock_file(folder):
    _write_lock(folder)
    with pytest.raises(run_lock.LockHeldError, match=re.escape(run_lock.lock_path(folder))):
        run_lock.RunLock(folder, "dlss-train", settle_seconds=0).acquire()


def test_a_heartbeat_on_a_full_disk_leaves_the_lock_whole(tmp_path, monkeypatch):
    folder = str(tmp_path / "model")
    lock = run_lock.RunLock(folder, "dlss-train", heartbeat_seconds=1000, stale_after_seconds=2000)
    with lock:
        monkeypatch.setattr(files, "_write_local", _full_disk_write)
        assert lock.refresh() and not lock.lost  # a transient error does not stop the run
        monkeypatch.undo()
        assert run_lock.read_lock(folder).token == lock.info.token
        assert sorted(os.listdir(folder)) == ["run.lock"]
