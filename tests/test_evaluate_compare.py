import geopandas as gpd
import numpy as np
import pytest
import shapely

from openfootprints.evaluation.compare import (f1_of_counts, mean_difference, paired_f1_difference,
                                               resampled_differences, square_counts)
from openfootprints.evaluation.metrics import evaluate

CRS = "EPSG:32630"


def frame(geoms):
    return gpd.GeoDataFrame({"confidence": np.full(len(geoms), 0.9)}, geometry=list(geoms), crs=CRS)


def houses(n_squares: int, per_square: int = 4) -> list[shapely.Polygon]:
    """``per_square`` 8 m houses in each of ``n_squares`` 50 m squares along a row."""
    return [shapely.box(500000 + 50 * s + 12 * k + 1, 700001, 500000 + 50 * s + 12 * k + 9, 700009)
            for s in range(n_squares) for k in range(per_square)]


def region(name: str, matched_pred: int, n_pred: int, matched_true: int, n_true: int) -> dict:
    return {"region": name, "matched_predicted": matched_pred, "n_predicted": n_pred, "matched_true": matched_true,
            "n_true": n_true}


def test_f1_of_counts_is_the_harmonic_mean_of_precision_and_recall():
    counts = np.array([[3, 4, 3, 6], [0, 0, 0, 5], [2, 2, 1, 1]])
    precision, recall = 3 / 4, 3 / 6
    assert f1_of_counts(counts) == pytest.approx([2 * precision * recall / (precision + recall), 0.0, 1.0])


def test_square_counts_fill_absent_squares_with_zeros():
    counts = square_counts([region("a", 1, 2, 1, 3)], ["a", "b"])
    assert counts.tolist() == [[1, 2, 1, 3], [0, 0, 0, 0]]


def test_the_whole_place_difference_is_the_difference_of_evaluate_f1():
    truth = houses(10)
    good = truth[:30]  # finds 30 of 40
    fair = truth[:20] + [shapely.box(500000 + 50 * s + 40, 700030, 500000 + 50 * s + 48, 700038) for s in range(5)]
    a, b = (evaluate(frame(p), frame(truth), grid_m=50) for p in (good, fair))
    result = paired_f1_difference(a.by_region, b.by_region)
    assert result["difference"] == pytest.approx(b.scores.f1 - a.scores.f1)
    assert result["squares"] == 10 and result["level"] == 0.95


def test_the_same_buildings_twice_differ_by_nothing():
    rows = evaluate(frame(houses(6)[:15]), frame(houses(6)), grid_m=50).by_region
    result = paired_f1_difference(rows, rows)
    assert (result["difference"], result["low"], result["high"]) == (0.0, 0.0, 0.0)


def test_better_in_every_square_gives_an_interval_above_zero_and_mixed_results_one_around_it():
    first = [region(f"s{i}", 2, 4, 2, 4) for i in range(20)]
    better = [region(f"s{i}", 3, 4, 3, 4) for i in range(20)]
    mixed = [region(f"s{i}", 4 if i % 2 else 0, 4, 4 if i % 2 else 0, 4) for i in range(20)]  # same mean, spread
    assert paired_f1_difference(first, better)["low"] > 0
    result = paired_f1_difference(first, mixed)
    assert result["low"] < 0 < result["high"] and result["difference"] == pytest.approx(0.0)


def test_the_interval_is_reproducible_and_narrows_with_the_level():
    first = [region(f"s{i}", i % 3, 3, i % 3, 3) for i in range(15)]
    second = [region(f"s{i}", (i + 1) % 3, 3, (i + 1) % 3, 3) for i in range(15)]
    wide, narrow = paired_f1_difference(first, second, level=0.95), paired_f1_difference(first, second, level=0.5)
    assert paired_f1_difference(first, second, level=0.95) == wide
    assert wide["low"] <= narrow["low"] <= narrow["high"] <= wide["high"]
    with pytest.raises(ValueError, match="level"):
        paired_f1_difference(first, second, level=1.0)


def test_the_mean_over_places_averages_differences_and_resamplings():
    place_a = resampled_differences([region("x", 1, 2, 1, 2)], [region("x", 2, 2, 2, 2)], resamples=50)
    place_b = (0.1, np.full(50, 0.1))
    result = mean_difference([place_a, place_b])
    assert result["difference"] == pytest.approx((0.5 + 0.1) / 2)
    assert result["low"] == pytest.approx(0.3) and result["high"] == pytest.approx(0.3)  # one square: no spread
    with pytest.raises(ValueError):
        mean_difference([])
