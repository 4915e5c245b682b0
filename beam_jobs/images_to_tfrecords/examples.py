"""The per-input work: read → decode/validate → (pair) → crop/degrade → encode.

Every input that cannot become an example leaves :class:`MakeExamples` on its tagged
``rejects`` output with a reason, never as an exception that stops the job.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.images_to_tfrecords import progress
from beam_jobs.images_to_tfrecords.sources import SourceItem, stable_fraction
from dlss_dist import imaging
from dlss_dist.data import schema

REJECTS_TAG = "rejects"
WRITTEN_TAG = "written"


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
    """What turns one input into examples (all of it goes into manifest.json)."""

    scale: int
    hr_size: int
    patches_per_image: int = 0  # 0 = one centre crop resized to hr_size
    alpha: str = "white"
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS


def read_bytes(path: str) -> bytes:
    """The file's bytes; a file that cannot be read is a reject (``unreadable``)."""
    try:
        with FileSystems.open(path) as f:
            return f.read()
    except OSError as e:  # permission denied, vanished since listing, I/O error
        raise imaging.ImageRejected("unreadable", f"the file cannot be read: {e}") from e


def make_hr(image: np.ndarray, config: ExampleConfig) -> np.ndarray:
    """The centre square crop resized to ``hr_size`` (``folder`` and ``celeba`` sources).

    Raises:
      ImageRejected("too_small"): when the square is smaller than ``hr_size``.
    """
    square = imaging.center_crop_square(image)
    side = square.shape[0]
    if side < config.hr_size:
        height, width = image.shape[:2]
        raise imaging.ImageRejected(
            "too_small",
            f"{width}x{height}: the centre square ({side}px) is smaller than "
            f"--hr_size={config.hr_size}",
        )
    return imaging.imresize(square, config.hr_size, config.hr_size)


def make_patches(image: np.ndarray, key: str, config: ExampleConfig) -> list[np.ndarray]:
    """``patches_per_image`` HR crops of ``hr_size`` at native resolution.

    Positions come from a generator seeded by a hash of ``key``, so reruns give the same
    patches.
    """
    height, width = image.shape[:2]
    if min(height, width) < config.hr_size:
        raise imaging.ImageRejected(
            "too_small", f"{width}x{height} is smaller than --hr_size={config.hr_size}"
        )
    seed = int(stable_fraction(key, "patches") * 2**63)
    rng = np.random.default_rng(seed)
    patches = []
    for _ in range(config.patches_per_image):
        top = int(rng.integers(0, height - config.hr_size + 1))
        left = int(rng.integers(0, width - config.hr_size + 1))
        patches.append(image[top : top + config.hr_size, left : left + config.hr_size])
    return patches


def check_pair(hr: np.ndarray, lr: np.ndarray, config: ExampleConfig) -> None:
    """Validates a given LR/HR pair (``paired`` source).

    Raises:
      ImageRejected: ``scale_mismatch`` unless HR is exactly ``scale`` times LR in
        both dimensions; ``too_small`` when HR is smaller than ``hr_size``.
    """
    hr_height, hr_width = hr.shape[:2]
    lr_height, lr_width = lr.shape[:2]
    if (
        hr_height % lr_height
        or hr_width % lr_width
        or hr_height // lr_height != hr_width // lr_width
        or hr_height // lr_height != config.scale
    ):
        raise imaging.ImageRejected(
            "scale_mismatch",
            f"HR {hr_width}x{hr_height} is not {config.scale}x LR {lr_width}x{lr_height} in "
            "both dimensions",
        )
    if min(hr_height, hr_width) < config.hr_size:
        raise imaging.ImageRejected(
            "too_small", f"HR {hr_width}x{hr_height} is smaller than --hr_size={config.hr_size}"
        )


def examples_for_item(item: SourceItem, config: ExampleConfig) -> list[tuple[str, bytes]]:
    """All ``(key, serialized_example)`` of one input (the per-image work of the job).

    An item with an ``lr_path`` is a given pair; otherwise LR is made from HR with
    :func:`dlss_dist.imaging.degrade_bicubic`.

    Raises:
      ImageRejected: when the input cannot become an example.
    """
    decode = {"alpha": config.alpha, "max_pixels": config.max_pixels}
    image = imaging.decode_image(read_bytes(item.hr_path), **decode)
    if item.lr_path is not None:
        try:
            lr = imaging.decode_image(read_bytes(item.lr_path), **decode)
        except imaging.ImageRejected as e:
            raise imaging.ImageRejected(e.reason, f"LR file: {e}") from e
        check_pair(image, lr, config)
        return [(item.key, schema.serialize_example(lr=lr, hr=image, key=item.key))]
    if config.patches_per_image:
        out = []
        for index, hr in enumerate(make_patches(image, item.key, config)):
            key = f"{item.key}#p{index}"
            lr = imaging.degrade_bicubic(hr, config.scale)
            out.append((key, schema.serialize_example(lr=lr, hr=hr, key=key)))
        return out
    hr = make_hr(image, config)
    lr = imaging.degrade_bicubic(hr, config.scale)
    return [(item.key, schema.serialize_example(lr=lr, hr=hr, key=item.key))]


def reject_record(item: SourceItem, reason: str, message: str) -> dict:
    """One line of rejects.jsonl."""
    return {
        "key": item.key,
        "split": item.split,
        "reason": reason,
        "message": message,
        "path": item.hr_path or item.lr_path,
    }


class MakeExamples(beam.DoFn):
    """Decode → validate → crop → degrade → encode, one input at a time.

    Main output: ``(split, key, serialized_example)``. Tagged outputs: ``rejects``
    (dicts for rejects.jsonl) and ``written`` (the split of each input that produced
    examples, counted to prove read = written + rejected).
    """

    def __init__(self, config: ExampleConfig, progress_dir: str | None = None):
        self._config = config
        self._progress_dir = progress_dir
        self._read = Metrics.counter("dlss_preprocess", "inputs_read")
        self._written = Metrics.counter("dlss_preprocess", "inputs_written")
        self._examples = Metrics.counter("dlss_preprocess", "examples_written")
        self._rejected = Metrics.counter("dlss_preprocess", "inputs_rejected")

    def setup(self):
        self._done = progress.ProgressCounter(self._progress_dir, progress.DONE)

    def process(self, item: SourceItem):
        self._read.inc()
        self._done.add()
        if item.reject_reason:
            yield self._reject(item, item.reject_reason, item.reject_message or "")
            return
        try:
            examples = examples_for_item(item, self._config)
        except imaging.ImageRejected as e:
            yield self._reject(item, e.reason, str(e))
            return
        self._written.inc()
        self._examples.inc(len(examples))
        yield beam.pvalue.TaggedOutput(WRITTEN_TAG, item.split)
        for key, serialized in examples:
            yield item.split, key, serialized

    def finish_bundle(self):
        self._done.flush()

    def _reject(self, item: SourceItem, reason: str, message: str):
        self._rejected.inc()
        Metrics.counter("dlss_preprocess", f"rejected_{reason}").inc()
        return beam.pvalue.TaggedOutput(REJECTS_TAG, reject_record(item, reason, message))
