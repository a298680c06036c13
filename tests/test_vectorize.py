import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from scipy import ndimage

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
    reference = vectorize(path, strip_px=4096, margin_m=25)
    found = vectorize(path, strip_px=strip_px, margin_m=25)  # margin 50 px < the 320 px building < its cap 400 px
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
    found = vectorize(path, strip_px=8, margin_m=1.0)  # margin from 2 px capped at 8 × 2 = 16 px
    assert len(found.polygons) == 1
    assert found.polygons[0].bounds[3] - found.polygons[0].bounds[1] < 40 * RES  # cut: seen down to ≤ 8 + 16 rows
    assert "cut at the tile edge" in caplog.text
    caplog.clear()
    assert len(vectorize(path, strip_px=64, margin_m=25.0).polygons) == 1  # from 50 px, cap 400 px: whole
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


# --- tiles: 2-D tiling changes nothing --------------------------------------------------------------------------

TILED_SIZE = (320, 400)  # rows, columns
# (row0, col0, row1, col1) pixel boxes, ends excluded: pairs 2 px apart (grown towards each other) across tile
# borders and corners of 64, 96 and 200 px tiles; a ⌟-shaped L whose bounding box's top-left corner lies
# in tiles holding none of its pixels; a ⌞-shaped L; a U opening to the left; all spanning several tiles
TILED_SHAPES = [
    [(58, 55, 70, 63), (58, 65, 70, 75)],
    [(88, 90, 98, 102), (100, 90, 110, 102)],
    [(185, 188, 198, 199), (185, 201, 198, 212)],
    [(60, 188, 68, 196), (60, 198, 68, 206), (70, 188, 78, 196), (70, 198, 78, 206)],  # four round a corner
    [(10, 380, 250, 384), (246, 150, 250, 384)],  # ⌟
    [(100, 20, 304, 24), (300, 20, 304, 250)],  # ⌞
    [(140, 200, 144, 330), (140, 326, 240, 330), (236, 200, 240, 330)],  # ⊐
    # whole but within growing reach of a first view's edge (64 px tiles, 40 px margin), neighbours past it
    [(60, 140, 103, 150)], [(105, 140, 110, 150)],  # bottom edge at row 104
    [(20, 30, 26, 103)], [(20, 105, 26, 112)],  # right edge at column 104
    [(180, 130, 200, 135), (196, 89, 200, 135)],  # left edge at column 88 (tile from column 128)
]


def tiled_scene() -> np.ndarray:
    """(320, 400) float32 probabilities: TILED_SHAPES, then random blobs kept ≥ 4 px from everything."""
    rng = np.random.default_rng(7)
    p = np.zeros(TILED_SIZE, np.float32)
    for parts in TILED_SHAPES:
        for part in parts:  # each part its own probability, so a wrong confidence shows
            p[part[0]:part[2], part[1]:part[3]] = rng.uniform(0.55, 1.0)
    for _ in range(300):
        h, w = rng.integers(2, 25, size=2)
        r, c = rng.integers(0, TILED_SIZE[0] - h), rng.integers(0, TILED_SIZE[1] - w)
        if not p[max(0, r - 4):r + h + 4, max(0, c - 4):c + w + 4].any():
            p[r:r + h, c:c + w] = rng.uniform(0.55, 1.0) + rng.uniform(-0.04, 0.04, (h, w))
    return np.clip(p, 0, 1)


def canonical(found):
    """Polygons as normalized WKB and confidences, in the order of the polygons' centroids."""
    centroids = shapely.centroid(found.polygons)
    order = np.lexsort((shapely.get_y(centroids), shapely.get_x(centroids)))
    return [shapely.to_wkb(shapely.normalize(g)) for g in found.polygons[order]], found.confidence[order]


TILED_KW = dict(grow_m=1.0, simplify_m=0.0, margin_m=20.0)  # grow 2 px; margin from 40 px, capped at 320 px


@pytest.fixture(scope="module")
def tiled_path(tmp_path_factory):
    return write_prob(tmp_path_factory.mktemp("tiles") / "p.tif", tiled_scene())


@pytest.fixture(scope="module")
def one_tile(tiled_path):
    """The reference: one view over the whole raster."""
    return vectorize(tiled_path, strip_px=4096, tile_px=None, **TILED_KW)


@pytest.mark.parametrize("strip_px", [64, 1024])
@pytest.mark.parametrize("tile_px", [None, 64, 96, 200])
def test_tiles_change_nothing(tiled_path, one_tile, caplog, tile_px, strip_px):
    level = np.ceil(0.5 * 255)
    n_components = ndimage.label(np.round(tiled_scene() * 255) >= level)[1]
    assert n_components > 40  # the shapes (20 parts, 14 instances) and many blobs
    found = vectorize(tiled_path, strip_px=strip_px, tile_px=tile_px, **TILED_KW)
    assert len(found.polygons) == len(one_tile.polygons) == n_components  # none lost, none doubled
    wkb, confidence = canonical(found)
    wkb_ref, confidence_ref = canonical(one_tile)
    assert wkb == wkb_ref
    assert np.array_equal(confidence, confidence_ref)
    assert "cut" not in caplog.text


def test_a_confidence_cut_keeps_exactly_the_surer_buildings_of_a_run_without_it(tiled_path, one_tile):
    cut = float(np.median(one_tile.confidence))
    found = vectorize(tiled_path, strip_px=64, tile_px=96, min_confidence=cut, **TILED_KW)
    sure = one_tile.confidence >= cut
    assert 0 < len(found.polygons) == sure.sum() < len(one_tile.polygons)
    kept = type(one_tile)(one_tile.polygons[sure], one_tile.confidence[sure], one_tile.crs)
    assert canonical(found)[0] == canonical(kept)[0]  # the dropped ones still held their pixels against growth
    assert np.array_equal(canonical(found)[1], canonical(kept)[1])


def test_grown_neighbours_share_no_area_across_tile_corners(one_tile, tiled_path):
    found = vectorize(tiled_path, strip_px=64, tile_px=64, **TILED_KW)
    tree = shapely.STRtree(found.polygons)
    pairs = tree.query(found.polygons, predicate="intersects")
    overlaps = [found.polygons[i].intersection(found.polygons[j]).area for i, j in pairs.T if i < j]
    assert sum(1 for a in overlaps if a == 0) >= 5  # the touching pairs touch...
    assert max(overlaps) == 0  # ...but do not overlap


def test_an_l_whose_box_corner_is_empty_is_found_once_and_whole(tmp_path):
    p = np.zeros((128, 128), np.float32)
    p[4:100, 120:124] = 0.9  # ⌟: the box's top-left corner (4, 10) is in a tile with none of its pixels
    p[96:100, 10:124] = 0.9
    path = write_prob(tmp_path / "p.tif", p)
    whole = vectorize(path, simplify_m=0, strip_px=4096, tile_px=None, margin_m=8.0)
    for tile_px in (16, 32, 50):
        found = vectorize(path, simplify_m=0, strip_px=32, tile_px=tile_px, margin_m=8.0)  # margin 16 px, cap 128
        assert len(found.polygons) == 1
        assert found.polygons[0].equals(whole.polygons[0])
        assert found.polygons[0].area / RES**2 == 96 * 4 + 110 * 4


def test_a_region_wider_than_the_margin_cap_is_cut_once_with_a_warning(tmp_path, caplog):
    p = np.zeros((40, 400), np.float32)
    p[10:30, 5:395] = 0.9
    path = write_prob(tmp_path / "p.tif", p)
    found = vectorize(path, simplify_m=0, tile_px=8, margin_m=1.0)  # margin from 2 px capped at 16 px
    assert len(found.polygons) == 1
    assert found.polygons[0].bounds[2] - found.polygons[0].bounds[0] < 30 * RES  # cut: seen up to column 8 + 16
    assert "cut at the tile edge" in caplog.text


class ArraySource:
    """A raster-like source over an array that checks the reader keeps its ``release`` promises."""

    def __init__(self, array: np.ndarray):
        self.array, self.name, self.crs, self.transform = array, "array", rasterio.crs.CRS.from_epsg(32630), TRANSFORM
        self.height, self.width = array.shape
        self.reads, self.releases = [], []

    def read(self, band, window):
        row, col, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        assert band == 1 and row >= max(self.releases, default=0), "a released row is read"
        assert 0 <= col and col + w <= self.width and row + h <= self.height
        self.reads.append((row, col, h, w))
        return self.array[row:row + h, col:col + w].copy()

    def release(self, row):
        assert row >= max(self.releases, default=0), "releases go down"
        self.releases.append(row)


def test_a_source_is_read_in_tiles_and_told_which_rows_it_may_free():
    from openfootprints.vectorize.polygons import MAX_MARGIN_FACTOR, Buildings, iter_buildings

    def buildings(src, **kw):
        found = list(iter_buildings(src, 0.5, **kw, **TILED_KW))
        return found, Buildings(np.concatenate([f.polygons for f in found]),
                                np.concatenate([f.confidence for f in found]), src.crs)

    scene = np.round(tiled_scene() * 255).astype(np.uint8)
    scene = np.vstack([scene, scene[::-1]])  # 640 rows: taller than the margin cap
    _, whole = buildings(ArraySource(scene), strip_px=4096, tile_px=None)
    src = ArraySource(scene)
    tiles, found = buildings(src, strip_px=32, tile_px=64)
    assert len(tiles) == 20 * 7  # one Buildings per tile
    assert len(found.polygons) == len(whole.polygons) > 80
    assert canonical(found)[0] == canonical(whole)[0]
    cap = MAX_MARGIN_FACTOR * 40
    assert src.releases == [max(0, bottom - cap) for bottom in range(32, 641, 32)]  # after each row of tiles
    assert src.releases[-1] == 640 - cap
    assert any(col > 0 for _, col, _, _ in src.reads)
    assert max(w for *_, w in src.reads) <= 64 + 2 * cap and max(h for _, _, h, _ in src.reads) <= 32 + 2 * cap


def test_a_source_that_ignores_the_columns_asked_is_an_error():
    from openfootprints.vectorize.polygons import iter_buildings

    class FullRows(ArraySource):
        def read(self, band, window):
            return self.array[int(window.row_off):int(window.row_off + window.height)]

    with pytest.raises(ValueError, match="columns"):
        list(iter_buildings(FullRows(np.zeros((64, 200), np.uint8)), tile_px=64, strip_px=64, margin_m=5.0))


def test_sizes_in_pixels_come_from_the_given_ground_resolution_the_same_for_any_part(tmp_path):
    p = np.zeros((200, 300), np.float32)
    p[50:52, 60:65] = 0.9  # 10 px = 2.5 m² at 0.5 m: exactly the area limit below
    p[120:140, 200:230] = 0.9
    whole = write_prob(tmp_path / "whole.tif", p)
    with rasterio.open(tmp_path / "part.tif", "w", driver="GTiff", width=250, height=150, count=1, dtype="uint8",
                       crs="EPSG:32630", transform=TRANSFORM * Affine.translation(40, 30)) as dst:
        dst.write(np.round(p[30:180, 40:290] * 255).astype(np.uint8)[None])  # another centre, another ground scale
    kwargs = dict(threshold=0.5, grow_m=0.5, simplify_m=0.25, min_area_m2=5.0)  # kept: ≥ 0.5 × 5 m² in pixels
    assert len(vectorize(whole, res_m=0.5, **kwargs).polygons) == 2
    assert len(vectorize(whole, res_m=0.4999, **kwargs).polygons) == 1  # 10 px < 10.004 px: dropped
    a, b = vectorize(whole, res_m=0.5, **kwargs), vectorize(str(tmp_path / "part.tif"), res_m=0.5, **kwargs)
    assert [g.wkb for g in polygons(a)] == [g.wkb for g in polygons(b)]


def touching_rows() -> tuple[np.ndarray, list]:
    """(200, 260) building ids of 4 rows of terraced houses that share walls (8–16 px wide, 14–22 px deep, some
    rows with gaps of 1 px), and their pixel boxes (col0, row0, col1, row1)."""
    rng = np.random.default_rng(5)
    boxes, row0 = [], 10
    for r in range(4):
        depth, col = int(rng.integers(14, 23)), 10
        while col < 230:
            width = int(rng.integers(8, 17))
            boxes.append((col, row0, col + width, row0 + depth))
            col += width + (1 if r == 3 else 0)
        row0 += depth + 20
    from openfootprints.data.chips import building_ids

    ids = building_ids(np.array([shapely.box(*b) for b in boxes]), Affine.identity(), (200, 260))
    return ids, boxes


def test_touching_buildings_come_out_apart_from_the_energy_target(tmp_path):
    from openfootprints.data.chips import energy_target

    ids, boxes = touching_rows()
    path = write_prob(tmp_path / "p.tif", energy_target(ids, ramp_px=4))
    found = vectorize(path, threshold=0.5, seed_threshold=0.75, grow_m=4 * RES, simplify_m=0)
    truth = [shapely.box(*(TRANSFORM @ (c0, r1)), *(TRANSFORM @ (c1, r0))) for c0, r0, c1, r1 in boxes]
    assert len(found.polygons) == len(truth) > 60
    tree = shapely.STRtree(found.polygons)
    for t in truth:  # each terraced house once, whole
        best = max(found.polygons[tree.query(t)], key=lambda p: p.intersection(t).area / p.union(t).area)
        assert best.intersection(t).area / best.union(t).area > 0.9
    eroded = vectorize(write_prob(tmp_path / "m.tif", (ids > 0).astype(np.float32)), simplify_m=0)
    in_last_row = sum(1 for b in boxes if b[1] == boxes[-1][1])
    assert len(eroded.polygons) == 3 + in_last_row  # the plain mask: each row of shared walls one blob


@pytest.mark.parametrize("tile_px, strip_px", [(64, 64), (96, 1024), (None, 37)])
def test_seeded_instances_are_identical_in_any_tile(tmp_path, tile_px, strip_px):
    from openfootprints.data.chips import energy_target

    ids, boxes = touching_rows()
    path = write_prob(tmp_path / "p.tif", energy_target(ids, ramp_px=4))
    kw = dict(threshold=0.5, seed_threshold=0.75, grow_m=4 * RES, simplify_m=0.0, margin_m=10.0)
    reference = vectorize(path, strip_px=4096, tile_px=None, **kw)
    found = vectorize(path, strip_px=strip_px, tile_px=tile_px, **kw)
    assert len(found.polygons) == len(reference.polygons) == len(boxes)
    assert canonical(found)[0] == canonical(reference)[0]
    assert np.array_equal(canonical(found)[1], canonical(reference)[1])
