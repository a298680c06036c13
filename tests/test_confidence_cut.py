"""The confidence cut: chosen on validation chips by F1, stored in the bundle, applied by detection."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from openfootprints.configuration import load_config
from openfootprints.model.bundle import load_bundle, save_bundle
from openfootprints.pipeline import detect
from openfootprints.training.confidence_cut import MIN_TRUE, choose_min_confidence, chip_outcomes, true_polygons
from openfootprints.training.run import ChipDecoding, validation_cut

SETTINGS = ["tracking.energy=false", "detect.threshold=0.45"]


def test_the_cut_drops_the_unsure_false_buildings():
    confidence = np.r_[np.full(300, 0.9), np.full(300, 0.6)]  # 300 sure true buildings, 300 unsure false ones
    is_tp = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    choice = choose_min_confidence(confidence, is_tp, n_true=400)
    assert choice.min_confidence == 0.9 and choice.n_kept == 300 and choice.n_predicted == 600
    assert choice.f1_uncut == pytest.approx(2 * 300 / (600 + 400)) and choice.f1 == pytest.approx(2 * 300 / (300 + 400))


def test_no_cut_when_the_unsure_buildings_are_true_or_the_evidence_is_thin():
    confidence = np.r_[np.full(300, 0.9), np.full(300, 0.6)]
    sure_false = np.r_[np.zeros(300, bool), np.ones(300, bool)]
    assert choose_min_confidence(confidence, sure_false, n_true=400).min_confidence == 0.0
    all_true = np.ones(600, bool)
    assert choose_min_confidence(confidence, all_true, n_true=600).min_confidence == 0.0
    few = choose_min_confidence(confidence[::10], np.r_[np.ones(30, bool), np.zeros(30, bool)], n_true=MIN_TRUE - 1)
    assert few.min_confidence == 0.0 and few.f1 == few.f1_uncut
    assert choose_min_confidence(np.zeros(0), np.zeros(0, bool), n_true=50).min_confidence == 0.0


def test_a_cut_keeps_every_building_of_its_confidence():
    confidence = np.r_[np.full(200, 0.8), np.full(200, 0.8), np.full(250, 0.5)]  # a tie at 0.8: true and false
    is_tp = np.r_[np.ones(200, bool), np.zeros(200, bool), np.zeros(250, bool)]
    choice = choose_min_confidence(confidence, is_tp, n_true=200)
    assert choice.min_confidence == 0.8 and choice.n_kept == 400


def test_true_polygons_of_touching_buildings_stay_apart():
    ids = np.zeros((20, 20), np.int32)
    ids[2:8, 2:8], ids[2:8, 8:12], ids[14:18, 14:18] = 1, 2, 3  # 1 and 2 share a wall
    polygons = true_polygons(ids, Affine(0.5, 0, 0, 0, -0.5, 0))
    assert len(polygons) == 3
    assert sorted(shapely.area(polygons)) == pytest.approx([4.0, 6.0, 9.0])  # m²: 16, 24, 36 px of 0.25 m²


def test_a_found_building_is_true_when_it_overlaps_a_true_one_by_half():
    truth = np.array([shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)])
    found = np.array([shapely.box(1, 0, 10, 10), shapely.box(25, 0, 35, 10), shapely.box(50, 50, 55, 55)])
    assert chip_outcomes(found, np.array([0.9, 0.9, 0.9]), truth).tolist() == [True, False, False]


class Chips:
    """Validation chips as :func:`validation_cut` reads them: ``windows`` and each window's true building ids."""

    def __init__(self, ids: list[np.ndarray]):
        self.ids, self.windows = ids, [(0, k) for k in range(len(ids))]

    def raw_chip(self, scene: int, window: int):
        return type("RawChip", (), {"ids": self.ids[window]})


def test_the_validation_cut_is_measured_on_decoded_chips():
    """24 chips: five true buildings each, found with high output, and a false one of lower output beside each;
    a building cut by a chip's edge is not counted."""
    decoding = ChipDecoding(0.5, threshold=0.5, seed_threshold=None, grow_m=0.0, min_area_m2=1.0, simplify_m=0.0)
    outputs, ids = [], []
    for _ in range(24):
        chip_ids, output = np.zeros((64, 64), np.int32), np.zeros((64, 64), np.float32)
        for k in range(5):
            chip_ids[4 + 12 * k : 12 + 12 * k, 4:12] = k + 1
            output[4 + 12 * k : 12 + 12 * k, 4:12] = 0.95
            output[4 + 12 * k : 12 + 12 * k, 40:48] = 0.6  # found, but no true building there
        chip_ids[20:30, 58:64] = 9  # a true building at the edge, missed here: another chip's, not counted
        ids.append(chip_ids)
        outputs.append((output, np.ones((64, 64), bool)))
    choice = validation_cut(outputs, Chips(ids), decoding)
    assert choice.n_true == 120 and choice.n_predicted == 240
    assert choice.min_confidence == pytest.approx(0.95, abs=0.01) and choice.f1 == pytest.approx(1.0)


def test_detection_drops_buildings_under_the_bundles_cut(tiny_scene, tiny_bundle, tmp_path):
    every = tmp_path / "every.parquet"
    detect(load_config(SETTINGS), str(tiny_scene[0]), str(tiny_bundle), str(every), progress=False)
    confidence = gpd.read_parquet(every)["raw_confidence"].to_numpy()
    values = np.unique(confidence)  # the table rounds confidences: cut halfway between two of them
    cut = float(values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    bundle = load_bundle(tiny_bundle)
    bundle.min_confidence, bundle.threshold = cut, 0.45  # the cut is the bundle's at its own threshold
    cut_bundle = save_bundle(bundle, tmp_path / "cut.ofp")
    kept = tmp_path / "kept.parquet"
    detect(load_config(SETTINGS), str(tiny_scene[0]), str(cut_bundle), str(kept), progress=False)
    kept_confidence = gpd.read_parquet(kept)["raw_confidence"].to_numpy()
    assert len(kept_confidence) == (confidence >= cut).sum() and kept_confidence.min() >= cut
    again = tmp_path / "again.parquet"  # detect.min_confidence=0 overrides the bundle: every building again
    detect(load_config([*SETTINGS, "detect.min_confidence=0"]), str(tiny_scene[0]), str(cut_bundle), str(again),
           progress=False)
    assert len(gpd.read_parquet(again)) == len(confidence) > 10
    other = tmp_path / "other.parquet"  # another threshold than the one the cut was chosen with: no cut
    detect(load_config(["tracking.energy=false", "detect.threshold=0.4"]), str(tiny_scene[0]), str(cut_bundle),
           str(other), progress=False)
    assert gpd.read_parquet(other)["raw_confidence"].min() < cut


def test_too_few_true_buildings_keep_an_inherited_cut():
    confidence = np.array([0.95, 0.9, 0.6, 0.5])
    is_tp = np.array([True, True, False, False])
    choice = choose_min_confidence(confidence, is_tp, n_true=3, inherited=0.8)
    assert choice.inherited and choice.min_confidence == 0.8
    assert choice.n_kept == 2 and choice.f1 == pytest.approx(2 * 2 / (2 + 3))
    assert choose_min_confidence(confidence, is_tp, n_true=3).min_confidence == 0  # none without a parent
    assert choose_min_confidence(np.zeros(0), np.zeros(0, bool), n_true=0, inherited=0.8).min_confidence == 0.8
