"""One live writer per folder: a lock file with owner, host, pid and a heartbeat.

A tool that writes into a folder (dlss-train into a model directory, dlss-preprocess into a
dataset folder) holds `RunLock(folder, tool)` for the length of its run. A second writer is
refused with `LockHeldError`, whose message names the holder. Read-only tools never take the
lock (they may call `read_lock` to say who is writing).

The lock is one small JSON file, `<folder>/run.lock`, written through the ground floor's file
plumbing (`dlss_dist.files`): `os` on local disks and shared volumes, `tf.io.gfile` elsewhere
(`gs://`, ...). TensorFlow is imported only for such a remote folder: importing it takes
seconds, which a tool that needs no TensorFlow (dlss-preprocess) would otherwise pay for its
lock alone. Only what is particular to a lock lives here: the exclusive create (a hard link).

- **A lock file is never half-written**: its content is written to a staging file beside it
  first, which is then put in place in one step. If the disk is full, the staging file is
  removed and the error (`LockWriteError`) names the lock's path: no empty `run.lock` is left.
- **Creation is exclusive where the file system offers it**: on local paths (including NFS
  v3+ and most shared volumes) the staging file is hard-linked to `run.lock`, which fails if
  it exists. Other file systems have no such call in `tf.io.gfile`, so the staging file is
  renamed without overwrite and read back after `settle_seconds`; of two writers racing
  within that window, the one whose token is read back wins and the other is refused.
- **A heartbeat** thread rewrites the file's `heartbeat` timestamp every `heartbeat_seconds`.
  If it finds another token in the file (its lock was taken over), it logs an error and sets
  `lost`, which the holder checks at safe points.
- **A stale lock is taken over with a warning**, so a restarted pod resumes by itself: a lock
  is stale when its heartbeat is older than `stale_after_seconds`, or when it was written on
  this host by a process that no longer exists (or by this very pid: a container restarted
  in the same pod gets the same pid and hostname). A lock file that cannot be read (empty,
  garbage, written by an older tool or by a disk that filled up) is taken over with a warning
  once the file itself is older than `stale_after_seconds`; a younger one may be a lock being
  written, so it refuses, naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import getpass
import json
import os
import socket
import sys
import threading
import time
import uuid

from absl import logging

from dlss_dist import files

LOCK_FILE = "run.lock"
DEFAULT_HEARTBEAT_SECONDS = 15.0
DEFAULT_STALE_AFTER_SECONDS = 60.0

# Folders locked by this process: a second RunLock on one of them in the same process is
# refused too (the pid check below would otherwise call our own lock stale).
_held_in_this_process: set[str] = set()
_held_guard = threading.Lock()


@dataclasses.dataclass(frozen=True)
class LockInfo:
    """What a lock file says about its holder."""

    tool: str
    owner: str
    host: str
    pid: int
    token: str
    started: float  # Unix time the lock was taken.
    heartbeat: float  # Unix time of the holder's last heartbeat.

    def describe(self, now: float | None = None) -> str:
        age = (time.time() if now is None else now) - self.heartbeat
        return (
            f"{self.tool} (user {self.owner} on host {self.host}, pid {self.pid}, "
            f"last heartbeat {max(age, 0.0):.0f} s ago)"
        )


class LockHeldError(RuntimeError):
    """Another live run holds the folder's lock; `holder` says who (None: the file is
    unreadable, and `age` is how long ago it was last written)."""

    user_error = True  # the message says what to do: a command-line tool prints one line

    def __init__(
        self,
        folder: str,
        holder: LockInfo | None,
        stale_after_seconds: float,
        age: float | None = None,
    ):
        self.folder = folder
        self.holder = holder
        path = lock_path(folder)
        if holder is not None:
            message = (
                f"{folder} is in use by {holder.describe()}. Stop that run first, or use "
                f"another folder; if it died, its lock {path} is taken over once its "
                f"heartbeat is {stale_after_seconds:.0f} s old."
            )
        else:
            written = f", last written {age:.0f} s ago" if age else ""
            message = (
                f"{folder} is locked by {path}, which is unreadable (being written, or left "
                f"by a run that failed while writing it{written}). It is taken over once it "
                f"is {stale_after_seconds:.0f} s old; if no run uses {folder}, you may "
                f"delete {path} now."
            )
        super().__init__(message)


class LockWriteError(OSError):
    """The lock file could not be written (a full disk, no permission); nothing was left
    behind. The message names the lock file."""

    def __init__(self, path: str, error: BaseException):
        reason = getattr(error, "strerror", None) or getattr(error, "message", None) or error
        super().__init__(f"cannot write the lock file {path}: {reason}")
        self.errno = getattr(error, "errno", None)


def lock_path(folder: str) -> str:
    return os.path.join(folder, LOCK_FILE)


def _tf_errors(*names: str) -> tuple[type[BaseException], ...]:
    """TensorFlow's error classes `names` when TensorFlow is loaded; none otherwise (then
    nothing can raise them)."""
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    return tuple(getattr(errors, name) for name in names) if errors else ()


def _owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # A container user with no passwd entry.
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def read_lock(folder: str) -> LockInfo | None:
    """The current holder of `folder`'s lock, or None if nobody (or an unreadable file) holds it.

    A half-written or foreign file reads as None rather than raising: a reader must never be
    blocked by a lock.
    """
    try:
        raw = json.loads(files.read_text(lock_path(folder)))
        return LockInfo(**{field.name: raw[field.name] for field in dataclasses.fields(LockInfo)})
    except (FileNotFoundError, *_tf_errors("NotFoundError"), ValueError, KeyError, TypeError):
        return None


def _lock_age(folder: str) -> float | None:
    """Seconds since the lock file was last written; None if it is gone, 0.0 if its file
    system keeps no modification time (TF's ram://), so it never looks stale."""
    path = lock_path(folder)
    try:
        if files.is_remote(path):
            mtime = files.gfile().stat(path).mtime_nsec / 1e9
        else:
            mtime = os.stat(path).st_mtime
    except (OSError, *_tf_errors("NotFoundError")):
        return None
    return time.time() - mtime if mtime > 0 else 0.0


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Exists, owned by someone else.
        return True
    return True


class RunLock:
    """Holds `<folder>/run.lock` while a writing tool runs; a context manager.

        with RunLock(model_dir, "dlss-train"):
            ...  # raises LockHeldError on entry if another live run holds it

    Args:
      folder: the folder to lock (local path or any `tf.io.gfile` URL); created if missing.
      tool: the name shown to a refused second run, e.g. "dlss-train".
      heartbeat_seconds: how often the heartbeat is refreshed (> 0).
      stale_after_seconds: a heartbeat older than this is a dead run's (> heartbeat_seconds).
      settle_seconds: on file systems without exclusive create, how long to wait before
        reading the lock back to confirm it is ours.
    """

    def __init__(
        self,
        folder: str,
        tool: str,
        *,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS,
        settle_seconds: float = 1.0,
    ):
        if not heartbeat_seconds > 0:
            raise ValueError(f"heartbeat_seconds must be > 0, got {heartbeat_seconds}")
        if not stale_after_seconds > heartbeat_seconds:
            raise ValueError(
                f"stale_after_seconds ({stale_after_seconds}) must exceed heartbeat_seconds "
                f"({heartbeat_seconds}), or a live run's lock would look stale"
            )
        self.folder = folder
        self.tool = tool
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after_seconds = stale_after_seconds
        self.settle_seconds = settle_seconds
        self.path = lock_path(folder)
        self.info: LockInfo | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public -----------------------------------------------------------------------------

    def acquire(self) -> RunLock:
        """Takes the lock (a stale one with a warning) or raises LockHeldError."""
        key = self.folder if files.is_remote(self.folder) else os.path.abspath(self.folder)
        with _held_guard:
            if key in _held_in_this_process:
                holder = read_lock(self.folder)
                if holder is not None:
                    raise LockHeldError(self.folder, holder, self.stale_after_seconds)
            files.makedirs(self.folder)
            now = time.time()
            mine = LockInfo(
                tool=self.tool,
                owner=_owner(),
                host=socket.gethostname(),
                pid=os.getpid(),
                token=uuid.uuid4().hex,
                started=now,
                heartbeat=now,
            )
            for _ in range(3):  # A takeover can race another one; retry a little.
                if self._create(mine):
                    break
                holder = read_lock(self.folder)
                if holder is None:
                    age = _lock_age(self.folder)
                    if age is None:
                        continue  # Released between our attempt and the read: try again.
                    if age <= self.stale_after_seconds:
                        # Unreadable and recent: maybe a lock being written; treat as held.
                        raise LockHeldError(self.folder, None, self.stale_after_seconds, age)
                    logging.warning(
                        "Taking over the lock on %s: %s is unreadable and was last written "
                        "%.0f s ago (stale after %.0f s).",
                        self.folder,
                        self.path,
                        age,
                        self.stale_after_seconds,
                    )
                    self._remove_if_unreadable()
                    continue
                stale_reason = self._stale_reason(holder)
                if stale_reason is None:
                    raise LockHeldError(self.folder, holder, self.stale_after_seconds)
                logging.warning(
                    "Taking over the lock on %s from %s: %s.",
                    self.folder,
                    holder.describe(),
                    stale_reason,
                )
                self._remove_if_token(holder.token)
            else:
                raise LockHeldError(self.folder, read_lock(self.folder), self.stale_after_seconds)
            self.info = mine
            self.lost = False
            _held_in_this_process.add(key)
            self._key = key
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat, name=f"run-lock-heartbeat:{self.folder}", daemon=True
        )
        self._thread.start()
        return self

    def release(self) -> None:
        """Stops the heartbeat and removes the lock file if it is still ours."""
        if self.info is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self._remove_if_token(self.info.token)
        finally:
            with _held_guard:
                _held_in_this_process.discard(self._key)
            self.info = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -- internals --------------------------------------------------------------------------

    def _stale_reason(self, holder: LockInfo) -> str | None:
        age = time.time() - holder.heartbeat
        if age > self.stale_after_seconds:
            return (
                f"its heartbeat is {age:.0f} s old (stale after {self.stale_after_seconds:.0f} s)"
            )
        if holder.host == socket.gethostname():
            if holder.pid == os.getpid():
                return "it was written by an earlier process with this host name and pid"
            if not _process_exists(holder.pid):
                return f"process {holder.pid} no longer runs on this host"
        return None

    def _encode(self, info: LockInfo) -> str:
        return json.dumps(dataclasses.asdict(info), indent=2) + "\n"

    def _staging_path(self, info: LockInfo) -> str:
        # Not "run.lock.*": some file systems (TF's ram://) answer exists() by prefix.
        return os.path.join(self.folder, f".{LOCK_FILE}-{info.token}.tmp")

    def _write_staging(self, info: LockInfo) -> str:
        """Writes `info` to a staging file beside the lock and returns its path; on failure
        (a full disk) removes what was written and raises LockWriteError."""
        staging = self._staging_path(info)
        data = self._encode(info).encode()
        try:
            files.write_file(staging, data)
        except (OSError, *_tf_errors("OpError")) as error:
            with contextlib.suppress(OSError, *_tf_errors("OpError")):
                files.remove_file(staging)
            raise LockWriteError(self.path, error) from error
        return staging

    def _create(self, info: LockInfo) -> bool:
        """Creates the lock file whole if absent; True if it is now ours."""
        remote = files.is_remote(self.path)
        if remote and files.exists(self.path):
            return False
        staging = self._write_staging(info)
        if not remote:
            try:
                os.link(staging, self.path)  # Fails if the lock exists.
            except FileExistsError:
                return False
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise LockWriteError(self.path, error) from error
                return self._create_without_links(info)
            finally:
                with contextlib.suppress(OSError):
                    files.remove_file(staging)
            return True
        try:
            files.gfile().rename(staging, self.path, overwrite=False)
        except _tf_errors("AlreadyExistsError"):
            files.remove_file(staging)
            return False
        if self.settle_seconds > 0:
            time.sleep(self.settle_seconds)
        current = read_lock(self.folder)
        return current is not None and current.token == info.token

    def _create_without_links(self, info: LockInfo) -> bool:
        """Local file systems without hard links: exclusive create, removed again if the
        write fails, so a failed write leaves no lock behind."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self._encode(info).encode())
        except OSError as error:
            with contextlib.suppress(OSError):
                files.remove_file(self.path)
            raise LockWriteError(self.path, error) from error
        return True

    def _write(self, info: LockInfo) -> None:
        """Replaces the lock file's content in one step (rename over it)."""
        staging = self._write_staging(info)
        files.rename_over(staging, self.path)

    def _remove_if_unreadable(self) -> None:
        """Removes an unreadable lock file (after a last look: it may have just been
        replaced by a readable one, which is then left alone)."""
        if read_lock(self.folder) is not None:
            return
        files.remove_file(self.path)

    def _remove_if_token(self, token: str) -> None:
        current = read_lock(self.folder)
        if current is None or current.token != token:
            return
        files.remove_file(self.path)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            if not self.refresh():
                return

    def refresh(self) -> bool:
        """Refreshes the heartbeat now; False (and `lost` set) if the lock is no longer ours.

        The heartbeat thread calls this every `heartbeat_seconds`.
        """
        info = self.info
        if info is None:
            return False
        try:
            current = read_lock(self.folder)
            if current is None and files.exists(self.path):
                return True  # Caught mid-write by another writer: look again next beat.
            if current is None or current.token != info.token:
                self.lost = True
                logging.error(
                    "Lost the lock on %s: %s",
                    self.folder,
                    "it was removed"
                    if current is None
                    else f"it is now held by {current.describe()}",
                )
                return False
            info = dataclasses.replace(info, heartbeat=time.time())
            self._write(info)
            self.info = info
        except (OSError, *_tf_errors("OpError")) as error:
            # A transient storage error must not kill the run; the next beat retries.
            if getattr(error, "errno", None) == errno.ENOSPC:
                logging.error("Cannot refresh the lock on %s: disk full.", self.folder)
            else:
                logging.warning("Cannot refresh the lock on %s: %s", self.folder, error)
        return True
