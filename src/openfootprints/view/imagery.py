"""Imagery as web-map tiles: PNG tiles of the XYZ grid read on demand from the scene, warped to EPSG:3857.

Each tile is cut by rio-tiler: one warped read of the scene straight onto the tile's own pixel grid (the
tile's bounds, ``tile_px`` pixels a side), so neighbouring tiles meet without a step and memory is one tile
(plus GDAL's block cache) whatever the scene's size. Tiles are served from the scene's own zoom (the first
zoom whose pixels are as fine as the scene's) down ``levels`` zooms, plus one zoom per overview the file
has: each zoom out reads four times as many scene pixels per tile, and overviews make that cheap again.
"""

from __future__ import annotations

import io
import os
import threading
import warnings

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform, transform_bounds
from rio_tiler.errors import NoOverviewWarning, TileOutsideBounds
from rio_tiler.io import Reader

from openfootprints.errors import InputError
from openfootprints.io.raster import open_scene
from openfootprints.view.tilegrid import zoom_for_pixel_size

STRETCH_SAMPLE_PX = 512  # longest side of the overview read that sets the contrast stretch of non-8-bit imagery
RESAMPLING = "bilinear"  # for the warp to EPSG:3857 and for reads at a coarser zoom than the scene's


class ImageryTiles:
    """PNG tiles (RGBA, transparent outside the scene and where it has no data) of one scene.

    ``bands``: 1-based bands to show (red, green, blue or one grey band; default the scene's first three
    colour bands). ``levels``: zooms served below the scene's own. ``tile_px``: tile side in pixels.
    """

    def __init__(self, path: str | os.PathLike, bands: list[int] | None = None, levels: int = 3, tile_px: int = 256):
        scene = open_scene(path, bands)
        self.path, self.tile_px = scene.path, tile_px
        self.bands = scene.bands[:3] if len(scene.bands) >= 3 else scene.bands[:1]
        source = scene.dataset
        with warnings.catch_warnings():  # a scene without overviews is fine: the zoom range is limited instead
            warnings.simplefilter("ignore", NoOverviewWarning)
            self._reader = Reader(None, dataset=source)  # the web-mercator XYZ grid (WebMercatorQuad)
        self._lock = threading.Lock()  # one GDAL dataset, many server threads
        self.bounds_3857, pixel = mercator_footprint(source)
        west, south, east, north = transform_bounds("EPSG:3857", "EPSG:4326", *self.bounds_3857)
        self.bounds = (float(west), float(south), float(east), float(north))
        self.max_zoom = zoom_for_pixel_size(pixel, tile_px)
        overviews = len(source.overviews(self.bands[0]))
        self.min_zoom = max(0, self.max_zoom - levels - overviews)
        self._scale = stretch(source, self.bands)
        self._empty = png(np.zeros((4, tile_px, tile_px), np.uint8))

    def tile(self, z: int, x: int, y: int) -> bytes:
        """PNG bytes of tile ``z/x/y`` (a transparent tile where the scene is not)."""
        try:
            with self._lock:
                image = self._reader.tile(x, y, z, tilesize=self.tile_px, indexes=self.bands,
                                          resampling_method=RESAMPLING, reproject_method=RESAMPLING)
        except TileOutsideBounds:
            return self._empty
        return png(rgba(self._scale(image.data), valid_pixels(image.array)))

    def close(self) -> None:
        self._reader.close()
        assert self._reader.dataset is not None  # given in __init__
        self._reader.dataset.close()


def mercator_footprint(dataset: rasterio.DatasetReader) -> tuple[tuple[float, float, float, float], float]:
    """The scene warped to EPSG:3857 as GDAL grids it by default: its (left, bottom, right, top) and its pixel
    size, in EPSG:3857 units."""
    transform, width, height = calculate_default_transform(dataset.crs, "EPSG:3857", dataset.width, dataset.height,
                                                           *dataset.bounds)
    west, south, east, north = array_bounds(height, width, transform)
    return (float(west), float(south), float(east), float(north)), float(transform.a)


def valid_pixels(data: np.ma.MaskedArray) -> np.ndarray:
    """(h, w) bool: where any band of a (bands, h, w) masked read has a value."""
    return np.asarray(~np.ma.getmaskarray(data).all(axis=0))


def rgba(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(4, h, w) uint8: ``rgb`` (3, h, w) uint8, opaque where ``valid`` (h, w), transparent and black elsewhere."""
    return np.concatenate([np.where(valid, rgb, 0), np.where(valid, 255, 0)[None]]).astype(np.uint8)


def stretch(dataset: rasterio.DatasetReader, bands: list[int]):
    """A function from pixel values (bands, h, w) to uint8 (3, h, w): 8-bit imagery as it is; other pixel
    types stretched per band from the 2nd to the 98th percentile of a small overview read."""
    if dataset.dtypes[bands[0] - 1] == "uint8":
        return as_rgb
    f = STRETCH_SAMPLE_PX / max(dataset.width, dataset.height)
    shape = (len(bands), max(1, round(dataset.height * min(f, 1))), max(1, round(dataset.width * min(f, 1))))
    sample = dataset.read(bands, out_shape=shape, masked=True).astype("float64")
    low = np.array([np.nanpercentile(band.filled(np.nan), 2) for band in sample])[:, None, None]
    high = np.array([np.nanpercentile(band.filled(np.nan), 98) for band in sample])[:, None, None]
    if not np.isfinite(low).all():
        raise InputError(f"{dataset.name}: the imagery has no valid pixel to show")
    span = np.maximum(high - low, 1e-9)

    def to_uint8(data: np.ndarray) -> np.ndarray:
        return as_rgb(np.clip((data.astype(np.float32) - low) / span * 255, 0, 255).astype(np.uint8))

    return to_uint8


def as_rgb(data: np.ndarray) -> np.ndarray:
    """(3, h, w): ``data`` (3 or 1, h, w) with a single grey band repeated three times."""
    return np.repeat(data, 3, axis=0) if len(data) == 1 else data


def png(rgba: np.ndarray) -> bytes:
    """PNG bytes of a (4, h, w) uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.moveaxis(rgba, 0, -1), "RGBA").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
