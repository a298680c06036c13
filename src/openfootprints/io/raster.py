"""Imagery in: GeoTIFF / COG / VRT files and XYZ tile folders, read window by window.

A :class:`Scene` is a georeferenced grid that the rest of the pipeline reads from. It can be the file's
own grid or a resampled one at a chosen ground resolution (metres per pixel), so that a model trained at
0.5 m sees 0.5 m pixels whatever the imagery. Pixels outside the valid area (nodata, mask band, alpha,
missing tiles) are reported in a boolean mask beside each read.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from openfootprints.errors import InputError
from openfootprints.io.geo import fits_crs, pixel_size_m
from openfootprints.io.mosaic import mosaic_vrt, raster_files, raster_folder_vrt, raster_list
from openfootprints.io.stac import is_stac, stac_rasters
from openfootprints.io.storage import is_url
from openfootprints.io.xyz import is_tile_folder, tile_folder_vrt

RESAMPLE_TOLERANCE = 0.05  # resample only when the ground resolution differs by more than 5 %


@dataclass
class Scene:
    """A raster scene seen on a working grid.

    ``width``/``height`` are in working-grid pixels; ``transform`` maps them to ``crs``; ``scale`` is the
    number of file pixels per working pixel (1.0 when no resampling happens).
    """

    path: str
    source: str  # what rasterio opens: the path, or VRT XML for a tile folder
    crs: rasterio.crs.CRS
    transform: Affine
    width: int
    height: int
    bands: list[int]
    dtype: str
    resolution_m: float
    scale: float = 1.0
    _dataset: rasterio.DatasetReader | None = field(default=None, repr=False, compare=False)

    @property
    def dataset(self) -> rasterio.DatasetReader:
        """The open rasterio dataset (opened lazily, once per process)."""
        if self._dataset is None or self._dataset.closed or getattr(self, "_pid", None) != os.getpid():
            self._dataset = rasterio.open(self.source)
            self._pid = os.getpid()
        return self._dataset

    @property
    def all_valid(self) -> bool:
        """Whether every pixel is valid: no band has a nodata value, a mask or an alpha band (GDAL's mask flags)."""
        return all(flags == [MaskFlags.all_valid] for flags in self.dataset.mask_flag_enums)

    def __getstate__(self):  # datasets do not cross process boundaries; reopen on the other side
        state = self.__dict__.copy()
        state["_dataset"] = None
        return state

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in ``crs``."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return min(left, right), min(bottom, top), max(left, right), max(bottom, top)

    def window_box(self, window: Window):
        """A working-grid window as a shapely box in the scene's CRS."""
        left, top = self.transform @ (window.col_off, window.row_off)
        right, bottom = self.transform @ (window.col_off + window.width, window.row_off + window.height)
        return shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))

    def coarse_valid(self, window: Window, shape: tuple[int, int]) -> np.ndarray:
        """(rows, cols) bool, ``shape``: whether the pixels of ``window`` (working-grid pixels) are valid, read from
        the mask at that coarser size (nearest pixel). For cheap questions about large areas: how much of a block
        has imagery."""
        if self.all_valid:  # nothing to read: GDAL would resample an all-valid mask of the whole area
            return np.ones(shape, bool)
        src = Window(window.col_off * self.scale, window.row_off * self.scale, window.width * self.scale,
                     window.height * self.scale)
        return self.dataset.dataset_mask(window=src, out_shape=shape, resampling=Resampling.nearest) > 0

    def valid_area(self, max_px: int = 4096):
        """Where the scene has valid pixels, as a (multi)polygon in ``crs``, traced from the mask read at most
        ``max_px`` pixels a side (so its outline is exact to the scene's pixel, or to 1/max_px of its extent)."""
        from rasterio.features import shapes

        factor = max(1.0, max(self.dataset.width, self.dataset.height) / max_px)
        h, w = max(1, round(self.dataset.height / factor)), max(1, round(self.dataset.width / factor))
        mask = (self.dataset.dataset_mask(out_shape=(h, w), resampling=Resampling.nearest) > 0).astype(np.uint8)
        transform = self.dataset.transform * Affine.scale(self.dataset.width / w, self.dataset.height / h)
        parts = [shapely.geometry.shape(g) for g, v in shapes(mask, mask=mask.astype(bool), transform=transform)
                 if v == 1]
        return shapely.union_all(parts) if parts else shapely.Polygon()

    def read(self, window: Window, dtype: str | None = "float32", out_shape: tuple[int, int] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Read a working-grid window that lies inside the scene.

        Returns ``(image, valid)``: image (bands, h, w) in the file's units, as ``dtype`` (float32 by
        default; ``None`` keeps the file's pixel type); valid bool (h, w). ``(h, w)`` is the window's size,
        or ``out_shape`` (pixels) when given: the window resampled to that many pixels (a zoom).
        """
        h, w = out_shape or (int(window.height), int(window.width))
        zoomed = (h, w) != (int(window.height), int(window.width))
        src = Window(window.col_off * self.scale, window.row_off * self.scale,
                     window.width * self.scale, window.height * self.scale)
        resampling = Resampling.bilinear if self.scale != 1.0 or zoomed else Resampling.nearest
        try:
            image = self.dataset.read(self.bands, window=src, out_shape=(len(self.bands), h, w),
                                      resampling=resampling, out_dtype=dtype)
            if self.all_valid:  # no nodata, mask or alpha: what dataset_mask would say, without reading it
                valid = np.ones((h, w), bool)
            else:
                valid = self.dataset.dataset_mask(window=src, out_shape=(h, w), resampling=Resampling.nearest) > 0
        except RasterioIOError as err:
            reason = str(err).replace("Read failed. See previous exception for details.",
                                      "the file is truncated or damaged")  # GDAL's reason is only in its log
            raise InputError(f"{self.path}: cannot read pixels ({reason}); check it with gdalinfo -checksum") from err
        return image, valid


def open_scene(path: str | os.PathLike, bands: list[int] | None = None, resolution_m: float | None = None) -> Scene:
    """Open imagery as a :class:`Scene`.

    ``bands`` are 1-based band indexes (default: all colour bands, the alpha band left out);
    ``resolution_m`` resamples to that ground resolution in metres per pixel when it differs from the file's.
    ``path`` can be a file, a folder of GeoTIFFs or XYZ tiles, a local STAC catalog or item collection, a text
    file listing scenes (one path or URL per line; all of these as one mosaic), or a URL of a GeoTIFF / COG / VRT in object storage (``s3://…``, ``gs://…``, ``/vsis3/…``,
    ``/vsigs/…``), read by GDAL with its usual environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_S3_ENDPOINT``,
    ``GOOGLE_APPLICATION_CREDENTIALS``, …).
    """
    path = str(path)
    if is_url(path):  # s3://, gs://, /vsis3/ …: GDAL reads it, with credentials from the environment
        return scene_of(path, path, bands, resolution_m)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or folder")
    source = path
    if is_stac(path):
        source = mosaic_vrt(stac_rasters(path))
    elif path.lower().endswith(".txt"):  # a list of scenes, one path or URL per line
        source = mosaic_vrt(raster_list(path))
    elif os.path.isdir(path):
        if is_tile_folder(path):
            source = tile_folder_vrt(path)
        elif raster_files(path):
            source = raster_folder_vrt(path)
        else:
            raise InputError(f"{path}: a folder, but neither GeoTIFFs nor an XYZ tile folder (<z>/<x>/<y>.<ext>)")
    return scene_of(path, source, bands, resolution_m)


def scene_of(path: str, source: str, bands: list[int] | None, resolution_m: float | None) -> Scene:
    """:func:`open_scene` once the source to open is known (a path, a URL or VRT XML)."""
    try:
        with warnings.catch_warnings():  # no georeferencing: refused below, in words
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(source)
    except RasterioIOError as err:
        reason = (str(err).strip().splitlines() or ["unknown error"])[0]
        if is_url(path):
            raise InputError(f"{path}: cannot open ({reason}); check the URL and the storage credentials "
                             "(AWS_* or GOOGLE_APPLICATION_CREDENTIALS environment variables)") from err
        raise InputError(f"{path}: not a readable raster ({reason})") from err
    if ds.crs is None:
        raise InputError(f"{path}: the raster has no CRS; georeference it (e.g. gdal_edit.py -a_srs) and retry")
    if ds.transform == Affine.identity() or ds.transform.b != 0 or ds.transform.d != 0:
        raise InputError(f"{path}: the raster needs a north-up geotransform (rotated or missing transforms are not supported)")
    if bands is None:
        bands = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci.name != "alpha"] or [1]
    bad = [b for b in bands if not 1 <= b <= ds.count]
    if bad:
        raise InputError(f"{path}: {ds.count} band(s), but band(s) {bad} are asked for (bands {list(bands)}: the "
                         f"model's input bands, or data.bands); give imagery with {len(bands)} band(s), or pick "
                         f"{len(bands)} of bands 1–{ds.count} with data.bands=[…]")
    if not fits_crs(ds.crs, ds.bounds):
        raise InputError(f"{path}: its bounds {[round(v, 3) for v in ds.bounds]} are not on the globe in its CRS "
                         f"{ds.crs.to_string()}; the CRS is wrong (set the right one with gdal_edit.py -a_srs) or the "
                         "file is damaged")
    native_res = pixel_size_m(ds.crs, ds.transform, ds.width, ds.height)
    scale = 1.0
    if resolution_m and abs(resolution_m / native_res - 1) > RESAMPLE_TOLERANCE:
        scale = resolution_m / native_res
    width, height = max(1, math.floor(ds.width / scale)), max(1, math.floor(ds.height / scale))
    scene = Scene(path=path, source=source, crs=ds.crs, transform=ds.transform @ Affine.scale(scale),
                  width=width, height=height, bands=list(bands), dtype=ds.dtypes[bands[0] - 1],
                  resolution_m=native_res * scale, scale=scale)
    scene._dataset, scene._pid = ds, os.getpid()
    return scene



def display_rgb(image: np.ndarray, valid: np.ndarray | None = None, percentiles: tuple[float, float] = (2, 98)
                ) -> np.ndarray:
    """A (C, H, W) image in file units as (3, H, W) float in [0, 1] for a picture: the first three bands (or the
    first, grey), stretched between two percentiles of the valid pixels; 0 where not valid."""
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    valid = np.ones(rgb.shape[1:], bool) if valid is None else valid
    values = rgb[:, valid] if valid.any() else rgb.reshape(3, -1)
    lo, hi = np.percentile(values, percentiles[0]), np.percentile(values, percentiles[1])
    return np.where(valid, np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1), 0.0)
