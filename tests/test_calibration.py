import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch

from openfootprints.cli import main
from openfootprints.evaluation.calibration import (expected_calibration_error, fit_isotonic, precision_thresholds,
                                                 reliability, thresholds_by_region)
from openfootprints.model.bundle import load_bundle


def overconfident(n, seed):
    """Detections whose true-positive rate is confidence², i.e. the raw confidence is too high."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.3, 1.0, n)
    return conf, rng.random(n) < conf**2


def test_isotonic_calibration_lowers_the_error_on_held_out_data():
    fit_conf, fit_tp = overconfident(4000, 0)
    test_conf, test_tp = overconfident(4000, 1)
    calibration = fit_isotonic(fit_conf, fit_tp)
    assert np.all(np.diff(calibration["y"]) >= 0)
    calibrated = np.interp(test_conf, calibration["x"], calibration["y"])
    before, after = expected_calibration_error(test_conf, test_tp), expected_calibration_error(calibrated, test_tp)
    assert before > 0.1 and after < 0.04


def test_reliability_bins_and_ece_hand_case():
    conf = np.array([0.05, 0.15, 0.95, 0.95])
    tp = np.array([False, False, True, False])
    rows = reliability(conf, tp, n_bins=10)
    assert rows[9]["count"] == 2 and rows[9]["accuracy"] == 0.5
    # bins: {0.05: 0 tp} |0-0.05|, {0.15: 0} |0-0.15|, {0.95, 0.95: half} |0.5-0.95| ×2 → (0.05+0.15+0.9)/4
    assert expected_calibration_error(conf, tp) == pytest.approx((0.05 + 0.15 + 0.9) / 4)


def test_precision_thresholds_keep_the_most_detections_that_reach_the_target():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    tp = np.array([True, True, True, True, False, True])
    out = precision_thresholds(conf, tp, targets=(0.8, 0.9, 1.0))
    assert out[1.0] == {"threshold": 0.6, "count": 4}
    assert out[0.9] == {"threshold": 0.6, "count": 4}  # 4/5 = 0.8 < 0.9 at 0.5
    assert out[0.8] == {"threshold": 0.4, "count": 6}  # 5/6 ≥ 0.8 over all


def test_precision_thresholds_treat_ties_as_one_threshold():
    out = precision_thresholds(np.array([0.9, 0.5, 0.5]), np.array([True, True, False]), targets=(1.0,))
    assert out[1.0] == {"threshold": 0.9, "count": 1}


def test_thresholds_by_region():
    rows = thresholds_by_region(np.array([0.9, 0.2, 0.8]), np.array([True, False, False]), np.array(["a", "a", "b"]))
    assert rows[0]["region"] == "a" and rows[0]["threshold_p90"] == 0.9 and rows[0]["count_p90"] == 1
    assert rows[1]["threshold_p80"] is None and rows[1]["count_p80"] == 0


def test_calibrate_command_stores_the_mapping_in_the_bundle(tmp_path, capsys, tiny_bundle):
    rng = np.random.default_rng(0)
    truth, pred, raw = [], [], []
    for i in range(300):
        square = shapely.box(500000 + 20 * i, 700000, 500010 + 20 * i, 700010)
        truth.append(square)
        conf = rng.uniform(0.5, 1.0)
        good = rng.random() < conf**3
        pred.append(square if good else shapely.box(500000 + 20 * i, 700000, 500003 + 20 * i, 700003))
        raw.append(conf)
    gpd.GeoDataFrame(geometry=truth, crs="EPSG:32630").to_file(tmp_path / "truth.gpkg")
    gpd.GeoDataFrame({"confidence": raw, "raw_confidence": raw}, geometry=pred,
                     crs="EPSG:32630").to_crs("EPSG:4326").to_parquet(tmp_path / "pred.parquet")
    assert main(["calibrate", str(tmp_path / "pred.parquet"), str(tmp_path / "truth.gpkg"), "--model",
                 str(tiny_bundle), "--out", str(tmp_path / "cal.ofp")]) == 0
    capsys.readouterr()
    bundle = load_bundle(tmp_path / "cal.ofp")
    assert bundle.calibration["method"] == "isotonic" and bundle.calibration["n"] == 300
    assert bundle.calibrate(np.array([0.5]))[0] < 0.3 and bundle.calibrate(np.array([0.99]))[0] > 0.7
    assert torch.equal(bundle.state_dict["segmentation_head.0.weight"],
                       load_bundle(tiny_bundle).state_dict["segmentation_head.0.weight"])
