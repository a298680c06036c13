"""Vector files in and out: labels from any format pyogrio reads; tables written atomically by extension."""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import shapely

from openfootprints.errors import InputError
from openfootprints.io.atomic import atomic_path

FORMATS = {".parquet": "parquet", ".geoparquet": "parquet", ".geojson": "GeoJSON", ".json": "GeoJSON",
           ".fgb": "FlatGeobuf", ".gpkg": "GPKG", ".csv": "csv"}


def read_polygons(path: str | os.PathLike, crs=None, bounds: tuple[float, float, float, float] | None = None,
                  fix_invalid: bool = False, allow_empty: bool = False) -> gpd.GeoDataFrame:
    """Read building polygons, reprojected to ``crs`` when given.

    Non-polygon geometries and invalid polygons are errors (invalid ones are repaired instead when
    ``fix_invalid``). ``bounds`` (in ``crs``) checks that the labels overlap that area.
    """
    path = str(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    try:
        if Path(path).suffix.lower() in (".parquet", ".geoparquet"):
            frame = gpd.read_parquet(path)
        else:
            frame = gpd.read_file(path, engine="pyogrio")
    except Exception as err:  # pyogrio / pyarrow raise many types; all mean "cannot read this"
        raise InputError(f"{path}: not a readable vector file ({str(err).splitlines()[0]})") from err
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    if frame.empty:
        if allow_empty:
            return gpd.GeoDataFrame(geometry=[], crs=crs or "EPSG:4326")
        raise InputError(f"{path}: contains no geometries")
    if frame.crs is None:
        raise InputError(f"{path}: the file has no CRS; write it with one (GeoJSON is EPSG:4326 by definition)")
    kinds = set(frame.geom_type)
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise InputError(f"{path}: expected polygons, found {sorted(kinds - {'Polygon', 'MultiPolygon'})}")
    invalid = ~frame.geometry.is_valid
    if invalid.any():
        if not fix_invalid:
            first = frame.index[np.argmax(invalid.to_numpy())]
            reason = shapely.is_valid_reason(frame.geometry[first])
            raise InputError(f"{path}: {int(invalid.sum())} invalid polygon(s), first at row {first} ({reason}); "
                             "repair them or set data.fix_invalid=true")
        frame.loc[invalid, "geometry"] = shapely.make_valid(frame.geometry[invalid].to_numpy())
        frame = frame.explode(index_parts=False)
        frame = frame[frame.geom_type == "Polygon"]
    if crs is not None:
        frame = frame.to_crs(crs)
    if bounds is not None and not frame.intersects(shapely.box(*bounds)).any():
        raise InputError(f"{path}: no polygon overlaps the imagery (labels bounds {_plain(frame.total_bounds)}, "
                         f"imagery bounds {_plain(bounds)} in {frame.crs.to_string()})")
    return frame.reset_index(drop=True)


def _plain(bounds) -> str:
    """Bounds as ``[west, south, east, north]`` with 3 decimals (no numpy reprs in messages)."""
    return "[" + ", ".join(f"{float(v):.3f}" for v in bounds) + "]"


def write_table(frame: gpd.GeoDataFrame, path: str | os.PathLike) -> Path:
    """Write a GeoDataFrame by file extension (GeoParquet, GeoJSON, FlatGeobuf, GPKG, CSV with WKT geometry)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown output format '{path.suffix}'; use one of {sorted(FORMATS)}")
    with atomic_path(path) as tmp:
        if kind == "parquet":
            write_geoparquet(frame, tmp)
        elif kind == "csv":
            table = frame.drop(columns="geometry").assign(geometry=shapely.to_wkt(frame.geometry.to_numpy(), rounding_precision=8))
            table.to_csv(tmp, index=False)
        elif kind == "GeoJSON":  # 7 decimals of a degree: about 1 cm
            pyogrio.write_dataframe(frame, tmp, driver=kind, layer_options={"COORDINATE_PRECISION": 7})
        else:
            pyogrio.write_dataframe(frame, tmp, driver=kind)
    return path


def write_geoparquet(frame: gpd.GeoDataFrame, path: str | os.PathLike) -> None:
    """GeoParquet 1.1 with WKB geometry and a bbox covering column: what DuckDB types as GEOMETRY and GDAL,
    GeoPandas and pyarrow read, and one encoding for every file, empty or not, so the parts of a partitioned
    dataset always read as one."""
    frame.to_parquet(path, index=False, geometry_encoding="WKB", write_covering_bbox=True)


def read_table(path: str | os.PathLike, fix_invalid: bool = False) -> gpd.GeoDataFrame:
    """Read a buildings table written by :func:`write_table` (any of its formats)."""
    path = str(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if Path(path).suffix.lower() == ".csv":
        table = pd.read_csv(path)
        if "geometry" not in table:
            raise InputError(f"{path}: CSV without a 'geometry' column (WKT)")
        return gpd.GeoDataFrame(table.drop(columns="geometry"), geometry=shapely.from_wkt(table["geometry"]), crs="EPSG:4326")
    return read_polygons(path, allow_empty=True, fix_invalid=fix_invalid)


def write_table_parts(parts: list[Path], path: str | os.PathLike, empty: gpd.GeoDataFrame) -> Path:
    """Write tables saved as GeoParquet parts as one table at ``path`` (format by extension).

    GeoParquet is streamed part by part (memory: one part); other formats are assembled in memory.
    ``empty`` supplies the schema when there is no part.
    """
    path = Path(path)
    if not parts:
        return write_table(empty.iloc[:0], path)
    if FORMATS.get(path.suffix.lower()) != "parquet":
        return write_table(pd.concat([gpd.read_parquet(p) for p in parts], ignore_index=True), path)
    schema = pq.read_schema(parts[0])
    geo = json.loads(schema.metadata[b"geo"])
    for column in geo["columns"].values():
        column.pop("bbox", None)  # the first part's extent is not the table's
    schema = schema.with_metadata({**schema.metadata, b"geo": json.dumps(geo).encode()})
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part).cast(schema))
    return path
