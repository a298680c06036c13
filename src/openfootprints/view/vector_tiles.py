"""PMTiles archives of Mapbox Vector Tiles (MVT) from a table of polygons, so a web map can show large results.

Each zoom from ``min_zoom`` to ``max_zoom`` gets the tiles that the polygons touch; each tile holds the
polygons clipped to it (plus a small buffer, so outlines meet across tile edges) in tile coordinates
(``MVT_EXTENT`` units per tile side), with the table's columns as properties and the row number as feature id.
Past ``max_zoom`` a web map overzooms the last level. Tiles are gzip-compressed, written in tile-id order.
"""

from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import mapbox_vector_tile
import numpy as np
import pandas as pd
import shapely
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import Writer

from openfootprints import __version__
from openfootprints.io.atomic import atomic_path
from openfootprints.view.tilegrid import tile_bounds, tile_ranges, tile_size

MVT_EXTENT = 4096  # tile coordinates per tile side
BUFFER_UNITS = 64  # tile coordinates kept beyond each tile edge
POLYGONAL = (3, 6)  # shapely type ids of Polygon and MultiPolygon


@dataclass(frozen=True)
class Tileset:
    """What :func:`write_pmtiles` wrote: ``features`` rows in ``tiles`` tiles; ``bounds`` (w, s, e, n) in degrees."""

    path: Path
    layer: str
    features: int
    tiles: int
    min_zoom: int
    max_zoom: int
    bounds: tuple[float, float, float, float]


def write_pmtiles(frame: gpd.GeoDataFrame, path: str | os.PathLike, layer: str = "buildings",
                  min_zoom: int = 12, max_zoom: int = 16) -> Tileset:
    """Write the polygons of ``frame`` (any CRS) as one MVT layer named ``layer`` in a PMTiles archive.

    Feature ids are the row numbers of ``frame`` (0-based). Memory: the table plus one zoom's tile index.
    """
    if not 0 <= min_zoom <= max_zoom <= 24:
        raise ValueError(f"zooms must satisfy 0 <= min_zoom <= max_zoom <= 24, got {min_zoom}, {max_zoom}")
    if len(frame) == 0:
        raise ValueError("no features to tile")
    geoms = frame.geometry.to_crs("EPSG:3857").to_numpy()
    properties = feature_properties(frame)
    boxes = shapely.bounds(geoms)
    west, south, east, north = frame.geometry.to_crs("EPSG:4326").total_bounds
    lonlat_bounds = (float(west), float(south), float(east), float(north))
    tiles = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer = Writer(f)
        for z in range(min_zoom, max_zoom + 1):
            for tile_id, (x, y), members in tiles_at_zoom(boxes, z):
                data = encode_tile(geoms[members], [properties[i] for i in members], members, z, x, y, layer)
                if data is not None:
                    writer.write_tile(tile_id, gzip.compress(data, mtime=0))
                    tiles += 1
        if tiles == 0:
            raise ValueError("no polygon survived tiling")
        writer.finalize(archive_header(lonlat_bounds, min_zoom, max_zoom),
                        archive_metadata(frame, layer, min_zoom, max_zoom))
    return Tileset(Path(path), layer, len(frame), tiles, min_zoom, max_zoom, lonlat_bounds)


def tiles_at_zoom(boxes: np.ndarray, z: int):
    """Yield ``(tile_id, (x, y), rows)`` for every tile at zoom ``z`` touched by a box, in tile-id order.

    ``boxes`` (n, 4) are feature bounds in EPSG:3857; ``rows`` (int array) are the features in that tile.
    """
    margin = tile_size(z) * BUFFER_UNITS / MVT_EXTENT
    x0, x1, y0, y1 = tile_ranges(boxes, z, margin)
    nx, ny = x1 - x0 + 1, y1 - y0 + 1
    per_feature = nx * ny  # almost always 1 at building zooms
    rows = np.repeat(np.arange(len(boxes)), per_feature)
    k = np.arange(per_feature.sum()) - np.repeat(np.cumsum(per_feature) - per_feature, per_feature)
    width = np.repeat(nx, per_feature)
    tx, ty = np.repeat(x0, per_feature) + k % width, np.repeat(y0, per_feature) + k // width
    keys, inverse = np.unique(tx * (1 << z) + ty, return_inverse=True)
    ids = np.array([zxy_to_tileid(z, int(key >> z), int(key & ((1 << z) - 1))) for key in keys], dtype=np.int64)
    order = np.argsort(inverse, kind="stable")
    groups = np.split(rows[order], np.cumsum(np.bincount(inverse, minlength=len(keys)))[:-1])
    for i in np.argsort(ids):
        yield int(ids[i]), (int(keys[i] >> z), int(keys[i] & ((1 << z) - 1))), groups[i]


def encode_tile(geoms: np.ndarray, properties: list[dict], rows: np.ndarray, z: int, x: int, y: int,
                layer: str) -> bytes | None:
    """One MVT tile (uncompressed bytes) of polygons in EPSG:3857, or None when nothing polygonal is left."""
    left, bottom, right, top = tile_bounds(z, x, y)
    pad = (right - left) * BUFFER_UNITS / MVT_EXTENT
    clipped = shapely.clip_by_rect(geoms, left - pad, bottom - pad, right + pad, top + pad)
    scale = MVT_EXTENT / (right - left)
    local = shapely.transform(clipped, lambda c: np.column_stack(((c[:, 0] - left) * scale, (top - c[:, 1]) * scale)))
    # rounded to whole tile units, repaired where that broke a polygon, and oriented as MVT wants in y-down
    # coordinates, all at once, so that the encoder's slow per-feature checks can be skipped
    local = shapely.transform(local, np.round)
    broken = ~shapely.is_valid(local)
    local[broken] = shapely.make_valid(local[broken])
    local = shapely.orient_polygons(local, exterior_cw=False)
    keep = np.isin(shapely.get_type_id(local), POLYGONAL) & ~shapely.is_empty(local)
    features = [{"geometry": g, "properties": p, "id": int(r)}
                for g, p, r, k in zip(local, properties, rows, keep) if k]
    if not features:
        return None
    return mapbox_vector_tile.encode(
        {"name": layer, "features": features},
        default_options={"y_coord_down": True, "extents": MVT_EXTENT, "check_winding_order": False})


def feature_properties(frame: gpd.GeoDataFrame) -> list[dict]:
    """The non-geometry columns of each row as plain Python values; missing values (None, NaN) are left out."""
    columns = {}
    for name in frame.columns:
        if name == frame.geometry.name:
            continue
        series = frame[name]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            columns[name] = series.tolist()
        else:
            columns[name] = [v if v is None or isinstance(v, (str, bool, int, float)) else str(v) for v in series]
    return [{k: v[i] for k, v in columns.items() if not is_missing(v[i])} for i in range(len(frame))]


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def archive_header(bounds: tuple[float, float, float, float], min_zoom: int, max_zoom: int) -> dict:
    """The PMTiles header fields the writer does not fill; ``bounds`` (w, s, e, n) in degrees."""
    w, s, e, n = (round(v * 1e7) for v in bounds)
    return {"tile_type": TileType.MVT, "tile_compression": Compression.GZIP, "min_zoom": min_zoom,
            "max_zoom": max_zoom, "min_lon_e7": w, "min_lat_e7": s, "max_lon_e7": e, "max_lat_e7": n,
            "center_zoom": min_zoom, "center_lon_e7": (w + e) // 2, "center_lat_e7": (s + n) // 2}


def archive_metadata(frame: gpd.GeoDataFrame, layer: str, min_zoom: int, max_zoom: int) -> dict:
    """TileJSON-style metadata: the layer and the type of each of its fields."""
    def kind(series):
        if pd.api.types.is_bool_dtype(series):
            return "Boolean"
        return "Number" if pd.api.types.is_numeric_dtype(series) else "String"

    fields = {name: kind(frame[name]) for name in frame.columns if name != frame.geometry.name}
    return {"name": layer, "format": "pbf", "generator": f"openfootprints {__version__}",
            "vector_layers": [{"id": layer, "fields": fields, "minzoom": min_zoom, "maxzoom": max_zoom}]}
