"""Imagery as web-map tiles: PNG tiles of the XYZ grid read on demand from the scene, warped to EPSG:3857.

Each tile is one windowed read of a GDAL warped VRT over the scene, so memory is one tile (plus GDAL's
block cache) whatever the scene's size. Tiles are served from the scene's own zoom (the first zoom whose
pixels are as fine as the scene's) down ``levels`` zooms, plus one zoom per overview the file has: each
zoom out reads four times as many scene pixels per tile, and overviews make that cheap again.
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

from openfootprints.errors import InputError
from openfootprints.io.raster import open_scene
from openfootprints.view.tilegrid import tile_bounds, zoom_for_pixel_size

STRETCH_SAMPLE_PX = 512  # longest side of the overview read that sets the contrast stretch of non-8-bit imagery


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
        has_alpha = any(ci.name == "alpha" for ci in source.colorinterp)
        # an alpha band of its own, unless the scene has one, marks where the warped scene has no pixels
        self._vrt = WarpedVRT(source, crs="EPSG:3857", resampling=Resampling.bilinear, add_alpha=not has_alpha)
        self._lock = threading.Lock()  # one GDAL dataset, many server threads
        self.bounds_3857 = tuple(self._vrt.bounds)
        self.bounds = tuple(float(v) for v in transform_bounds("EPSG:3857", "EPSG:4326", *self.bounds_3857))
        self.max_zoom = zoom_for_pixel_size(self._vrt.res[0], tile_px)
        overviews = len(source.overviews(self.bands[0]))
        self.min_zoom = max(0, self.max_zoom - levels - overviews)
        self._scale = stretch(source, self.bands)
        self._empty = png(np.zeros((4, tile_px, tile_px), np.uint8))

    def tile(self, z: int, x: int, y: int) -> bytes:
        """PNG bytes of tile ``z/x/y`` (a transparent tile where the scene is not)."""
        n = self.tile_px
        left, bottom, right, top = tile_bounds(z, x, y)
        scene = self.bounds_3857
        inside = max(left, scene[0]), max(bottom, scene[1]), min(right, scene[2]), min(top, scene[3])
        if inside[0] >= inside[2] or inside[1] >= inside[3]:
            return self._empty
        # where the scene's part lands in the tile, in tile pixels (rounded: sub-pixel shifts at the scene edge)
        px = n / (right - left)
        c0, c1 = round((inside[0] - left) * px), round((inside[2] - left) * px)
        r0, r1 = round((top - inside[3]) * px), round((top - inside[1]) * px)
        if c1 <= c0 or r1 <= r0:
            return self._empty
        window = from_bounds(*inside, transform=self._vrt.transform)
        with self._lock:
            data = self._vrt.read(self.bands, window=window, out_shape=(len(self.bands), r1 - r0, c1 - c0),
                                  resampling=Resampling.bilinear)
            valid = self._vrt.dataset_mask(window=window, out_shape=(r1 - r0, c1 - c0))
        rgba = np.zeros((4, n, n), np.uint8)
        rgba[:3, r0:r1, c0:c1] = self._scale(data)
        rgba[3, r0:r1, c0:c1] = np.where(valid > 0, 255, 0)
        return png(rgba)

    def close(self) -> None:
        self._vrt.close()


def stretch(dataset: rasterio.DatasetReader, bands: list[int]):
    """A function from pixel values (bands, h, w) to uint8 (3, h, w): 8-bit imagery as it is; other pixel
    types stretched per band from the 2nd to the 98th percentile of a small overview read."""
    if dataset.dtypes[bands[0] - 1] == "uint8":
        low, high = np.zeros(len(bands)), np.full(len(bands), 255.0)
    else:
        f = STRETCH_SAMPLE_PX / max(dataset.width, dataset.height)
        shape = (len(bands), max(1, round(dataset.height * min(f, 1))), max(1, round(dataset.width * min(f, 1))))
        sample = dataset.read(bands, out_shape=shape, masked=True).astype("float64")
        low = np.array([np.nanpercentile(band.filled(np.nan), 2) for band in sample])
        high = np.array([np.nanpercentile(band.filled(np.nan), 98) for band in sample])
        if not np.isfinite(low).all():
            raise InputError(f"{dataset.name}: the imagery has no valid pixel to show")
    span = np.maximum(high - low, 1e-9)[:, None, None]

    def to_uint8(data: np.ndarray) -> np.ndarray:
        scaled = np.clip((data.astype(np.float32) - low[:, None, None]) / span * 255, 0, 255).astype(np.uint8)
        return np.repeat(scaled, 3, axis=0) if len(scaled) == 1 else scaled

    return to_uint8


def png(rgba: np.ndarray) -> bytes:
    """PNG bytes of a (4, h, w) uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.moveaxis(rgba, 0, -1), "RGBA").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
