"""`Upscaler`: one loaded model, any format, run on uint8 HWC images within a memory budget.

A runtime (SavedModel, training checkpoint, ONNX Runtime, LiteRT) only has to map uint8
``[N, H, W, 3]`` to uint8 ``[N, sH, sW, 3]``: the [-1, 1] <-> uint8 conversion is inside
every exported graph (`dlss_dist.data.pipeline.to_float` / `to_uint8`, traced once by
`dlss_dist.export` and `dlss_dist.exporters.graph`), never redone here. The `Upscaler` adds
what every runtime shares: input checks, the pixel limit, and tiling.

Tiling by a memory budget: ``max_memory`` is the peak resident memory (RSS) the process should
stay under. Each image is upscaled in tiles no larger than what ``max_memory`` minus the RSS
when the `Upscaler` was made (the runtime and the model, with whatever the process held then)
minus the input and output arrays allows, and never larger than `MAX_AUTO_TILE`. Memory the
process takes afterwards is not the model's to budget: other networks loaded beside it
(``dlss-eval``'s LPIPS and DISTS grew the process to 6 GB) would otherwise leave no room and
shrink every tile to the 64-pixel minimum, 4x the pixels computed for the same result; the
runtime's own pools, grown by earlier tiles, are reused by the next.

The cost per input pixel is first taken from a conservative estimate
(`FALLBACK_BYTES_PER_OUTPUT_PIXEL` x scale^2); only when that does not fit is it measured,
once: the peak-RSS growth of a 128x128 call minus that of a 32x32 one (the kernel's peak-RSS
counter reset before each; Linux, elsewhere the estimate stays).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from absl import logging

from dlss_dist.serving import memory, tiling

# Largest automatic tile side. Larger calls are not slower per pixel once their memory is
# resident (the 2.3x once measured for 512- against 256-pixel tiles, one call per fresh
# process, was first-touch page faults; BENCHMARKS.md), and larger tiles recompute less
# overlap; but each call's first touch of its working memory is paid again whenever the
# runtime has released it, and a 2 GB budget leaves room for ~250-300 pixels anyway.
MAX_AUTO_TILE = 256
PROBE_SIZE = 128
WARM_UP_SIZE = 32
# Measured costs are multiplied by this: allocator slack and a busier call than the probe.
# TensorFlow's allocator grows faster than linearly: a 199-pixel tile of the starter model
# took 17.4 KB per pixel where the probe had measured 12.4 (1.4x); with 1.25 a 16 MP image
# peaked at 2122 MB under the 2 GB budget (BENCHMARKS.md, "Upscaling memory").
SAFETY = 1.5
# Per input pixel per scale^2, where the cost cannot be measured: above the ~0.8 KB measured
# for the starter SRResNet (48 filters) on SavedModel, ONNX Runtime and LiteRT.
FALLBACK_BYTES_PER_OUTPUT_PIXEL = 1536


class ModelError(ValueError):
    """The model refused an input (over its pixel limit, empty, not an image)."""


class Runtime(Protocol):
    """What a runtime gives `Upscaler`: one uint8 batch call, its factor and its limits."""

    path: str
    format: str  # "savedmodel", "checkpoint", "onnx", "tflite"
    scale: int
    max_input_pixels: int | None

    def upscale_batch(self, images: np.ndarray) -> np.ndarray: ...


class Upscaler:
    """``upscaler(image)`` -> the image ``scale`` times larger, tiled within ``max_memory``.

    Attributes:
      runtime: the loaded model (`Runtime`).
      path: what was loaded (a SavedModel folder, a checkpoint, a .onnx or .tflite file).
      format: "savedmodel", "checkpoint", "onnx" or "tflite".
      scale: the upscaling factor.
      max_input_pixels: the model's own limit on one call's H*W (None: no limit).
      max_memory: the peak resident memory to stay under, in bytes.
      description: how the model was found (e.g. "starter model realworld_x4").
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        max_memory: int | str = memory.DEFAULT_MAX_MEMORY,
        description: str = "",
        bytes_per_pixel: float | None = None,
    ):
        """Wraps `runtime`; `bytes_per_pixel` (working memory of one call per input pixel)
        is measured on first need when not given."""
        self.runtime = runtime
        self.max_memory = memory.parse_memory(max_memory)
        self.description = description or runtime.path
        self._bytes_per_pixel = bytes_per_pixel
        # The process as the model left it: what the budget is shared with (see the module).
        self.resident_at_load = memory.current_rss() or 0
        self._warned_over_budget = False

    @property
    def path(self) -> str:
        return self.runtime.path

    @property
    def format(self) -> str:
        return self.runtime.format

    @property
    def scale(self) -> int:
        return self.runtime.scale

    @property
    def max_input_pixels(self) -> int | None:
        return self.runtime.max_input_pixels

    def __repr__(self) -> str:
        return f"Upscaler({self.format} x{self.scale}: {self.description})"

    def upscale_batch(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> uint8 [N, sH, sW, 3] in one call (no tiling).

        Raises:
          ModelError: not a non-empty uint8 RGB batch, or over the model's pixel limit.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ModelError(
                f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}"
            )
        if not images.size:
            raise ModelError(
                f"images has shape {list(images.shape)}: upscale needs at least one image of "
                "at least 1x1 pixels"
            )
        pixels = images.shape[1] * images.shape[2]
        if self.max_input_pixels is not None and pixels > self.max_input_pixels:
            raise ModelError(
                f"input image is {images.shape[2]}x{images.shape[1]} (WxH) = {pixels} pixels, "
                f"over this model's limit of {self.max_input_pixels} input pixels: upscale it "
                "in tiles (--tile=N, or leave --tile at 0)"
            )
        return self.runtime.upscale_batch(images)

    def __call__(
        self, image: np.ndarray, *, tile: int = 0, tile_overlap: int | None = None
    ) -> np.ndarray:
        """Upscales one HxWx3 uint8 image.

        Args:
          image: HxWx3 uint8 RGB.
          tile: tile side in input pixels; 0 chooses tiles by `max_memory` (see the module).
          tile_overlap: context pixels around each tile (default `DEFAULT_TILE_OVERLAP`).
        """
        tiling.validate_tiling(tile, tile_overlap)
        image = np.asarray(image)
        if image.ndim != 3:
            raise ModelError(f"image must be HxWx3, got shape {list(image.shape)}")
        overlap = tiling.DEFAULT_TILE_OVERLAP if tile_overlap is None else tile_overlap
        height, width = image.shape[:2]
        if tile:
            if self.max_input_pixels is not None and tile * tile > self.max_input_pixels:
                raise ValueError(
                    f"tile={tile} gives {tile * tile} pixels per tile, over this model's limit "
                    f"of {self.max_input_pixels} (max_input_pixels); use a smaller tile"
                )
            shape = (tile, tile)
        else:
            shape = self.auto_tile(height, width, overlap)
        if shape[0] >= height and shape[1] >= width:
            return self.upscale_batch(image[np.newaxis])[0]
        return tiling.upscale_tiled(
            self.upscale_batch, image, scale=self.scale, tile=shape, tile_overlap=overlap
        )

    def bytes_per_pixel(self) -> float:
        """Working memory of one call per input pixel, measured once (see the module)."""
        if self._bytes_per_pixel is None:
            self._bytes_per_pixel = self._measure_bytes_per_pixel()
        return self._bytes_per_pixel

    def fallback_bytes_per_pixel(self) -> float:
        """The conservative estimate used where nothing is measured."""
        return float(FALLBACK_BYTES_PER_OUTPUT_PIXEL * self.scale**2)

    def _measure_bytes_per_pixel(self) -> float:
        fallback = self.fallback_bytes_per_pixel()
        side = PROBE_SIZE
        if self.max_input_pixels is not None:
            side = min(side, math.isqrt(self.max_input_pixels))
        probe = np.full((1, side, side, 3), 128, np.uint8)
        small = WARM_UP_SIZE

        def growth(images: np.ndarray) -> int | None:
            """Peak RSS growth of one call, or None where it cannot be measured."""
            before = memory.current_rss()
            if before is None or not memory.reset_peak():
                return None
            self.upscale_batch(images)
            return max((memory.peak_rss() or before) - before, 0)

        # Each call is the first at its shape, so both pay the runtime's per-shape set-up
        # (kernel selection, plans); the difference between them is what pixels cost.
        fixed, total = growth(probe[:, :small, :small]), growth(probe)
        if fixed is None or total is None:
            logging.info("Cannot measure memory here: assuming %d bytes per pixel", fallback)
            return float(fallback)
        measured = max(total - fixed, 0) / (side**2 - small**2)
        # A floor: the output and input of the call itself can never be cheaper than this.
        floor = 3 * (self.scale**2 + 1)
        cost = max(measured, floor) * SAFETY
        logging.info(
            "%s: one call takes %.1f KB per input pixel (measured %.1f KB)",
            self.description,
            cost / 1024,
            measured / 1024,
        )
        return cost

    def auto_tile(self, height: int, width: int, overlap: int) -> tuple[int, int]:
        """(tile_height, tile_width) for an image: as large as `max_memory` allows, at most
        `MAX_AUTO_TILE`, balanced so the last tile is not mostly overlap. A shape that covers
        the image means one call."""
        largest = MAX_AUTO_TILE
        if self.max_input_pixels is not None:
            largest = min(largest, math.isqrt(self.max_input_pixels))
        # The output array, and the input, which arrived after the model was loaded.
        array_bytes = height * width * (self.scale**2 + 1) * 3
        resident = self.resident_at_load
        available = max(self.max_memory - resident - array_bytes, 0)
        wanted = min(height, largest) * min(width, largest)
        # The conservative estimate first: when even it fits, nothing needs measuring.
        per_pixel = self._bytes_per_pixel or self.fallback_bytes_per_pixel()
        if per_pixel * wanted > available and self._bytes_per_pixel is None:
            per_pixel = self.bytes_per_pixel()
        fits = math.isqrt(int(available / per_pixel))
        minimum = max(tiling.MIN_TILE, 4 * overlap)
        if fits < minimum:
            logging.warning(
                "%dx%d (WxH) upscaled x%d needs about %s for its input and output, on top of %s "
                "for the model: over --max_memory=%s; using %d-pixel tiles anyway",
                width,
                height,
                self.scale,
                memory.format_bytes(array_bytes),
                memory.format_bytes(resident),
                memory.format_bytes(self.max_memory),
                minimum,
            )
            fits = minimum
        self._note_process_over_budget()
        side = min(largest, fits)
        return (
            tiling.balanced_tile(height, side, overlap),
            tiling.balanced_tile(width, side, overlap),
        )

    def _note_process_over_budget(self) -> None:
        """Says once when the process has grown past the budget since the model was loaded
        (other models, caches): the tiles keep to the model's share, the rest is not theirs."""
        rss = memory.current_rss()
        if self._warned_over_budget or rss is None or rss <= self.max_memory:
            return
        self._warned_over_budget = True
        logging.info(
            "This process holds %s, %s more than when %s was loaded, over --max_memory=%s: "
            "tiles stay within the model's share of the budget (%s in use at load)",
            memory.format_bytes(rss),
            memory.format_bytes(max(rss - self.resident_at_load, 0)),
            self.description,
            memory.format_bytes(self.max_memory),
            memory.format_bytes(self.resident_at_load),
        )
