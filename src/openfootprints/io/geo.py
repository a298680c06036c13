"""Ground geometry: metres on the ground for any CRS, measured geodesically (never from map units)."""

from __future__ import annotations

import math

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer

WGS84 = Geod(ellps="WGS84")


def ground_scale(crs: CRS | str, lon: float, lat: float) -> tuple[float, float]:
    """Map units per metre on the ground, eastward and northward, at (lon, lat) in degrees."""
    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x0, y0 = to_crs.transform(lon, lat)
    step = 10.0
    lon_e, lat_e, _ = WGS84.fwd(lon, lat, 90.0, step)
    lon_n, lat_n, _ = WGS84.fwd(lon, lat, 0.0, step)
    xe, ye = to_crs.transform(lon_e, lat_e)
    xn, yn = to_crs.transform(lon_n, lat_n)
    return math.hypot(xe - x0, ye - y0) / step, math.hypot(xn - x0, yn - y0) / step


def pixel_size_m(crs: CRS | str, transform: Affine, width: int, height: int) -> float:
    """Ground size of one pixel in metres at the centre of a grid (geometric mean of x and y)."""
    cx, cy = transform @ (width / 2, height / 2)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(cx, cy)
    sx, sy = ground_scale(crs, lon, lat)
    return math.sqrt(abs(transform.a) / sx * abs(transform.e) / sy)


def geodesic_areas_m2(polygons_lonlat: np.ndarray) -> np.ndarray:
    """Area on the WGS84 ellipsoid in m² of each polygon given in EPSG:4326 (shape (n,))."""
    return np.array([abs(WGS84.geometry_area_perimeter(p)[0]) for p in polygons_lonlat], dtype=np.float64)


def to_lonlat(geoms: np.ndarray, crs: CRS | str) -> np.ndarray:
    """Reproject an array of shapely geometries from ``crs`` to EPSG:4326 (lon, lat order)."""
    transformer = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def fits_crs(crs: CRS | str, bounds) -> bool:
    """Whether (minx, miny, maxx, maxy) in ``crs`` are finite and lie on the globe once in degrees (longitudes within
    ±360, latitudes ±90, with a degree to spare for grids whose outer pixels overhang a pole): false for coordinates
    written in another CRS than the one a file names (metres read as degrees) or damaged ones."""
    if not np.isfinite(bounds).all():
        return False
    minx, miny, maxx, maxy = bounds
    try:
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
            [minx, maxx, minx, maxx, (minx + maxx) / 2], [miny, miny, maxy, maxy, (miny + maxy) / 2], errcheck=True)
    except Exception:  # noqa: BLE001 — pyproj refuses coordinates it cannot transform in several ways
        return False
    return bool(np.isfinite([lon, lat]).all() and (np.abs(lon) <= 360).all() and (np.abs(lat) <= 91).all())


def degrees_to_crs(bounds_lonlat, crs) -> tuple[float, float, float, float]:
    """[west, south, east, north] in degrees to (minx, miny, maxx, maxy) in ``crs`` (densified edges)."""
    return Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform_bounds(*bounds_lonlat)
