import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely import affinity

from openfootprints.evaluate.metrics import average_precision, evaluate, greedy_match, pairwise_iou, select_in_bounds

CRS = "EPSG:32630"


def frame(geoms, confidence=None):
    data = {"confidence": confidence if confidence is not None else np.full(len(geoms), 0.9)}
    return gpd.GeoDataFrame(data, geometry=list(geoms), crs=CRS)


def squares(n, size=10.0):
    return [shapely.box(500000 + 30 * i, 700000, 500000 + 30 * i + size, 700000 + size) for i in range(n)]


def test_perfect_prediction():
    truth = squares(5)
    scores, matched = evaluate(frame(truth), frame(truth))
    assert (scores.precision, scores.recall, scores.f1, scores.ap) == pytest.approx((1, 1, 1, 1))
    assert scores.pixel_iou == pytest.approx(1.0) and scores.mean_matched_iou == pytest.approx(1.0)
    assert list(matched) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("shift, matched", [(3.3, True), (3.4, False)])
def test_shift_just_above_and_below_half_iou(shift, matched):
    # two 10×10 squares shifted by s overlap (10 - s)·10; IoU = (10 - s) / (10 + s): 0.504 at 3.3, 0.493 at 3.4
    truth = squares(1)
    pred = [affinity.translate(truth[0], shift, 0)]
    scores, _ = evaluate(frame(pred), frame(truth))
    assert scores.true_positives == int(matched)
    assert scores.f1 == (1.0 if matched else 0.0)


def test_split_building_gives_one_match_and_one_false_positive():
    truth = squares(1)
    halves = [shapely.box(500000, 700000, 500007, 700010), shapely.box(500007, 700000, 500010, 700010)]
    scores, _ = evaluate(frame(halves, np.array([0.9, 0.8])), frame(truth))
    assert (scores.true_positives, scores.false_positives, scores.false_negatives) == (1, 1, 0)
    assert scores.precision == 0.5 and scores.recall == 1.0


def test_merged_pair_matches_at_most_one():
    a, b = shapely.box(500000, 700000, 500010, 700010), shapely.box(500010, 700000, 500013, 700010)
    merged = [shapely.union(a, b)]
    scores, _ = evaluate(frame(merged), frame([a, b]))
    assert (scores.true_positives, scores.false_positives, scores.false_negatives) == (1, 0, 1)


def test_empty_prediction_and_empty_truth():
    empty = frame([])
    scores, _ = evaluate(empty, frame(squares(3)))
    assert (scores.precision, scores.recall, scores.f1, scores.ap, scores.false_negatives) == (0, 0, 0, 0, 3)
    scores, _ = evaluate(frame(squares(2)), empty)
    assert scores.false_positives == 2 and scores.f1 == 0 and np.isnan(scores.ap)


def test_greedy_match_is_one_to_one_in_confidence_order():
    truth = squares(1)
    close, closer = affinity.translate(truth[0], 1, 0), affinity.translate(truth[0], 0.5, 0)
    p, t, iou = pairwise_iou(np.array([close, closer]), np.array(truth))
    matched, _ = greedy_match(np.array([0.9, 0.5]), 1, p, t, iou, 0.5)
    assert list(matched) == [0, -1]  # the more confident one wins, even with a lower IoU


def test_average_precision_ranks_by_confidence():
    # 3 truths; ranked predictions TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 3)
    levels = np.linspace(0, 1, 101)
    expected = np.where(levels <= 1 / 3, 1.0, np.where(levels <= 2 / 3, 2 / 3, 0.0)).mean()
    assert ap == pytest.approx(expected)


def brute_force(pred, truth, conf, threshold):
    order = np.argsort(-conf, kind="stable")
    taken, tp = set(), 0
    for i in order:
        best, best_j = -1.0, None
        for j, t in enumerate(truth):
            if j in taken:
                continue
            inter = pred[i].intersection(t).area
            iou = inter / (pred[i].area + t.area - inter)
            if iou >= threshold and iou > best:
                best, best_j = iou, j
        if best_j is not None:
            taken.add(best_j)
            tp += 1
    return tp


@pytest.mark.parametrize("seed", range(10))
def test_matching_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    truth = [shapely.box(x, y, x + w, y + h) for x, y, w, h in rng.uniform([0, 0, 2, 2], [60, 60, 12, 12], (25, 4))]
    pred = [affinity.translate(truth[i], *rng.normal(0, 2, 2)) for i in rng.integers(0, 25, 30)]
    conf = rng.random(30)
    p, t, iou = pairwise_iou(np.array(pred), np.array(truth))
    matched, _ = greedy_match(conf, 25, p, t, iou, 0.5)
    assert (matched >= 0).sum() == brute_force(pred, truth, conf, 0.5)
    assert len(set(matched[matched >= 0])) == (matched >= 0).sum()


def test_select_in_bounds_uses_centroids():
    f = frame(squares(3)).to_crs("EPSG:4326")
    c = f.geometry.iloc[1].centroid
    picked = select_in_bounds(f, (c.x - 1e-5, c.y - 1e-5, c.x + 1e-5, c.y + 1e-5))
    assert len(picked) == 1
