"""`BestExporter`: training keeps its best exports (by validation PSNR) in the model directory."""

from __future__ import annotations

import math
import os
import time

import keras
import tensorflow as tf
from absl import logging

from dlss_dist import export, files, model_dir


class BestExporter:
    """Keeps the `keep` best exports (highest validation PSNR) as ``<export_root>/<step>/``.

    Version folders are integers, so TF Serving pointed at `export_root` serves the newest of
    the kept ones. Each export is written to a hidden temporary folder and renamed into
    place, so TF Serving never sees a half-written version. Scores live in
    ``<export_root>/exports.json`` (read back on construction, so a resumed run continues
    the same ranking)::

        {"metric": "psnr", "keep": 3, "scale": 4,
         "exports": [{"step": 2000, "psnr": 27.1, "path": ".../2000", "time": ...}, ...]}

    ``exports`` is sorted best first; readers use `read_exports` / `best_export`. In a
    multi-worker job call it on the chief only.
    """

    def __init__(
        self,
        *,
        export_root: str,
        scale: int,
        keep: int = 3,
        max_input_pixels: int = export.DEFAULT_MAX_INPUT_PIXELS,
    ):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        if max_input_pixels < 1:
            raise ValueError(f"max_input_pixels must be positive, got {max_input_pixels}")
        self.export_root = export_root
        self.scale = scale
        self.keep = keep
        self.max_input_pixels = max_input_pixels
        self._exports = model_dir.read_exports(export_root)

    @property
    def exports(self) -> list[dict]:
        """The kept exports, best first: dicts with step, psnr, path, time."""
        return [dict(e) for e in self._exports]

    @property
    def best_path(self) -> str | None:
        """Path of the best kept export, or None before the first export."""
        return self._exports[0]["path"] if self._exports else None

    def _write_index(self) -> None:
        model_dir.write_exports_index(
            self.export_root, keep=self.keep, scale=self.scale, exports=self._exports
        )

    def maybe_export(self, generator: keras.Model, *, step: int, psnr: float) -> str | None:
        """Exports `generator` as version `step` if its `psnr` is among the `keep` best.

        Returns the export path, or None when the model was not good enough (or the PSNR is
        not finite). A previous export of the same step is replaced.
        """
        step, psnr = int(step), float(psnr)
        if not math.isfinite(psnr):
            logging.warning("Not exporting step %d: validation PSNR is %s", step, psnr)
            return None
        others = [e for e in self._exports if e["step"] != step]
        if len(others) >= self.keep and psnr <= min(e["psnr"] for e in others):
            logging.info(
                "Not exporting step %d: PSNR %.3f dB is not among the %d best",
                step,
                psnr,
                self.keep,
            )
            return None

        final = os.path.join(self.export_root, str(step))
        # Staged and renamed whole: TF Serving never sees a half-written version, and a
        # previous export of this step (this run's own, from before a resume) is replaced.
        with files.staged_folder(final, replace=True) as staging:
            export.export_generator(
                generator, staging, scale=self.scale, max_input_pixels=self.max_input_pixels
            )

        entry = {"step": step, "psnr": psnr, "path": final, "time": time.time()}
        ranked = sorted([*others, entry], key=lambda e: (-e["psnr"], -e["step"]))
        self._exports, dropped = ranked[: self.keep], ranked[self.keep :]
        # Index first, then delete: a crash in between leaves an extra folder, never an index
        # that points at a deleted one.
        self._write_index()
        for old in dropped:
            logging.info("Removing export %s (PSNR %.3f dB)", old["path"], old["psnr"])
            if tf.io.gfile.exists(old["path"]):
                tf.io.gfile.rmtree(old["path"])
        # Internals (-v 1): the caller's "Step N: validation PSNR ..., exported <path>." says it.
        logging.debug("Exported step %d (PSNR %.3f dB) to %s", step, psnr, final)
        return final
