"""Progress of a running job for the launcher's console, on runners that share its disk.

Workers (threads or processes of the local runners) each keep a small file with their own
running count in a folder the launcher made; the launcher sums the files every second or
so. On a remote runner (Dataflow, Flink) there is no such folder and nothing is written:
Beam's own monitoring shows progress there.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

from dlss_dist import files

TOTAL = "total"  # inputs found (written by the step before the per-image work)
DONE = "done"  # inputs turned into examples or rejects
_FLUSH_SECONDS = 0.5


class ProgressCounter:
    """A worker's running count of one kind, flushed to its own file at most twice a second."""

    def __init__(self, directory: str | None, kind: str):
        self._directory = directory
        self._path = None
        if directory:
            self._path = os.path.join(directory, f"{kind}.{uuid.uuid4().hex}")
        self._count = 0
        self._flushed_at = 0.0

    def add(self, amount: int = 1) -> None:
        if self._path is None:
            return
        self._count += amount
        now = time.monotonic()
        if now - self._flushed_at >= _FLUSH_SECONDS:
            self.flush()
            self._flushed_at = now

    def flush(self) -> None:
        if self._path is None or not os.path.isdir(self._directory):
            return
        files.atomic_write(self._path, str(self._count))  # never a half-written number


def read_counts(directory: str) -> dict[str, int]:
    """Sums every worker's file per kind: ``{"total": n, "done": m}``."""
    counts = {TOTAL: 0, DONE: 0}
    try:
        names = os.listdir(directory)
    except OSError:
        return counts
    for name in names:
        kind, _, rest = name.partition(".")
        if kind in counts:
            try:
                with open(os.path.join(directory, name)) as f:
                    counts[kind] += int(f.read() or 0)
            except (OSError, ValueError):
                pass  # a file being replaced right now: counted next time
    return counts


class ProgressWatcher(threading.Thread):
    """Calls ``callback(done, total)`` every ``interval`` seconds until stopped."""

    def __init__(self, directory: str, callback: Callable[[int, int], None], interval: float = 1):
        super().__init__(name="dlss-preprocess-progress", daemon=True)
        self._directory = directory
        self._callback = callback
        self._interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        last = None
        while not self._stop_event.wait(self._interval):
            counts = read_counts(self._directory)
            now = (counts[DONE], counts[TOTAL])
            if now != last and counts[TOTAL]:
                self._callback(*now)
                last = now

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
