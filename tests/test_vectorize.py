import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from openfootprints.vectorize.polygons import vectorize

RES = 0.5
TRANSFORM = Affine(RES, 0, 500000, 0, -RES, 700000)


def write_prob(path, prob: np.ndarray):
    with rasterio.open(path, "w", driver="GTiff", width=prob.shape[1], height=prob.shape[0], count=1,
                       dtype="uint8", crs="EPSG:32630", transform=TRANSFORM) as dst:
        dst.write(np.round(prob * 255).astype(np.uint8)[None])
    return str(path)


def scene_with_buildings():
    """Probabilities with: two rectangles 2 px apart, a tall building, a faint blob, a 2-px speck."""
    p = np.zeros((400, 300), np.float32)
    p[20:40, 20:50] = 0.9
    p[20:40, 52:80] = 0.8  # 2 px gap: a separate building
    p[60:380, 100:130] = 0.7  # 160 m tall: crosses every strip
    p[150:170, 200:230] = 0.3  # below threshold
    p[300:302, 10:11] = 0.99  # 2 px = 0.5 m²
    return p


def polygons(result):
    return sorted(result.polygons, key=lambda g: (g.bounds[1], g.bounds[0]))


def test_instances_confidence_and_area_filter(tmp_path):
    found = vectorize(write_prob(tmp_path / "p.tif", scene_with_buildings()), threshold=0.5, simplify_m=0,
                      min_area_m2=2.0)
    assert len(found.polygons) == 3
    areas = sorted(round(p.area / RES**2) for p in found.polygons)
    assert areas == [20 * 28, 20 * 30, 320 * 30]
    assert sorted(np.round(found.confidence, 2)) == [0.7, 0.8, 0.9]


@pytest.mark.parametrize("strip_px", [16, 37, 100, 1000])
def test_strips_change_nothing(tmp_path, strip_px):
    path = write_prob(tmp_path / "p.tif", scene_with_buildings())
    reference = vectorize(path, strip_px=4096, margin_m=10)
    found = vectorize(path, strip_px=strip_px, margin_m=10)  # margin smaller than the tall building
    assert len(found.polygons) == len(reference.polygons) == 4
    for a, b in zip(polygons(found), polygons(reference)):
        assert a.equals(b)


def test_grow_restores_eroded_size_without_merging_neighbours(tmp_path):
    p = np.zeros((60, 60), np.float32)
    p[11:19, 11:19] = 0.9  # a 10×10 px building eroded by 1 px
    p[11:19, 21:29] = 0.9  # its neighbour sharing the wall at column 20
    found = vectorize(write_prob(tmp_path / "p.tif", p), grow_m=RES, simplify_m=0)
    assert len(found.polygons) == 2
    a, b = polygons(found)
    assert a.area / RES**2 == pytest.approx(100, abs=12) and b.area / RES**2 == pytest.approx(100, abs=12)
    assert a.intersection(b).area == 0


def test_simplification_is_in_metres(tmp_path):
    p = np.zeros((80, 80), np.float32)
    yy, xx = np.mgrid[:80, :80]
    p[(yy - 40) ** 2 + (xx - 40) ** 2 < 30**2] = 0.9
    path = write_prob(tmp_path / "p.tif", p)
    raw = vectorize(path, simplify_m=0).polygons[0]
    coarse = vectorize(path, simplify_m=2.0).polygons[0]
    assert len(coarse.exterior.coords) < len(raw.exterior.coords) / 3
    assert shapely.hausdorff_distance(raw, coarse) <= 2.0 + 1e-6


def test_empty_raster_gives_no_buildings(tmp_path):
    found = vectorize(write_prob(tmp_path / "p.tif", np.zeros((50, 50), np.float32)))
    assert len(found.polygons) == 0 and found.crs.to_epsg() == 32630


def test_a_region_taller_than_the_overlap_cap_is_cut_once_with_a_warning(tmp_path, caplog):
    p = np.zeros((400, 40), np.float32)
    p[5:395, 10:30] = 0.9
    path = write_prob(tmp_path / "p.tif", p)
    found = vectorize(path, strip_px=8, margin_m=1.0)  # overlap from 2 px capped at 16 strips = 128 px
    assert len(found.polygons) == 1
    assert "cut at the strip edge" in caplog.text
    caplog.clear()
    assert len(vectorize(path, strip_px=64, margin_m=1.0).polygons) == 1  # cap 1024 px: whole
    assert "cut" not in caplog.text


def test_regularize_squares_a_staircase_rectangle_within_the_tolerance():
    from shapely.affinity import rotate

    from openfootprints.vectorize.regularize import regularize

    true = rotate(shapely.box(0, 0, 20, 10), 17, origin=(10, 5))
    pixels = rasterio.features.rasterize([true], out_shape=(40, 40), transform=Affine.translation(-10, -15),
                                         dtype="uint8")
    traced = shapely.union_all([shapely.geometry.shape(g) for g, v in
                                rasterio.features.shapes(pixels, mask=pixels > 0,
                                                         transform=Affine.translation(-10, -15))])
    l_shape = shapely.Polygon([(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)])
    out = regularize(np.array([traced, l_shape]), tolerance=1.5)
    assert len(out[0].exterior.coords) == 5 and len(traced.exterior.coords) > 10  # four straight edges
    corners = np.diff(np.asarray(out[0].exterior.coords), axis=0)
    for a, b in zip(corners, np.roll(corners, 1, axis=0)):
        assert abs(np.dot(a, b)) < 1e-6 * np.linalg.norm(a) * np.linalg.norm(b)  # right angles
    assert shapely.hausdorff_distance(out[0], traced) <= 1.5
    assert out[0].intersection(true).area / out[0].union(true).area > 0.9
    assert out[1].equals(l_shape)  # not near-rectangular: left alone
    assert regularize(np.array([traced]), tolerance=0.0)[0].equals(traced)  # off


def test_detected_outlines_are_regularized_in_metres_when_asked(tmp_path):
    from shapely.affinity import rotate

    from openfootprints.vectorize.polygons import iter_buildings

    true = rotate(shapely.box(20, 20, 60, 40), 25, origin=(40, 30))  # in pixels
    prob = rasterio.features.rasterize([true], out_shape=(64, 80), dtype="uint8").astype(np.float32) * 0.9
    path = write_prob(tmp_path / "p.tif", prob)
    traced = np.concatenate([b.polygons for b in iter_buildings(path, simplify_m=0.25)])
    square = np.concatenate([b.polygons for b in iter_buildings(path, simplify_m=0.25, regularize_m=0.75)])
    assert len(traced) == len(square) == 1
    assert len(square[0].exterior.coords) == 5 < len(traced[0].exterior.coords)
    assert shapely.hausdorff_distance(square[0], traced[0]) <= 0.75  # metres: the CRS is UTM
    assert square[0].area == pytest.approx(traced[0].area, rel=1e-6)  # same area
    tight = np.concatenate([b.polygons for b in iter_buildings(path, simplify_m=0.25, regularize_m=0.05)])
    assert tight[0].equals(traced[0])  # a tolerance it cannot meet leaves the outline as traced
