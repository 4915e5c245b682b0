"""The one progress reporter (dlss_dist.progress): a bar on a terminal, whole lines with the
rate and the time left when piped; used by preprocessing, training, upscaling and video."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from dlss_dist import progress, upscale


class Terminal(io.StringIO):
    """A stream that says it is a terminal (what a user's shell gives a tool)."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    return clock


def test_piped_lines_have_rate_and_time_left_and_no_carriage_returns(clock):
    out = io.StringIO()
    with progress.Progress(100, "upscaling", unit="image", stream=out) as report:
        for _ in range(30):
            clock.now += 0.5
            report.update(1)
        report.write("a note")
        for _ in range(70):
            clock.now += 0.5
            report.update(1)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # A line every 10 s (20 images), the note, and the last line.
    assert lines[0] == "upscaling: 20/100 images (20%), 2 images/s, 00:40 left"
    assert "a note" in lines
    assert lines[-1] == "upscaling: 100/100 images (100%), 2 images/s, done in 00:50"
    assert len(lines) == 6, lines


def test_piped_lines_at_every_n_units_with_metrics_through_say(clock):
    said = []
    report = progress.Progress(
        1000, "training", unit="step", initial=200, stream=io.StringIO(), every=100, say=said.append
    )
    for step in range(210, 510, 10):
        clock.now += 1
        report.update(done=step, metrics={"g_loss": 0.5, "d_loss": 1.25})
    report.close()
    assert said[0] == (
        "training: 300/1000 steps (30%), 10 steps/s, 01:10 left d_loss=1.25 g_loss=0.5"
    )
    assert [line.split(" ", 2)[1] for line in said] == ["300/1000", "400/1000", "500/1000"]


def test_unknown_total_and_nothing_done(clock):
    out = io.StringIO()
    with progress.Progress(None, "clip.mp4", unit="frame", stream=out) as report:
        clock.now += 4
        report.update(8)
    assert out.getvalue() == "clip.mp4: 8 frames, 2 frames/s\n"
    quiet = io.StringIO()
    progress.Progress(5, "nothing", stream=quiet).close()  # nothing done: no line
    progress.Progress(5, "off", stream=quiet, enabled=False).update(3)
    assert quiet.getvalue() == ""


def test_a_terminal_gets_a_bar_and_log_lines_above_it():
    terminal = Terminal()
    handler = logging.StreamHandler(terminal)  # a console log handler writing where the bar is
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with progress.Progress(4, "upscaling", unit="image", stream=terminal) as report:
            assert report.is_bar
            report.update(2)
            logger = logging.getLogger("dlss_dist.test")
            # Its own level: a tool run in-process earlier may have left the root at ERROR.
            logger.setLevel(logging.WARNING)
            logger.warning("a warning while the bar is up")
            report.update(2)
        assert handler.stream is terminal  # put back
    finally:
        root.removeHandler(handler)
    text = terminal.getvalue()
    assert "\rupscaling:  50%|" in text and "2/4" in text
    # The log line has a line of its own (the bar is cleared, then redrawn after it).
    line = next(part for part in text.split("\r") if "a warning while the bar is up" in part)
    assert line.strip() == "a warning while the bar is up"
    assert text.endswith("\r")  # the bar is gone at the end (leave=False)


def _photos(folder, count: int) -> str:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        image = (rng.random((8, 10, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"p{index}.png")
    return str(folder)


class Nearest:
    """A stand-in model: x2 nearest neighbour."""

    scale = 2

    def __call__(self, image, **_):
        return image.repeat(2, axis=0).repeat(2, axis=1)


def test_upscaling_a_folder_reports_progress_when_piped(tmp_path, capsys):
    photos = _photos(tmp_path / "photos", 3)
    upscale.upscale_files(Nearest(), [photos], str(tmp_path / "out"), progress=True)
    err = capsys.readouterr().err
    assert "upscaling: 3/3 images (100%)" in err and "\r" not in err
    upscale.upscale_files(Nearest(), [photos], str(tmp_path / "quiet"))  # not asked for
    assert "upscaling:" not in capsys.readouterr().err


def test_console_log_handlers_on_other_streams_are_left_alone():
    other = io.StringIO()
    handler = logging.StreamHandler(other)
    logging.getLogger().addHandler(handler)
    try:
        with progress.Progress(2, "x", stream=Terminal()):
            assert handler.stream is other
    finally:
        logging.getLogger().removeHandler(handler)
