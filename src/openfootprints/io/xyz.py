"""XYZ (slippy-map) tile folders ``<z>/<x>/<y>.<ext>`` as one georeferenced scene.

The folder becomes a GDAL VRT in EPSG:3857: each tile is a source placed at its pixel offset, and an
alpha band is 255 where a tile exists and 0 in the holes, so missing tiles read as invalid pixels.
Only the highest zoom level present is used.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from openfootprints.errors import InputError

WEB_MERCATOR_HALF = 20037508.342789244
TILE_EXTENSIONS = {".webp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def _zoom_dirs(path: Path) -> list[Path]:
    return [d for d in path.iterdir() if d.is_dir() and d.name.isdigit()] if path.is_dir() else []


def is_tile_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` holds at least one ``<z>/<x>/<y>.<ext>`` image tile."""
    for z in _zoom_dirs(Path(path)):
        for x in z.iterdir():
            if x.is_dir() and x.name.isdigit() and any(f.suffix.lower() in TILE_EXTENSIONS for f in x.iterdir()):
                return True
    return False


def list_tiles(path: str | os.PathLike) -> tuple[int, dict[tuple[int, int], Path]]:
    """The highest zoom level that holds tiles, and its tiles as ``{(x, y): file}``."""
    zooms = sorted((int(d.name) for d in _zoom_dirs(Path(path))), reverse=True)
    for z in zooms:
        tiles = _tiles_at(Path(path) / str(z))
        if tiles:
            return z, tiles
    return zooms[0] if zooms else 0, {}


def _tiles_at(folder: Path) -> dict[tuple[int, int], Path]:
    tiles = {}
    for xdir in folder.iterdir():
        if not (xdir.is_dir() and xdir.name.isdigit()):
            continue
        for f in xdir.iterdir():
            if f.suffix.lower() in TILE_EXTENSIONS and f.stem.isdigit():
                tiles[(int(xdir.name), int(f.stem))] = f.resolve()
    return tiles


def tile_folder_vrt(path: str | os.PathLike) -> str:
    """VRT XML (a string rasterio can open) mosaicking the folder's highest zoom level, plus an alpha band."""
    z, tiles = list_tiles(path)
    if not tiles:
        raise InputError(f"{path}: zoom level {z} holds no image tiles")
    first = next(iter(tiles.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        t = rasterio.open(first)
    with t:
        size, count, dtype, has_alpha = t.width, min(t.count, 3), t.dtypes[0], t.count in (2, 4)
    if count not in (1, 3):
        raise InputError(f"{first}: tiles must be grey or RGB (with or without alpha); this one has {count} bands")
    xs = [x for x, _ in tiles]
    ys = [y for _, y in tiles]
    x0, y0 = min(xs), min(ys)
    width, height = (max(xs) - x0 + 1) * size, (max(ys) - y0 + 1) * size
    res = 2 * WEB_MERCATOR_HALF / (size * 2**z)
    left, top = -WEB_MERCATOR_HALF + x0 * size * res, WEB_MERCATOR_HALF - y0 * size * res

    def source(kind: str, band: int, tile: Path, x: int, y: int, extra: str = "") -> str:
        return (f"<{kind}><SourceFilename relativeToVRT=\"0\">{escape(str(tile))}</SourceFilename>"
                f"<SourceBand>{band}</SourceBand>"
                f"<SourceProperties RasterXSize=\"{size}\" RasterYSize=\"{size}\" DataType=\"Byte\" "
                f"BlockXSize=\"{size}\" BlockYSize=\"1\"/>"
                f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{size}\" ySize=\"{size}\"/>"
                f"<DstRect xOff=\"{(x - x0) * size}\" yOff=\"{(y - y0) * size}\" xSize=\"{size}\" ySize=\"{size}\"/>"
                f"{extra}</{kind}>")

    colours = ["Red", "Green", "Blue"] if count == 3 else ["Gray"]
    bands = []
    for b, colour in enumerate(colours, start=1):
        sources = "".join(source("SimpleSource", b, t, x, y) for (x, y), t in sorted(tiles.items()))
        bands.append(f"<VRTRasterBand dataType=\"{dtype.capitalize() if dtype != 'uint8' else 'Byte'}\" band=\"{b}\">"
                     f"<ColorInterp>{colour}</ColorInterp>{sources}</VRTRasterBand>")
    if has_alpha:  # the tiles' own transparency, and 0 where a tile is missing
        alpha = "".join(source("SimpleSource", count + 1, t, x, y) for (x, y), t in sorted(tiles.items()))
    else:  # 255 wherever a tile exists
        alpha = "".join(source("ComplexSource", 1, t, x, y, "<ScaleOffset>255</ScaleOffset><ScaleRatio>0</ScaleRatio>")
                        for (x, y), t in sorted(tiles.items()))
    bands.append(f"<VRTRasterBand dataType=\"Byte\" band=\"{count + 1}\"><ColorInterp>Alpha</ColorInterp>"
                 f"{alpha}</VRTRasterBand>")
    return (f"<VRTDataset rasterXSize=\"{width}\" rasterYSize=\"{height}\"><SRS>EPSG:3857</SRS>"
            f"<GeoTransform>{left!r}, {res!r}, 0.0, {top!r}, 0.0, {-res!r}</GeoTransform>"
            + "".join(bands) + "</VRTDataset>")
