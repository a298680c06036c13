import numpy as np
import pytest
import rasterio

from openfootprints.io.geo import pixel_size_m
from openfootprints.io.vector import read_polygons
from openfootprints.synth.scene import SceneSpec, render, write_scene


def test_same_seed_same_scene_other_seed_other_scene():
    a, pa = render(SceneSpec(width=200, height=160, seed=5))
    b, pb = render(SceneSpec(width=200, height=160, seed=5))
    c, _ = render(SceneSpec(width=200, height=160, seed=6))
    assert a.shape == (3, 160, 200) and a.dtype == np.uint8
    assert np.array_equal(a, b) and [p.wkt for p in pa] == [p.wkt for p in pb]
    assert not np.array_equal(a, c)


def test_buildings_do_not_overlap_and_some_share_walls():
    _, polys = render(SceneSpec(width=1024, height=1024, seed=1))
    assert len(polys) > 200
    touching = 0
    for i, p in enumerate(polys):
        for q in polys[i + 1 :]:
            if p.intersects(q):
                assert p.intersection(q).area < 1e-6
                touching += 1
    assert touching > 5  # rows of terraced houses


def test_building_sizes_span_huts_to_blocks():
    _, polys = render(SceneSpec(width=1024, height=1024, seed=2))
    areas_m2 = np.array([p.area for p in polys]) * 0.25
    assert areas_m2.min() < 25 and areas_m2.max() > 300


@pytest.mark.parametrize("crs", ["EPSG:32630", "EPSG:3857", "EPSG:4326"])
def test_written_scene_is_half_a_metre_on_the_ground_in_any_crs(tmp_path, crs):
    n = write_scene(SceneSpec(width=128, height=96, crs=crs, seed=1), tmp_path / "s.tif", tmp_path / "s.gpkg")
    with rasterio.open(tmp_path / "s.tif") as src:
        assert src.crs.to_string() == crs and (src.width, src.height, src.count) == (128, 96, 3)
        assert pixel_size_m(src.crs, src.transform, src.width, src.height) == pytest.approx(0.5, rel=1e-3)
        bounds = src.bounds
    labels = read_polygons(tmp_path / "s.gpkg")
    assert len(labels) == n > 0
    assert labels.crs.to_string() == crs
    minx, miny, maxx, maxy = labels.total_bounds
    assert bounds.left <= minx and maxx <= bounds.right and bounds.bottom <= miny and maxy <= bounds.top


def test_large_scenes_are_drawn_tile_by_tile(tmp_path):
    n = write_scene(SceneSpec(width=300, height=200, seed=4), tmp_path / "t.tif", tmp_path / "t.geojson", tile_px=128)
    with rasterio.open(tmp_path / "t.tif") as src:
        image = src.read()
    assert image.shape == (3, 200, 300) and image[:, 150:, 250:].std() > 0
    labels = read_polygons(tmp_path / "t.geojson")
    assert len(labels) == n > 10
    assert labels.geometry.is_valid.all()
