"""A folder (or list) of GeoTIFFs as one scene: a GDAL VRT mosaic, read window by window like any raster.

The files must share CRS, pixel size, band count and pixel type, and lie on one pixel grid (as tiles of
one orthophoto or satellite delivery do). The VRT gets an alpha band made of the files' own masks (nodata
value, alpha band or internal mask): 0 in the gaps between files and wherever a file has no data, so those
read as invalid pixels. Where files overlap, the later one in name order wins where it has data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio
from rasterio.errors import RasterioIOError

from openfootprints.errors import InputError

RASTER_EXTENSIONS = {".tif", ".tiff", ".vrt", ".jp2", ".img"}
GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
              "float32": "Float32", "float64": "Float64"}


def raster_files(path: str | os.PathLike) -> list[Path]:
    """The raster files directly inside a folder (by extension), sorted by name; [] for a file."""
    folder = Path(path)
    if not folder.is_dir():
        return []
    return sorted(f.resolve() for f in folder.iterdir() if f.is_file() and f.suffix.lower() in RASTER_EXTENSIONS)


def raster_folder_vrt(path: str | os.PathLike) -> str:
    """VRT XML (a string rasterio can open) mosaicking the folder's rasters, plus an alpha band."""
    files = raster_files(path)
    if not files:
        raise InputError(f"{path}: no GeoTIFF (or other raster) files in this folder")
    return mosaic_vrt(files)


def raster_list(path: str | os.PathLike) -> list[str]:
    """The rasters named in a text file of scenes: one path or URL per line (blank lines and ``#`` comments
    skipped), relative paths taken from the list's folder; ``s3://`` and ``gs://`` URLs as GDAL names them
    (``/vsis3/``, ``/vsigs/``), since a VRT's sources are opened by GDAL itself."""
    folder = Path(path).resolve().parent
    names = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        for scheme, prefix in (("s3://", "/vsis3/"), ("gs://", "/vsigs/")):
            if name.startswith(scheme):
                name = prefix + name[len(scheme):]
        if not name.startswith("/vsi") and "://" not in name:
            name = str(folder / name)
            if not os.path.exists(name):
                raise InputError(f"{path}, line {number}: {name}: no such file")
        names.append(name)
    if not names:
        raise InputError(f"{path}: the list of scenes names no raster")
    return names


def mosaic_vrt(files: Sequence[Path | str]) -> str:
    """VRT XML mosaicking ``files`` (one CRS, pixel size, band count, pixel type, pixel grid), plus an alpha band."""
    infos = [_describe(f) for f in files]
    first = infos[0]
    for info in infos[1:]:
        for key, what in (("crs", "CRS"), ("count", "band count"), ("dtype", "pixel type")):
            if info[key] != first[key]:
                raise InputError(f"{info['path']}: {what} {info[key]} differs from {first['path']} ({first[key]}); "
                                 "a folder mosaic needs one CRS, band count and pixel type")
        if abs(info["res"][0] - first["res"][0]) > 1e-9 * abs(first["res"][0]) or \
                abs(info["res"][1] - first["res"][1]) > 1e-9 * abs(first["res"][1]):
            raise InputError(f"{info['path']}: pixel size {info['res']} differs from {first['path']} ({first['res']})")
    rx, ry = first["res"]
    left = min(i["left"] for i in infos)
    top = max(i["top"] for i in infos)
    right = max(i["left"] + i["width"] * rx for i in infos)
    bottom = min(i["top"] - i["height"] * ry for i in infos)
    width, height = round((right - left) / rx), round((top - bottom) / ry)
    offsets = []
    for info in infos:
        col, row = (info["left"] - left) / rx, (top - info["top"]) / ry
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            raise InputError(f"{info['path']}: not on the pixel grid of {first['path']} (offset {col:.3f}, {row:.3f} px)")
        offsets.append((round(col), round(row)))
    gdal_type = GDAL_TYPES.get(first["dtype"])
    if gdal_type is None:
        raise InputError(f"{first['path']}: pixel type {first['dtype']} is not supported in a folder mosaic")

    def source(info: dict, band: int | str, offset: tuple[int, int]) -> str:
        # UseMaskBand: only the file's valid pixels (its nodata, alpha or internal mask) are copied, so a
        # later file's empty border does not cover an earlier file's data
        w, h = info["width"], info["height"]
        return (f"<ComplexSource><SourceFilename relativeToVRT=\"0\">{escape(str(info['path']))}</SourceFilename>"
                f"<SourceBand>{band}</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{w}\" ySize=\"{h}\"/>"
                f"<DstRect xOff=\"{offset[0]}\" yOff=\"{offset[1]}\" xSize=\"{w}\" ySize=\"{h}\"/>"
                f"<UseMaskBand>true</UseMaskBand></ComplexSource>")

    bands = []
    for b in range(1, first["count"] + 1):
        colour = f"<ColorInterp>{first['colorinterp'][b - 1]}</ColorInterp>"
        sources = "".join(source(i, b, o) for i, o in zip(infos, offsets))
        bands.append(f"<VRTRasterBand dataType=\"{gdal_type}\" band=\"{b}\">{colour}{sources}</VRTRasterBand>")
    alpha = "".join(source(i, "mask,1", o) for i, o in zip(infos, offsets))  # each file's mask: 0 or 255
    bands.append(f"<VRTRasterBand dataType=\"Byte\" band=\"{first['count'] + 1}\"><ColorInterp>Alpha</ColorInterp>"
                 f"{alpha}</VRTRasterBand>")
    return (f"<VRTDataset rasterXSize=\"{width}\" rasterYSize=\"{height}\"><SRS>{escape(first['crs'])}</SRS>"
            f"<GeoTransform>{left!r}, {rx!r}, 0.0, {top!r}, 0.0, {-ry!r}</GeoTransform>"
            + "".join(bands) + "</VRTDataset>")


def _describe(path: Path | str) -> dict:
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise InputError(f"{path}: the raster has no CRS; georeference it (e.g. gdal_edit.py -a_srs) and retry")
            t = ds.transform
            if t.b != 0 or t.d != 0 or t.e >= 0:
                raise InputError(f"{path}: the raster needs a north-up geotransform")
            colour = [ci.name.capitalize() if ci.name != "gray" else "Gray" for ci in ds.colorinterp]
            alpha = [k for k, c in enumerate(colour) if c == "Alpha"]
            count = alpha[0] if alpha else ds.count  # the files' own alpha is replaced by the mosaic's
            return {"path": path, "crs": ds.crs.to_wkt(), "count": count, "dtype": ds.dtypes[0],
                    "res": (t.a, -t.e), "left": t.c, "top": t.f, "width": ds.width, "height": ds.height,
                    "nodata": ds.nodata, "colorinterp": colour[:count]}
    except RasterioIOError as err:
        raise InputError(f"{path}: not a readable raster ({str(err).splitlines()[0]})") from err
