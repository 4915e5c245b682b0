"""Tiles: upscale a large image piece by piece into a preallocated output.

`upscale_tiled` splits the input into tiles of ``tile`` x ``tile`` pixels (or ``(height,
width)``) that overlap their neighbours by ``tile_overlap`` pixels on each side; only each
tile's centre (its "core") is kept, so every output pixel comes from a tile that saw at least
``tile_overlap`` input pixels of real context around it. When ``tile_overlap`` covers the
generator's receptive field, the result equals the untiled one up to float rounding; the
cost is the recomputed overlap. Tiles are processed one at a time into a preallocated uint8
output, so working memory depends on the tile size, not on the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from absl import logging

DEFAULT_TILE_OVERLAP = 16
# Smallest --tile: below this the generator sees too little context per tile and the seams
# show as blocks (a 1-pixel tile upscales each pixel on its own: nearest-neighbour blocks).
MIN_TILE = 16

# uint8 [1, h, w, 3] -> uint8 [1, h*s, w*s, 3]
BatchUpscaleFn = Callable[[np.ndarray], np.ndarray]


def validate_tiling(tile: int, tile_overlap: int | None) -> None:
    """Raises ValueError (naming --tile / --tile_overlap) for tilings that cannot work well.

    A tile (0 means "automatic") must be at least `MIN_TILE` pixels, and its kept centre,
    ``tile - 2 * tile_overlap``, at least a quarter of the tile and 8 pixels: a smaller
    centre recomputes the overlap over 16 times per output pixel for nothing.
    """
    overlap = DEFAULT_TILE_OVERLAP if tile_overlap is None else tile_overlap
    if tile_overlap is not None and tile_overlap < 0:
        raise ValueError(f"--tile_overlap={tile_overlap} must be >= 0")
    if tile == 0:
        return
    if tile < MIN_TILE:
        raise ValueError(
            f"--tile={tile} is under {MIN_TILE} pixels: each tile would be upscaled with too "
            "little context and the result looks blocky; use --tile=0 (automatic) or a "
            f"larger tile such as 256"
        )
    core = tile - 2 * overlap
    if core < max(8, tile // 4):
        raise ValueError(
            f"--tile={tile} with --tile_overlap={overlap} keeps a centre of {core} pixels per "
            f"tile (tile - 2 * tile_overlap), under max(8, tile/4) = {max(8, tile // 4)}: "
            "raise --tile or lower --tile_overlap"
        )


def windows(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core_start, core_end, window_start, window_end) along one axis."""
    core = tile - 2 * overlap
    result = []
    for start in range(0, length, core):
        end = min(start + core, length)
        # Full-size windows wherever the image allows: more context, and one input shape.
        window_start = min(max(start - overlap, 0), max(length - tile, 0))
        window_end = min(window_start + tile, length)
        result.append((start, end, window_start, window_end))
    return result


def balanced_tile(length: int, max_tile: int, overlap: int) -> int:
    """The smallest tile side along an axis of `length` that needs as few tiles as `max_tile`.

    A 300-pixel side with 256-pixel tiles needs two tiles either way; 182-pixel tiles do it
    with 71% of the pixels of two 256-pixel ones (the second mostly recomputing overlap).
    """
    if length <= max_tile:
        return length
    count = math.ceil(length / (max_tile - 2 * overlap))
    return min(max_tile, math.ceil(length / count) + 2 * overlap)


def upscale_tiled(
    upscale_fn: BatchUpscaleFn,
    image: np.ndarray,
    *,
    scale: int,
    tile: int | tuple[int, int],
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
) -> np.ndarray:
    """Upscales `image` tile by tile into a preallocated uint8 output (see module docstring).

    Args:
      upscale_fn: uint8 [1, h, w, 3] -> uint8 [1, h*scale, w*scale, 3].
      image: HxWx3 uint8.
      scale: the upscaling factor of `upscale_fn`.
      tile: tile side in input pixels, overlap included, or (height, width).
      tile_overlap: input pixels of context on each side of a tile's kept core.

    Returns:
      The (H*scale)x(W*scale)x3 uint8 image.
    """
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    if tile_overlap < 0:
        raise ValueError(f"tile_overlap must be >= 0, got {tile_overlap}")
    height, width, channels = image.shape
    for side, length in ((tile_h, height), (tile_w, width)):
        if side < length and side <= 2 * tile_overlap:
            raise ValueError(
                f"tile={side} must be larger than 2 * tile_overlap = {2 * tile_overlap} "
                "(each tile keeps a core of tile - 2*tile_overlap pixels)"
            )
    # An axis that fits in one tile is not split (its "overlap" is the whole axis).
    rows = windows(height, tile_h, tile_overlap) if tile_h < height else [(0, height, 0, height)]
    cols = windows(width, tile_w, tile_overlap) if tile_w < width else [(0, width, 0, width)]
    output = np.empty((height * scale, width * scale, channels), np.uint8)
    logging.info(
        "Upscaling %dx%d (WxH) in %d tiles of %dx%d px (overlap %d)",
        width,
        height,
        len(rows) * len(cols),
        min(tile_w, width),
        min(tile_h, height),
        tile_overlap,
    )
    for y0, y1, wy0, wy1 in rows:
        for x0, x1, wx0, wx1 in cols:
            result = upscale_fn(image[np.newaxis, wy0:wy1, wx0:wx1])[0]
            output[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = result[
                (y0 - wy0) * scale : (y1 - wy0) * scale, (x0 - wx0) * scale : (x1 - wx0) * scale
            ]
    return output
