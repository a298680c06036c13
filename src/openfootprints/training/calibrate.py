"""``openfootprints calibrate``: a bundle's confidence made a probability, fitted on a labelled validation area.

Calibration uses evaluation (the detections matched to the truth at IoU ≥ ``evaluate.iou``) and writes a bundle;
evaluation itself reads tables only and never a network.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from openfootprints.errors import InputError
from openfootprints.evaluation.calibration import expected_calibration_error, fit_isotonic
from openfootprints.evaluation.metrics import evaluate, select_in_bounds
from openfootprints.io.atomic import check_writable
from openfootprints.io.vector import read_polygons, read_table
from openfootprints.model.bundle import load_bundle, save_bundle


def calibrate(cfg: DictConfig, predicted_path: str, truth_path: str, model_path: str, out_path: str) -> dict:
    """Fit the isotonic confidence calibration on a validation area and write a calibrated copy of the bundle.

    ``predicted_path`` is the detection of that area with the model at ``model_path`` (its
    ``raw_confidence`` is used, so re-calibrating a calibrated model is right); ``evaluate.bbox`` limits
    the area. Returns the ECE before and after on the fitting data.
    """
    check_writable(out_path)
    predicted = read_table(predicted_path, fix_invalid=cfg.data.fix_invalid)
    truth = read_polygons(truth_path, fix_invalid=cfg.data.fix_invalid, allow_empty=True)
    predicted, truth = select_in_bounds(predicted, cfg.evaluate.bbox), select_in_bounds(truth, cfg.evaluate.bbox)
    column = "raw_confidence" if "raw_confidence" in predicted else "confidence"
    result = evaluate(predicted, truth, cfg.evaluate.iou, confidence_column=column)
    is_tp = result.matched >= 0
    try:
        calibration = fit_isotonic(result.confidence, is_tp)
    except ValueError as err:
        raise InputError(f"{predicted_path}: {err}") from err
    bundle = load_bundle(model_path)
    bundle.calibration = {**calibration, "iou": cfg.evaluate.iou, "fitted_on": Path(predicted_path).name,
                          "bbox": list(cfg.evaluate.bbox) if cfg.evaluate.bbox else None}
    save_bundle(bundle, out_path)
    return {"detections": len(predicted), "true_positives": int(is_tp.sum()),
            "ece_before": expected_calibration_error(result.confidence, is_tp),
            "ece_after_on_fitting_data": expected_calibration_error(bundle.calibrate(result.confidence), is_tp),
            "model": str(out_path)}
