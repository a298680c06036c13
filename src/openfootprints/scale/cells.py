"""An area of interest cut into the cells of a quadkey grid (Web-Mercator tiles at one zoom).

The area can be a bounding box in degrees, a polygon file, or the imagery's own footprint. A cell is a
work unit: its buildings are those whose centroid lies in it (half-open, see
:func:`openfootprints.pipeline.centroids_in`), so cells that tile the area give each building to exactly one.
At zoom 14 a cell is about 2.4 km across at the equator (about 6 km² at 0.5 m, 24 Mpx).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import mercantile
import shapely
from rasterio.warp import transform_bounds

from openfootprints.errors import InputError
from openfootprints.io.atomic import atomic_path
from openfootprints.io.raster import Scene
from openfootprints.io.vector import read_polygons


@dataclass(frozen=True)
class Cell:
    """One work unit: a quadkey tile and its bounds [west, south, east, north] in degrees."""

    quadkey: str
    bbox: tuple[float, float, float, float]


def cell_of(tile: mercantile.Tile) -> Cell:
    b = mercantile.bounds(tile)
    return Cell(mercantile.quadkey(tile), (b.west, b.south, b.east, b.north))


def scene_lonlat_bounds(scene: Scene) -> tuple[float, float, float, float]:
    """The scene's footprint in degrees [west, south, east, north]."""
    return transform_bounds(scene.crs, "EPSG:4326", *scene.bounds, densify_pts=21)


def area_of_interest(scene: Scene, aoi: str | list[float] | None) -> shapely.Geometry:
    """The area to cover, in degrees, clipped to the scene: a bbox [w, s, e, n], a polygon file, or (None) all of it."""
    footprint = shapely.box(*scene_lonlat_bounds(scene))
    if aoi is None:
        return footprint
    if isinstance(aoi, (list, tuple)):
        if len(aoi) != 4 or not (aoi[0] < aoi[2] and aoi[1] < aoi[3]):
            raise InputError(f"scale.aoi={list(aoi)}: a box is [west, south, east, north] with west < east, south < north")
        area = shapely.box(*aoi)
    else:
        polygons = read_polygons(aoi, crs="EPSG:4326")
        area = shapely.union_all(polygons.geometry.to_numpy())
    clipped = area.intersection(footprint)
    if clipped.is_empty:
        raise InputError(f"{aoi}: the area of interest does not overlap the imagery {scene.path}")
    return clipped


def cells_covering(area: shapely.Geometry, zoom: int) -> list[Cell]:
    """The quadkey cells at ``zoom`` whose tile intersects ``area`` (degrees), in quadkey order."""
    if not 0 <= zoom <= 22:
        raise InputError(f"scale.zoom={zoom}: must be 0–22")
    west, south, east, north = area.bounds
    cells = []
    for tile in mercantile.tiles(west, south, east, north, zoom):
        cell = cell_of(tile)
        if shapely.box(*cell.bbox).intersects(area):
            cells.append(cell)
    return sorted(cells, key=lambda c: c.quadkey)


def write_manifest(path: Path, cells: list[Cell], scene: str, model: str, zoom: int) -> Path:
    """The run's work units as JSON: what a resumed or distributed run reads back."""
    record = {"scene": scene, "model": model, "zoom": zoom, "cells": [asdict(c) for c in cells]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return path


def read_manifest(path: Path) -> dict:
    record = json.loads(Path(path).read_text())
    record["cells"] = [Cell(c["quadkey"], tuple(c["bbox"])) for c in record["cells"]]
    return record
