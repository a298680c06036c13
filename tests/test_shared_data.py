"""Checks on the real development data in ../shared/data; skipped where it is absent."""

import numpy as np
import pytest
from rasterio.windows import Window

from openfootprints.io.raster import open_scene
from openfootprints.io.vector import read_polygons

from conftest import SHARED_DATA

XIAMEN = SHARED_DATA / "xiamen"
pytestmark = pytest.mark.skipif(not (XIAMEN / "tiles").is_dir(), reason="../shared/data/xiamen is absent")


def test_tile_folder_and_mosaic_are_the_same_scene():
    tiles = open_scene(XIAMEN / "tiles")
    mosaic = open_scene(XIAMEN / "xiamen_z18_mosaic.tif")
    assert (tiles.width, tiles.height) == (mosaic.width, mosaic.height)
    assert np.allclose(tiles.transform, mosaic.transform)
    assert tiles.resolution_m == pytest.approx(0.542, abs=0.002)  # ground, not the 0.597 map units
    window = Window(2048, 2048, 256, 256)
    (a, va), (b, vb) = tiles.read(window), mosaic.read(window)
    assert np.array_equal(va, vb)
    assert np.abs(a[:, va] - b[:, vb]).mean() < 8  # the mosaic is JPEG-compressed


def test_labels_reproject_onto_the_mosaic_and_invalid_ones_are_named():
    from openfootprints.errors import InputError

    mosaic = open_scene(XIAMEN / "xiamen_z18_mosaic.tif")
    with pytest.raises(InputError, match="invalid polygon"):
        read_polygons(XIAMEN / "buildings.geojson", crs=mosaic.crs)
    labels = read_polygons(XIAMEN / "buildings.geojson", crs=mosaic.crs, bounds=mosaic.bounds, fix_invalid=True)
    assert labels.crs == mosaic.crs and len(labels) >= 4984
