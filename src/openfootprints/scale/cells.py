"""An area of interest cut into the cells of a quadkey grid (Web-Mercator tiles at one zoom).

The area can be a bounding box in degrees, a polygon file, or the imagery's own footprint. A cell is a
work unit: its buildings are those whose centroid lies in it (half-open, see
:func:`openfootprints.pipeline.centroids_in`), so cells that tile the area give each building to exactly one.
At zoom 14 a cell is about 2.4 km across at the equator (about 6 km² at 0.5 m, 24 Mpx).

The cell contract every engine keeps (local, :mod:`openfootprints.scale.engine`; Ray,
:mod:`openfootprints.scale.ray_engine`) is here too: a cell's config, where its table goes, its summary and result.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import cast

import mercantile
import numpy as np
import shapely
from pyproj import Geod
from omegaconf import DictConfig, OmegaConf
from shapely.geometry.base import BaseGeometry

from openfootprints.errors import InputError
from openfootprints.io.geo import to_lonlat
from openfootprints.io.raster import Scene
from openfootprints.io.storage import Storage
from openfootprints.io.vector import read_polygons


@dataclass(frozen=True)
class Cell:
    """One work unit: a quadkey tile and its bounds [west, south, east, north] in degrees."""

    quadkey: str
    bbox: tuple[float, float, float, float]


def cell_of(tile: mercantile.Tile) -> Cell:
    b = mercantile.bounds(tile)
    return Cell(mercantile.quadkey(tile), (b.west, b.south, b.east, b.north))


def scene_footprint(scene: Scene) -> BaseGeometry:
    """The scene's outline in degrees (its edges densified, so a UTM scene is not taken for its bounding box)."""
    outline = shapely.segmentize(shapely.box(*scene.bounds), max_segment_length=max(scene.width, scene.height)
                                 * abs(scene.transform.a) / 50)
    return to_lonlat(np.array([outline]), scene.crs)[0]


def area_of_interest(scene: Scene, aoi: str | list[float] | None) -> BaseGeometry:
    """The area to cover, in degrees, clipped to the scene: a bbox [w, s, e, n], a polygon file, or (None) all of it."""
    footprint = scene_footprint(scene)
    if aoi is None:
        return footprint
    if isinstance(aoi, (list, tuple)):
        if len(aoi) != 4 or not (aoi[0] < aoi[2] and aoi[1] < aoi[3]):
            raise InputError(f"scale.aoi={list(aoi)}: a box is [west, south, east, north] with west < east, south < north")
        area: BaseGeometry = shapely.box(aoi[0], aoi[1], aoi[2], aoi[3])
    else:
        polygons = read_polygons(aoi, crs="EPSG:4326")
        area = shapely.union_all(polygons.geometry.to_numpy())
    clipped = area.intersection(footprint)
    if clipped.is_empty:
        raise InputError(f"{aoi}: the area of interest does not overlap the imagery {scene.path}")
    return clipped


def area_km2(geometry: shapely.Geometry) -> float:
    """Geodesic area (WGS84) of a geometry in degrees, in km²."""
    return abs(Geod(ellps="WGS84").geometry_area_perimeter(geometry)[0]) / 1e6


def cells_covering(area: BaseGeometry, zoom: int) -> list[Cell]:
    """The quadkey cells at ``zoom`` whose tile intersects ``area`` (degrees), in quadkey order."""
    if not 0 <= zoom <= 22:
        raise InputError(f"scale.zoom={zoom}: must be 0–22")
    west, south, east, north = area.bounds
    cells = []
    for tile in mercantile.tiles(west, south, east, north, zoom):
        cell = cell_of(tile)
        if shapely.box(*cell.bbox).intersection(area).area > 0:  # not cells that only touch it
            cells.append(cell)
    return sorted(cells, key=lambda c: c.quadkey)


def manifest_json(cells: list[Cell], identity: dict) -> str:
    """The run's work units as JSON, with what identifies the run (scene, model, zoom, area): what a resumed
    run reads back and checks."""
    return json.dumps({**identity, "cells": [asdict(c) for c in cells]}, indent=1)


def parse_manifest(text: str) -> dict:
    """A manifest's JSON back into a record with :class:`Cell` objects."""
    record = json.loads(text)
    record["cells"] = [Cell(c["quadkey"], tuple(c["bbox"])) for c in record["cells"]]
    return record


@dataclass
class CellResult:
    """What one cell gave: its summary from ``detect`` or the error of its last attempt."""

    quadkey: str
    attempts: int
    summary: dict = field(default_factory=dict)
    error: str | None = None


def cell_key(cell: Cell) -> str:
    """Where a cell's table goes in the run's folder."""
    return f"buildings/cell={cell.quadkey}/part-0.parquet"


def cell_summary(summary: dict, cell: Cell, out: Storage) -> dict:
    """A cell's summary from ``detect``'s: its quadkey, where its table is, and the run's config (a cell's config is
    the run's with ``detect.bbox`` the cell)."""
    return {**summary, "quadkey": cell.quadkey, "output": out.uri(cell_key(cell)), "config": out.uri("config.yaml")}


def cell_config(cfg: DictConfig, cell: Cell) -> DictConfig:
    """The config of one cell: the run's, with ``detect.bbox`` the cell and no probability raster."""
    one = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    one.detect.bbox = list(cell.bbox)
    one.detect.probabilities = None
    return one
