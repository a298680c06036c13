import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely import affinity

from openfootprints.evaluation.matching import greedy_match, overlapping_pairs
from openfootprints.evaluation.metrics import (average_precision, dominant_orientation_deg, evaluate,
                                             orientation_error_deg, select_in_bounds)

CRS = "EPSG:32630"


def frame(geoms, confidence=None, **columns):
    data = {"confidence": confidence if confidence is not None else np.full(len(geoms), 0.9), **columns}
    return gpd.GeoDataFrame(data, geometry=list(geoms), crs=CRS)


def squares(n, size=10.0):
    return [shapely.box(500000 + 30 * i, 700000, 500000 + 30 * i + size, 700000 + size) for i in range(n)]


def test_perfect_prediction():
    truth = squares(5)
    result = evaluate(frame(truth), frame(truth))
    s = result.scores
    assert (s.precision, s.recall, s.f1, s.ap, s.ap_50_95) == pytest.approx((1, 1, 1, 1, 1))
    assert s.pixel_iou == pytest.approx(1.0) and s.mean_matched_iou == pytest.approx(1.0)
    assert s.orientation_error_deg == pytest.approx(0, abs=1e-6) and s.area_ratio == pytest.approx(1.0)
    assert list(result.matched) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("shift, matched", [(3.3, True), (3.4, False)])
def test_shift_just_above_and_below_half_iou(shift, matched):
    # two 10×10 squares shifted by s overlap (10 - s)·10; IoU = (10 - s) / (10 + s): 0.504 at 3.3, 0.493 at 3.4
    truth = squares(1)
    pred = [affinity.translate(truth[0], shift, 0)]
    s = evaluate(frame(pred), frame(truth)).scores
    assert s.true_positives == int(matched)
    assert s.f1 == (1.0 if matched else 0.0)
    assert s.pixel_iou == pytest.approx((10 - shift) / (10 + shift))
    assert s.ap_50_95 == pytest.approx(0.1 if matched else 0.0)  # only the 0.50 threshold matches


def test_split_building_gives_one_match_and_one_false_positive():
    truth = squares(1)
    halves = [shapely.box(500000, 700000, 500007, 700010), shapely.box(500007, 700000, 500010, 700010)]
    s = evaluate(frame(halves, np.array([0.9, 0.8])), frame(truth)).scores
    assert (s.true_positives, s.false_positives, s.false_negatives) == (1, 1, 0)
    assert s.precision == 0.5 and s.recall == 1.0 and s.pixel_iou == pytest.approx(1.0)
    assert s.area_ratio == pytest.approx(0.7)


def test_merged_pair_matches_at_most_one():
    a, b = shapely.box(500000, 700000, 500010, 700010), shapely.box(500010, 700000, 500013, 700010)
    s = evaluate(frame([shapely.union(a, b)]), frame([a, b])).scores
    assert (s.true_positives, s.false_positives, s.false_negatives) == (1, 0, 1)


def test_errors_are_told_apart_by_how_they_overlap():
    x, y = 500000, 700000

    def box(x0, width, height=10.0):
        return shapely.box(x + x0, y, x + x0 + width, y + height)

    truth = [box(0, 10), box(10, 10),  # two touching houses ...
             box(40, 20),              # a long one ...
             box(80, 10),              # one nothing touches ...
             box(110, 10),             # one found 6 m off ...
             box(140, 10)]             # and one found right
    pred = [box(-1, 22),               # ... detected as one (IoU 0.45 each): a merge
            box(40, 9.5), box(50.5, 9.5),  # ... in two pieces (IoU 0.475 each)
            box(116, 10),              # ... IoU 0.25, 40 % on the building: misshaped
            box(140, 10),
            box(200, 10)]              # on no building: spurious
    result = evaluate(frame(pred), frame(truth))
    assert result.scores.true_positives == 1
    assert result.errors == {"false_negatives": {"merged": 2, "split": 1, "missed": 1, "misshaped": 1},
                             "false_positives": {"merge": 1, "spurious": 1, "part": 2, "misshaped": 1}}
    counts = result.errors
    assert sum(counts["false_negatives"].values()) == result.scores.false_negatives
    assert sum(counts["false_positives"].values()) == result.scores.false_positives
    assert result.to_dict()["errors"] == counts


def test_a_shifted_outline_is_misshaped_and_a_blob_over_sheds_a_merge():
    x, y = 500000, 700000
    house = shapely.box(x, y, x + 10, y + 10)
    shifted = affinity.translate(house, 4, 0)  # IoU 0.43, 60 % of it on the house: not a piece of it
    errors = evaluate(frame([shifted]), frame([house])).errors
    assert errors["false_positives"]["misshaped"] == 1 and errors["false_negatives"]["misshaped"] == 1
    sheds = [shapely.box(x + 40, y, x + 43, y + 3), shapely.box(x + 50, y, x + 53, y + 3)]
    blob = shapely.box(x + 20, y - 40, x + 120, y + 60)  # covers both sheds, 0.2 % of it on them
    errors = evaluate(frame([blob]), frame(sheds)).errors
    assert errors["false_positives"] == {"merge": 1, "spurious": 0, "part": 0, "misshaped": 0}
    assert errors["false_negatives"]["merged"] == 2


def test_empty_prediction_and_empty_truth():
    s = evaluate(frame([]), frame(squares(3))).scores
    assert (s.precision, s.recall, s.f1, s.ap, s.false_negatives) == (0, 0, 0, 0, 3)
    s = evaluate(frame(squares(2)), frame([])).scores
    assert s.false_positives == 2 and s.f1 == 0 and np.isnan(s.ap) and np.isnan(s.recall)
    assert np.isnan(evaluate(frame([]), frame([])).scores.pixel_iou)  # undefined, not a perfect 1


def test_rotated_prediction_has_orientation_error():
    truth = squares(1, size=20)
    pred = [affinity.rotate(truth[0], 10, origin="centroid")]
    s = evaluate(frame(pred), frame(truth)).scores
    assert s.true_positives == 1 and s.orientation_error_deg == pytest.approx(10, abs=1e-6)


def test_orientation_is_modulo_ninety():
    assert orientation_error_deg(np.array([89.0]), np.array([1.0]))[0] == pytest.approx(2.0)
    rect = shapely.box(0, 0, 20, 10)
    angles = dominant_orientation_deg(np.array([affinity.rotate(rect, a, origin="centroid") for a in (0, 30, 100)]))
    assert orientation_error_deg(angles, np.array([0.0, 30.0, 10.0])) == pytest.approx([0, 0, 0], abs=1e-6)


def test_greedy_match_is_one_to_one_in_confidence_order():
    truth = squares(1)
    close, closer = affinity.translate(truth[0], 1, 0), affinity.translate(truth[0], 0.5, 0)
    pairs = overlapping_pairs(np.array([close, closer]), np.array(truth))
    matched, _ = greedy_match(np.array([0.9, 0.5]), 1, pairs, 0.5)
    assert list(matched) == [0, -1]  # the more confident one wins, even with a lower IoU


def test_average_precision_ranks_by_confidence():
    # 3 truths; ranked predictions TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 3)
    levels = np.linspace(0, 1, 101)
    expected = np.where(levels <= 1 / 3, 1.0, np.where(levels <= 2 / 3, 2 / 3, 0.0)).mean()
    assert ap == pytest.approx(expected)


def test_breakdowns_by_size_and_region():
    small, big = shapely.box(500000, 700000, 500004, 700004), shapely.box(500100, 700000, 500130, 700020)
    truth = frame([small, big], region=["a", "b"])
    pred = frame([big], region=["b"])
    result = evaluate(pred, truth, region_column="region")
    sizes = {(row["min_m2"], row["max_m2"]): row for row in result.by_size}
    assert sizes[(0.0, 25.0)]["recall"] == 0.0 and sizes[(500.0, 1000.0)]["recall"] == 1.0
    assert sizes[(500.0, 1000.0)]["precision"] == 1.0
    regions = {row["region"]: row for row in result.by_region}
    assert regions["a"]["recall"] == 0.0 and regions["b"]["f1"] == 1.0
    by_grid = evaluate(pred, truth, grid_m=50).by_region
    assert len(by_grid) == 2


def brute_force_true_positives(pred, truth, conf, threshold):
    """The greedy rule, spelled out with nested loops (IoU ties go to the first truth)."""
    taken, tp = set(), 0
    for i in np.argsort(-conf, kind="stable"):
        best, best_j = -1.0, None
        for j, t in enumerate(truth):
            inter = pred[i].intersection(t).area
            if j in taken or inter <= 0:
                continue
            iou = inter / (pred[i].area + t.area - inter)
            if iou >= threshold and iou > best:
                best, best_j = iou, j
        if best_j is not None:
            taken.add(best_j)
            tp += 1
    return tp


boxes = st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 12), st.integers(1, 12))  # ties likely


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(boxes, max_size=12), st.lists(boxes, max_size=12), st.sampled_from([0.1, 0.3, 0.5, 0.75]),
       st.integers(0, 2**31))
def test_matching_agrees_with_brute_force(truth_boxes, pred_boxes, threshold, seed):
    truth = [shapely.box(x, y, x + w, y + h) for x, y, w, h in truth_boxes]
    pred = [shapely.box(x, y, x + w, y + h) for x, y, w, h in pred_boxes]
    conf = np.random.default_rng(seed).integers(0, 4, len(pred)).astype(float)  # ties included
    pairs = overlapping_pairs(np.array(pred, dtype=object), np.array(truth, dtype=object))
    matched, _ = greedy_match(conf, len(truth), pairs, threshold)
    assert (matched >= 0).sum() == brute_force_true_positives(pred, truth, conf, threshold)
    assert len(set(matched[matched >= 0].tolist())) == (matched >= 0).sum()


def test_select_in_bounds_uses_centroids():
    f = frame(squares(3)).to_crs("EPSG:4326")
    c = f.geometry.iloc[1].centroid
    picked = select_in_bounds(f, (c.x - 1e-5, c.y - 1e-5, c.x + 1e-5, c.y + 1e-5))
    assert len(picked) == 1


def test_true_buildings_off_the_imagery_are_not_scored_when_the_imagery_is_given(tmp_path):
    import json

    import rasterio
    from rasterio.transform import from_origin

    from openfootprints.cli import main

    scene = tmp_path / "half.tif"  # 100 × 100 px of 1 m; the east half is nodata
    image = np.full((1, 100, 100), 200, np.uint8)
    image[:, :, 50:] = 0
    with rasterio.open(scene, "w", driver="GTiff", width=100, height=100, count=1, dtype="uint8", nodata=0,
                       crs="EPSG:32631", transform=from_origin(500000, 1000, 1, 1)) as dst:
        dst.write(image)
    on = shapely.box(500010, 950, 500020, 960)  # wholly on valid pixels
    edge = shapely.box(500044, 950, 500064, 960)  # 30 % on valid pixels
    outside = shapely.box(500200, 950, 500210, 960)  # beyond the scene
    crs = "EPSG:32631"
    gpd.GeoDataFrame(geometry=[on, edge, outside], crs=crs).to_file(tmp_path / "truth.geojson")
    gpd.GeoDataFrame({"confidence": [0.9]}, geometry=[on], crs=crs).to_crs(4326).to_parquet(tmp_path / "pred.parquet")
    assert main(["evaluate", str(tmp_path / "pred.parquet"), str(tmp_path / "truth.geojson"), "--imagery", str(scene),
                 "--json", str(tmp_path / "m.json")]) == 0
    scored = json.loads((tmp_path / "m.json").read_text())
    assert scored["n_true"] == 1 and scored["n_true_off_imagery"] == 2 and scored["recall"] == 1.0
    assert main(["evaluate", str(tmp_path / "pred.parquet"), str(tmp_path / "truth.geojson"), "--json",
                 str(tmp_path / "all.json")]) == 0
    assert json.loads((tmp_path / "all.json").read_text())["n_true"] == 3  # without imagery: every true building
