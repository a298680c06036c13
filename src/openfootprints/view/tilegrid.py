"""The web-mercator XYZ tile grid (EPSG:3857, tile (0, 0) at the north-west corner, y down), as web maps use it."""

from __future__ import annotations

import math

import numpy as np

from openfootprints.io.xyz import WEB_MERCATOR_HALF as HALF_WORLD  # EPSG:3857 units, origin to the world's edge


def tile_size(z: int) -> float:
    """Width of one tile at zoom ``z``, in EPSG:3857 units."""
    return 2 * HALF_WORLD / 2**z


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of tile ``z/x/y`` in EPSG:3857."""
    size = tile_size(z)
    left, top = -HALF_WORLD + x * size, HALF_WORLD - y * size
    return left, top - size, left + size, top


def tile_ranges(bounds: np.ndarray, z: int, margin: float = 0.0) -> tuple[np.ndarray, ...]:
    """First and last tile column and row touched by each box at zoom ``z``.

    ``bounds`` (n, 4) holds (left, bottom, right, top) in EPSG:3857; ``margin`` (EPSG:3857 units) grows each
    box first. Returns ``(x0, x1, y0, y1)``, int arrays (n,), inclusive and clipped to the grid.
    """
    size, last = tile_size(z), 2**z - 1
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)

    def index(v):
        return np.clip(np.floor(v / size).astype(np.int64), 0, last)

    x0, x1 = index(b[:, 0] - margin + HALF_WORLD), index(b[:, 2] + margin + HALF_WORLD)
    y0, y1 = index(HALF_WORLD - b[:, 3] - margin), index(HALF_WORLD - b[:, 1] + margin)
    return x0, x1, y0, y1


def zoom_for_pixel_size(pixel: float, tile_px: int = 256) -> int:
    """The smallest zoom whose tile pixels (``tile_px`` per tile) are no larger than ``pixel`` EPSG:3857 units."""
    return max(0, min(30, math.ceil(math.log2(2 * HALF_WORLD / (tile_px * pixel)) - 1e-9)))
