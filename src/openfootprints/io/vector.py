"""Vector files in and out: labels from any format pyogrio reads; tables written atomically by extension."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import shapely

from openfootprints.errors import InputError
from openfootprints.io.atomic import atomic_path
from openfootprints.io.formats import FORMATS
from openfootprints.io.geo import fits_crs
from openfootprints.io.storage import first_line

log = logging.getLogger(__name__)



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
        with warnings.catch_warnings(record=True) as caught:  # GDAL's complaints: logged below, or the error says it
            warnings.simplefilter("always")
            if Path(path).suffix.lower() in (".parquet", ".geoparquet") or is_parquet(path):
                frame = gpd.read_parquet(path)
            elif is_osm(path):
                frame = osm_buildings(path)
            else:
                frame = gpd.read_file(path, engine="pyogrio")
    except InputError:
        raise
    except Exception as err:  # pyogrio / pyarrow raise many types; all mean "cannot read this"
        raise InputError(f"{path}: not a readable vector file ({first_line(err)})") from err
    for warning in caught:
        log.warning("%s: %s", path, warning.message)
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    if frame.empty:
        if allow_empty:
            return gpd.GeoDataFrame(geometry=[], crs=crs or "EPSG:4326")
        raise InputError(f"{path}: contains no geometries")
    if frame.crs is None:
        raise InputError(f"{path}: the file has no CRS; write it with one (GeoJSON is EPSG:4326 by definition)")
    check_coordinates(frame, path)
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


def is_osm(path: str) -> bool:
    """Whether a path names an OpenStreetMap extract (``.osm`` XML or ``.osm.pbf``/``.pbf``)."""
    return path.lower().endswith((".osm", ".pbf"))


def osm_buildings(path: str) -> gpd.GeoDataFrame:
    """The ``building=*`` polygons of an OpenStreetMap extract (closed ways and multipolygon relations, through
    GDAL's OSM driver), EPSG:4326; ``building=no`` is left out. A file without any is an error."""
    frame = gpd.read_file(path, engine="pyogrio", layer="multipolygons", columns=["osm_id", "osm_way_id", "building"])
    frame = frame[frame["building"].notna() & (frame["building"] != "no")]
    if frame.empty:
        raise InputError(f"{path}: no building=* polygons in this OpenStreetMap file")
    return frame.reset_index(drop=True)


def is_parquet(path: str) -> bool:
    """Whether the file starts with Parquet's magic bytes (a GeoParquet file under another extension)."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def check_coordinates(frame: gpd.GeoDataFrame, path: str) -> None:
    """Refuse coordinates that cannot be in the frame's CRS (off the globe, or not finite): a file whose CRS is
    missing or wrong, or a damaged one."""
    bounds = frame.total_bounds
    if not fits_crs(frame.crs, bounds):
        geojson = " (GeoJSON without a readable 'crs' member is EPSG:4326)" if path.lower().endswith("json") else ""
        raise InputError(f"{path}: coordinates {_plain(bounds)} are not on the globe in its CRS "
                         f"{frame.crs.to_string()}; the file's CRS is wrong{geojson} or the file is damaged")


def _plain(bounds) -> str:
    """Bounds as ``[west, south, east, north]`` with 3 decimals (no numpy reprs in messages)."""
    return "[" + ", ".join(f"{float(v):.3f}" for v in bounds) + "]"


def write_table(frame: gpd.GeoDataFrame, path: str | os.PathLike, feature_ids: bool = False) -> Path:
    """Write a GeoDataFrame by file extension (GeoParquet, GeoJSON, FlatGeobuf, GPKG, CSV with WKT geometry).

    ``feature_ids``: GeoJSON features get numeric ids 0, 1, … in row order (a web map's feature state needs
    them)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown output format '{path.suffix}'; use one of {sorted(FORMATS)}")
    try:
        with atomic_path(path) as tmp:  # a full disk is said there; other failures of GDAL's writers here
            if kind == "parquet":
                write_geoparquet(frame, tmp)
            elif kind == "csv":
                table = frame.drop(columns="geometry").assign(geometry=shapely.to_wkt(frame.geometry.to_numpy(), rounding_precision=8))
                table.to_csv(tmp, index=False)
            elif kind == "GeoJSON":  # 7 decimals of a degree: about 1 cm
                options = {"COORDINATE_PRECISION": 7, **({"ID_GENERATE": "YES"} if feature_ids else {})}
                pyogrio.write_dataframe(frame, tmp, driver=kind, layer_options=options)
            else:
                pyogrio.write_dataframe(frame, tmp, driver=kind)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as err:  # e.g. SQLite's commit (GPKG)
        raise InputError(f"{path}: cannot write ({first_line(err)}); check that its disk has room") from err
    return path


def write_geoparquet(frame: gpd.GeoDataFrame, path: str | os.PathLike) -> None:
    """GeoParquet 1.1 with WKB geometry and a bbox covering column: what DuckDB types as GEOMETRY and GDAL,
    GeoPandas and pyarrow read, and one encoding for every file, empty or not, so the parts of a partitioned
    dataset always read as one."""
    frame.to_parquet(path, index=False, geometry_encoding="WKB", write_covering_bbox=True)


def read_table(path: str | os.PathLike, fix_invalid: bool = False) -> gpd.GeoDataFrame:
    """Read a buildings table written by :func:`write_table` (any of its formats), or the cell-partitioned
    GeoParquet dataset of ``openfootprints scale`` (its ``buildings/`` folder, or the run's folder above it)."""
    path = str(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        return read_dataset(Path(path))
    if Path(path).suffix.lower() == ".csv":
        try:
            table = pd.read_csv(path)
        except ValueError as err:  # not text (UnicodeDecodeError), not CSV (ParserError), no columns (EmptyDataError)
            raise InputError(f"{path}: not a readable CSV table ({first_line(err)})") from err
        if "geometry" not in table:
            raise InputError(f"{path}: CSV without a 'geometry' column (WKT)")
        try:
            geometry = shapely.from_wkt(table["geometry"])
        except (shapely.errors.ShapelyError, TypeError) as err:  # bad WKT; numbers or empty cells
            raise InputError(f"{path}: a 'geometry' that is not WKT ({first_line(err)})") from err
        frame = gpd.GeoDataFrame(table.drop(columns="geometry"), geometry=geometry, crs="EPSG:4326")
        if not (frame.geometry.isna() | frame.geometry.is_empty).all():
            check_coordinates(frame, path)
        return frame
    return read_polygons(path, allow_empty=True, fix_invalid=fix_invalid)


def read_dataset(folder: Path) -> gpd.GeoDataFrame:
    """A folder of GeoParquet files (Hive-partitioned, as ``scale`` writes ``buildings/cell=…/part-0.parquet``)
    as one table in EPSG:4326; a scale run's folder is read through its ``buildings/``."""
    if (folder / "buildings").is_dir():
        folder = folder / "buildings"
    if not any(folder.rglob("*.parquet")):
        raise InputError(f"{folder}: a folder without GeoParquet files; give a buildings table or a scale run's folder")
    try:
        frame = gpd.read_parquet(folder)
    except Exception as err:  # pyarrow raises many types; all mean "cannot read this dataset"
        raise InputError(f"{folder}: not a readable GeoParquet dataset ({first_line(err)})") from err
    return frame.to_crs("EPSG:4326") if frame.crs is not None else frame


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
