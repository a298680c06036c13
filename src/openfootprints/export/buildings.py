"""The buildings table: the Open Buildings schema in EPSG:4326, plus our own columns.

Columns: ``latitude, longitude`` (centroid, degrees), ``area_in_meters`` (on the WGS84 ellipsoid, m²),
``confidence`` (0–1, calibrated when the model is), ``geometry`` (polygon), ``full_plus_code`` (Plus Code
of the centroid), then ``raw_confidence`` (mean probability inside the building), ``model_version`` and
``source``.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from openlocationcode import openlocationcode as olc
from pyproj import Transformer

from openfootprints.io.geo import geodesic_areas_m2, to_lonlat

COLUMNS = ["latitude", "longitude", "area_in_meters", "confidence", "geometry", "full_plus_code",
           "raw_confidence", "model_version", "source"]


def buildings_table(polygons: np.ndarray, confidence: np.ndarray, crs: Any, model_version: str = "",
                    source: str = "", min_area_m2: float = 0.0, raw_confidence: np.ndarray | None = None
                    ) -> gpd.GeoDataFrame:
    """Make the table from polygons in ``crs``; buildings under ``min_area_m2`` on the ground are dropped.

    ``raw_confidence`` defaults to ``confidence`` (an uncalibrated model).
    """
    raw_confidence = confidence if raw_confidence is None else raw_confidence
    polygons = np.asarray(polygons, dtype=object)
    lonlat = to_lonlat(polygons, crs) if len(polygons) else polygons
    area = geodesic_areas_m2(lonlat)
    keep = area >= min_area_m2
    polygons, lonlat, area = polygons[keep], lonlat[keep], area[keep]
    confidence, raw_confidence = np.asarray(confidence)[keep], np.asarray(raw_confidence)[keep]
    centroids = shapely.get_coordinates(shapely.centroid(polygons)) if len(polygons) else np.zeros((0, 2))
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(centroids[:, 0], centroids[:, 1])
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    table = gpd.GeoDataFrame({
        "latitude": lat,
        "longitude": lon,
        "area_in_meters": np.round(area, 2),
        "confidence": np.round(confidence.astype(np.float64), 4),
        "geometry": lonlat,
        "full_plus_code": [olc.encode(a, o) for a, o in zip(lat, lon)],
        "raw_confidence": np.round(raw_confidence.astype(np.float64), 4),
        "model_version": model_version,
        "source": source,
    }, geometry="geometry", crs="EPSG:4326")
    # typed strings even when empty: every part of a partitioned dataset has the same schema
    table = table.astype({"full_plus_code": "string", "model_version": "string", "source": "string"})
    return table[COLUMNS]
