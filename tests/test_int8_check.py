"""INT8 against fp32 on validation chips, and which file detection runs by default."""

import shutil

import numpy as np
import pytest
import torch

from openfootprints.configuration import load_config
from openfootprints.errors import InputError
from openfootprints.model.bundle import load_bundle
from openfootprints.training.int8_check import TOLERANCE, compare_engines, engine_scores
from openfootprints.training.run import ChipDecoding

DECODING = ChipDecoding(0.5, threshold=0.5, seed_threshold=None, grow_m=0.0, min_area_m2=1.0, simplify_m=0.0)


class Chips:
    """Validation chips as the check reads them: (image, mask, weight) items, windows and true building ids."""

    def __init__(self, ids: list[np.ndarray]):
        self.ids, self.windows = ids, [(0, k) for k in range(len(ids))]

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, k):  # the image carries the true footprint, so that an engine can "see" it
        footprint = torch.from_numpy((self.ids[k] > 0).astype(np.float32))[None]
        return footprint.repeat(3, 1, 1), footprint, torch.ones_like(footprint)

    def raw_chip(self, scene: int, window: int):
        return type("RawChip", (), {"ids": self.ids[window]})


def chips(n: int = 30) -> Chips:
    """``n`` chips of 64 px with four 8 × 8 px buildings each (120 in all)."""
    ids = []
    for _ in range(n):
        chip = np.zeros((64, 64), np.int32)
        for k in range(4):
            chip[6 + 14 * k: 14 + 14 * k, 10:18] = k + 1
        ids.append(chip)
    return Chips(ids)


def sees_buildings(batch: np.ndarray) -> np.ndarray:
    """A perfect engine: 0.95 on the footprints, 0.05 elsewhere."""
    return np.where(batch[:, 0] > 0, 0.95, 0.05).astype(np.float32)


def misses(every: int):
    """An engine that finds every building but the last one of each ``every``-th chip."""
    calls = {"chip": 0}

    def engine(batch: np.ndarray) -> np.ndarray:
        out = sees_buildings(batch)
        for output in out:
            if calls["chip"] % every == 0:
                output[48:56, 10:18] = 0.05
            calls["chip"] += 1
        return out
    return engine


def test_a_perfect_engine_scores_one_and_a_blind_one_zero():
    assert engine_scores(sees_buildings, chips(), DECODING, 8).f1 == pytest.approx(1.0)
    assert engine_scores(sees_buildings, chips(), DECODING, 8).pixel_iou == pytest.approx(1.0)
    blind = engine_scores(lambda b: np.zeros(b[:, 0].shape, np.float32), chips(), DECODING, 8)
    assert blind.f1 == 0 and blind.pixel_iou == 0


def test_int8_within_a_point_of_fp32_passes_and_more_fails():
    close = compare_engines(sees_buildings, misses(every=30), chips(), DECODING)  # 1 of 120 missed
    assert close["int8"]["f1"] == pytest.approx(2 * 119 / 239) and close["fp32"]["f1"] == pytest.approx(1.0)
    assert 1 - close["int8"]["f1"] < TOLERANCE and close["within_tolerance"] and close["chips"] == 30
    far = compare_engines(sees_buildings, misses(every=3), chips(), DECODING)  # 10 of 120 missed
    assert far["int8"]["f1"] < 1 - TOLERANCE and not far["within_tolerance"]


def test_the_bundles_cut_counts_in_the_check():
    cut = ChipDecoding(0.5, threshold=0.5, seed_threshold=None, grow_m=0.0, min_area_m2=1.0, simplify_m=0.0,
                       min_confidence=0.99)  # above every building's confidence: none is kept
    assert engine_scores(sees_buildings, chips(), cut, 8).f1 == 0


@pytest.fixture(scope="module")
def int8_beside_bundle(tiny_bundle, tiny_scene, tmp_path_factory):
    """A copy of the tiny bundle with its INT8 file beside it, as ``export --int8`` writes it."""
    from openfootprints.model.quantize import int8_beside, quantize_int8

    model = tmp_path_factory.mktemp("int8") / "model.ofp"
    shutil.copy(tiny_bundle, model)
    quantize_int8(load_bundle(model), int8_beside(model), [str(tiny_scene[0])], n_chips=2, source=model)
    return model


def predictor_file(model, engine: str) -> str:
    from openfootprints.pipeline import load_predictor

    predictor = load_predictor(load_config([f"detect.engine={engine}"]), str(model), model.parent)
    assert predictor.onnx_file == predictor.network.network.path
    return str(predictor.onnx_file)


@pytest.mark.slow
def test_detection_runs_the_int8_file_only_when_its_check_passed_for_this_bundle(int8_beside_bundle, tmp_path,
                                                                                   tiny_scene):
    from openfootprints.model.quantize import int8_beside, record_check, usable_int8

    model, int8 = int8_beside_bundle, int8_beside(int8_beside_bundle)
    assert usable_int8(model) is None  # not checked yet
    record_check(int8, {"within_tolerance": False})
    assert usable_int8(model) is None
    assert predictor_file(model, "onnx-int8") == str(int8)  # asked for by name: run whatever its check said
    record_check(int8, {"within_tolerance": True})
    assert usable_int8(model) == int8
    assert predictor_file(model, "auto") == str(int8)
    from openfootprints.pipeline import detect
    summary = detect(load_config(["tracking.energy=false"]), str(tiny_scene[0]), str(model),
                     str(tmp_path / "b.parquet"), progress=False)
    assert summary["engine"] == "onnx (model.int8.onnx)"  # what ran is reported
    assert predictor_file(model, "onnx") != str(int8)  # fp32 when asked for
    other = tmp_path / "model.ofp"  # another bundle (other bytes) with this INT8 file beside it: not its own
    bundle = load_bundle(model)
    bundle.threshold = 0.4
    from openfootprints.model.bundle import save_bundle
    save_bundle(bundle, other)
    shutil.copy(int8, int8_beside(other))
    assert usable_int8(other) is None


@pytest.mark.slow
def test_a_bundle_whose_int8_file_runs_is_read_from_that_file_without_pytorch(int8_beside_bundle, tmp_path,
                                                                              tiny_scene):
    from conftest import detect_in_child
    from openfootprints.model.quantize import int8_beside, record_check

    record_check(int8_beside(int8_beside_bundle), {"within_tolerance": True})
    said, heavy = detect_in_child(tiny_scene[0], int8_beside_bundle, tmp_path / "b.parquet", "detect.device=cpu")
    assert "torch" not in heavy and '"engine": "onnx (model.int8.onnx)"' in said, said
    from openfootprints.pipeline import load_predictor

    bundle, described = load_bundle(int8_beside_bundle), load_predictor(
        load_config(["detect.device=cpu"]), str(int8_beside_bundle), tmp_path).bundle
    assert {k: v for k, v in described.metadata().items() if k != "training"} == \
        {k: v for k, v in bundle.metadata().items() if k != "training"}  # the bundle's contract, to the value


def test_onnx_int8_without_the_file_is_refused(tiny_bundle, tmp_path):
    model = tmp_path / "alone.ofp"
    shutil.copy(tiny_bundle, model)
    with pytest.raises(InputError, match="alone.int8.onnx: no INT8 file beside the model"):
        predictor_file(model, "onnx-int8")


@pytest.mark.slow
def test_export_int8_checks_a_trained_bundle_on_its_validation_chips(tiny_scene, tmp_path, capsys):
    from openfootprints.cli import main
    from openfootprints.model.onnx import load_model
    from openfootprints.model.quantize import int8_beside

    model = tmp_path / "trained.ofp"
    assert main(["train", "--image", str(tiny_scene[0]), "--labels", str(tiny_scene[1]), "--out", str(model),
                 "data.chip_px=64", "data.block_m=32", "train.batch_size=4", "data.samples_per_epoch=8",
                 "train.max_epochs=1", "tracking.energy=false", "model.encoder=resnet18",
                 "model.decoder_channels=[16,16,8,8,8]", "model.pretrained=false"]) == 0
    capsys.readouterr()
    assert main(["export", str(model), "--int8", "--chips", "2"]) == 0  # calibrated on its training imagery
    said = capsys.readouterr().out
    check = load_model(int8_beside(model)).training["quantization"]["check"]
    assert check["chips"] > 0 and set(check["fp32"]) == set(check["int8"]) == {"f1", "pixel_iou"}
    assert f"on {check['chips']} validation chips F1 {check['int8']['f1']:.3f}" in said
    verdict = "detect runs it by default" if check["within_tolerance"] else "only with detect.engine=onnx-int8"
    assert verdict in said
