"""The one progress reporter of every tool: training steps, preprocessing inputs, upscaled
images and video frames.

On a terminal it is a tqdm bar (stderr), redrawn in place, with log lines printed above it
instead of through it. When stderr is not a terminal (a pipe, a file, a Kubernetes log) a bar's
carriage returns would fill the log with half-lines, so it writes whole lines instead: the
count, the rate and the time left, every `every_seconds` (and every `every` units, if given),
and once at the end::

    upscaling: 30/100 images (30%), 2.4 images/s, 00:29 left

Usage::

    with Progress(total=len(paths), description="upscaling", unit="image") as progress:
        for path in paths:
            ...
            progress.update(1)
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping

from tqdm import tqdm

DEFAULT_EVERY_SECONDS = 10.0


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _metrics_text(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items()))


class _AboveTheBar(io.TextIOBase):
    """A stream that prints through `tqdm.write`: log lines appear above a live bar."""

    def __init__(self, stream):
        super().__init__()
        self._stream = stream

    def write(self, text: str) -> int:
        tqdm.write(text, file=self._stream, end="")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return is_terminal(self._stream)


class Progress:
    """Progress of one task with an optional known total (see the module docstring).

    Args:
      total: units to do, or None when unknown (then no percentage and no time left).
      description: what is being done, e.g. ``"training"``; starts every line.
      unit: singular name of a unit, e.g. ``"step"``, ``"image"``, ``"frame"``.
      initial: units already done (a resumed training run starts at its checkpoint's step);
        the rate counts only what this run does.
      stream: where to report (default: stderr).
      enabled: False reports nothing (a library call that did not ask for progress).
      every_seconds: when piped, the least time between two lines.
      every: when piped, also a line each time the count passes a multiple of `every`
        (training's summary steps); then `every_seconds` does not apply.
      say: when piped, how a line is written (default: to `stream`); training logs it.
      bar: force the terminal bar on (True) or off (False); None decides by `stream`.
      started: when the work began (`time.monotonic()`), if before this object was made.
    """

    def __init__(
        self,
        total: int | None,
        description: str,
        *,
        unit: str = "item",
        initial: int = 0,
        stream=None,
        enabled: bool = True,
        every_seconds: float = DEFAULT_EVERY_SECONDS,
        every: int | None = None,
        say: Callable[[str], None] | None = None,
        bar: bool | None = None,
        started: float | None = None,
    ):
        self.total = total
        self.description = description
        self.unit = unit
        self.done = initial
        self._initial = initial
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._every_seconds = every_seconds
        self._every = every
        self._say = say
        self._started = time.monotonic() if started is None else started
        self._last_line_at = self._started
        self._last_line_done: int | None = None
        self._metrics: dict[str, float] = {}
        self._closed = False
        self._bar = None
        self._redirected: list[tuple[logging.StreamHandler, object]] = []
        use_bar = is_terminal(self._stream) if bar is None else bar
        if enabled and use_bar:
            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=description,
                unit=unit,
                file=self._stream,
                dynamic_ncols=True,
                leave=False,
            )
            self._redirect_logs()

    @property
    def is_bar(self) -> bool:
        return self._bar is not None

    # -- reporting ---------------------------------------------------------------------------

    def update(
        self,
        advance: int | None = None,
        *,
        done: int | None = None,
        total: int | None = None,
        metrics: Mapping[str, float] | Iterable[tuple[str, float]] | None = None,
    ) -> None:
        """Advances by `advance` units, or sets the count to `done`; `total` may change (a
        listing still counting); `metrics` are shown beside the count (training's losses)."""
        if not self._enabled or self._closed:
            return
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        if metrics is not None:
            self._metrics = dict(metrics)
        previous = self.done
        self.done = done if done is not None else self.done + (advance or 0)
        if self._bar is not None:
            self._bar.update(self.done - self._bar.n)
            if metrics is not None:
                self._bar.set_postfix_str(_metrics_text(self._metrics), refresh=False)
            self._bar.refresh()
            return
        if self._line_due(previous):
            self._line()

    def write(self, text: str) -> None:
        """A line of text, above the bar on a terminal."""
        if self._bar is not None:
            self._bar.write(text, file=self._stream)
        else:
            self._stream.write(text + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Ends the report: the bar goes; when piped, a last line if the count moved since."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            self._restore_logs()
        elif self._enabled and self._last_line_done != self.done and self.done > self._initial:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- piped lines ---------------------------------------------------------------------------

    def text(self) -> str:
        """The line for the current state: count, percentage, rate, time left, metrics."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = (self.done - self._initial) / elapsed
        units = self.unit if self.done == 1 and self.total in (None, 1) else f"{self.unit}s"
        if self.total:
            percent = 100 * self.done / self.total
            count = f"{self.done}/{self.total} {units} ({percent:.0f}%)"
        else:
            count = f"{self.done} {units}"
        parts = [
            count,
            f"{rate:.0f} {self.unit}s/s" if rate >= 100 else f"{rate:.3g} {self.unit}s/s",
        ]
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"{tqdm.format_interval((self.total - self.done) / rate)} left")
        elif self.total and self.done >= self.total:
            parts.append(f"done in {tqdm.format_interval(elapsed)}")
        line = f"{self.description}: " + ", ".join(parts)
        if self._metrics:
            line += " " + _metrics_text(self._metrics)
        return line

    def _line_due(self, previous: int) -> bool:
        if self.total is not None and self.done >= self.total:
            return True
        if self._every:
            return self.done // self._every > previous // self._every
        return time.monotonic() - self._last_line_at >= self._every_seconds

    def _line(self) -> None:
        self._last_line_at = time.monotonic()
        self._last_line_done = self.done
        text = self.text()
        if self._say is not None:
            self._say(text)
        else:
            self._stream.write(text + "\n")
            self._stream.flush()

    # -- log lines above the bar ------------------------------------------------------------------

    def _redirect_logs(self) -> None:
        """Console log handlers writing to this stream print above the bar while it lives."""
        from absl import logging as absl_logging

        handlers = list(logging.getLogger().handlers)
        python_handler = getattr(absl_logging.get_absl_handler(), "python_handler", None)
        if python_handler is not None:
            handlers.append(python_handler)
        for handler in handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and stream is self._stream:
                self._redirected.append((handler, stream))
                handler.stream = _AboveTheBar(stream)

    def _restore_logs(self) -> None:
        for handler, stream in self._redirected:
            handler.stream = stream
        self._redirected.clear()
