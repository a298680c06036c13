"""A local STAC catalog or item collection (JSON) as a list of raster files, to be read as one mosaic.

Each item contributes one asset: the first whose roles include ``data`` or ``visual``, else one keyed
``image``, ``visual`` or ``data``, else the first GeoTIFF. Relative hrefs are resolved against the file
that holds them. Only local files: nothing is fetched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from openfootprints.errors import InputError

RASTER_TYPES = ("image/tiff", "image/vnd.stac.geotiff", "application/x-geotiff")


def is_stac(path: str | os.PathLike) -> bool:
    """True for a JSON file that is a STAC Catalog, Collection, Item or ItemCollection (a FeatureCollection of items)."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and ("stac_version" in record or record.get("type") == "FeatureCollection")


def stac_rasters(path: str | os.PathLike) -> list[Path]:
    """The raster file of every item reachable from a local STAC JSON file, in the order found."""
    path = Path(path).resolve()
    files: list[Path] = []
    _collect(path, files, seen=set())
    if not files:
        raise InputError(f"{path}: no STAC item with a raster asset")
    return files


def _collect(path: Path, files: list[Path], seen: set[Path]) -> None:
    if path in seen:
        return
    seen.add(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable STAC JSON file ({err})") from err
    kind = record.get("type")
    if kind == "Feature":
        files.append(_item_raster(record, path))
    elif kind == "FeatureCollection":
        for item in record.get("features", []):
            files.append(_item_raster(item, path))
    else:  # Catalog or Collection: follow its child and item links
        for link in record.get("links", []):
            if link.get("rel") in ("child", "item") and not link["href"].startswith(("http://", "https://", "s3://")):
                _collect((path.parent / link["href"]).resolve(), files, seen)


def _item_raster(item: dict, holder: Path) -> Path:
    assets = item.get("assets", {})
    chosen = next((a for a in assets.values() if {"data", "visual"} & set(a.get("roles", []))), None)
    chosen = chosen or next((assets[k] for k in ("image", "visual", "data") if k in assets), None)
    chosen = chosen or next((a for a in assets.values() if a.get("type", "").split(";")[0] in RASTER_TYPES), None)
    if chosen is None:
        raise InputError(f"{holder}: STAC item {item.get('id')} has no raster asset")
    href = chosen["href"]
    if href.startswith(("http://", "https://", "s3://", "gs://")):
        raise InputError(f"{holder}: STAC item {item.get('id')}: {href} is remote; only local files are read")
    file = (holder.parent / href).resolve()
    if not file.exists():
        raise InputError(f"{holder}: STAC item {item.get('id')}: {file} does not exist")
    return file
