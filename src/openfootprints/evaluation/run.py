"""``openfootprints evaluate`` and ``calibrate``: a buildings table and true footprints in; metrics, a report or a
calibrated copy of the bundle out, written atomically."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from omegaconf import DictConfig

from openfootprints.errors import InputError
from openfootprints.evaluation.calibration import expected_calibration_error, thresholds_by_region
from openfootprints.evaluation.metrics import Evaluation, evaluate, select_in_bounds
from openfootprints.io.atomic import atomic_outputs, check_writable
from openfootprints.io.provenance import json_safe
from openfootprints.io.raster import open_scene
from openfootprints.io.vector import read_polygons, read_table

log = logging.getLogger(__name__)


def evaluate_files(cfg: DictConfig, predicted_path: str, truth_path: str, out_json: str | None = None,
                   bbox=None, report_dir: str | None = None, imagery: str | None = None) -> Evaluation:
    """Evaluate a buildings table against true footprints; optionally only within ``bbox`` (degrees).

    Writes the metrics JSON to ``out_json`` and an HTML report into ``report_dir`` when asked. With ``imagery``
    (the scene that was detected), true buildings with less than ``evaluate.min_on_imagery`` of their area on its
    valid pixels are not scored (no detector can find them; their number is in the JSON), and the report shows
    image crops of the errors.
    """
    e = cfg.evaluate
    for path, folder in ((out_json, False), (report_dir, True)):
        if path:
            check_writable(path, folder=folder)
    predicted = read_table(predicted_path, fix_invalid=cfg.data.fix_invalid)
    truth = read_polygons(truth_path, fix_invalid=cfg.data.fix_invalid, allow_empty=True)
    predicted, truth = select_in_bounds(predicted, bbox), select_in_bounds(truth, bbox)
    off_imagery = 0
    if imagery:
        truth, off_imagery = on_imagery(truth, open_scene(imagery), e.min_on_imagery)
    if truth.empty:
        raise InputError(f"{truth_path}: no true building in the scored area"
                         f"{f' (evaluate.bbox={list(bbox)})' if bbox else ''}; there is nothing to score against")
    for path, frame in ((predicted_path, predicted), (truth_path, truth)):
        if e.region_column and e.region_column not in frame:
            raise InputError(f"{path}: no column '{e.region_column}' (evaluate.region_column)")
    result = evaluate(predicted, truth, e.iou, region_column=e.region_column, grid_m=e.grid_m)
    result.extra = confidence_figures(predicted, result)
    if imagery:
        result.extra["n_true_off_imagery"] = off_imagery
    if len(predicted) and not extents_overlap(predicted, truth):
        result.extra["warning"] = (f"{Path(predicted_path).name} and {Path(truth_path).name} do not overlap at all: "
                                   "are they of the same place (and the same CRS)?")
        log.warning(result.extra["warning"])
    finals = ([Path(report_dir) / "index.html"] if report_dir else []) + ([out_json] if out_json else [])
    with atomic_outputs(*finals) as tmps:
        if report_dir:
            from openfootprints.evaluation.report import write_report  # matplotlib only when a report is asked

            scene = open_scene(imagery) if imagery else None
            write_report(tmps[0], predicted, truth, result, scene,
                         title=f"{Path(predicted_path).name} vs {Path(truth_path).name}")
        if out_json:
            record = {"predicted": str(predicted_path), "truth": str(truth_path),
                      "bbox": list(bbox) if bbox else None, **result.to_dict()}
            tmps[-1].write_text(json.dumps(json_safe(record), indent=2, allow_nan=False))
    return result


def on_imagery(truth: gpd.GeoDataFrame, scene, min_share: float) -> tuple[gpd.GeoDataFrame, int]:
    """The true buildings with at least ``min_share`` of their area on the scene's valid pixels, and how many
    were left out."""
    if truth.empty:
        return truth, 0
    valid = scene.valid_area()
    local = truth.geometry.to_crs(scene.crs).to_numpy()
    shapely.prepare(valid)
    share = np.ones(len(local))
    partly = ~shapely.contains_properly(valid, local)  # the rest is wholly inside: share 1 without an intersection
    area = shapely.area(local[partly])
    share[partly] = np.divide(shapely.area(shapely.intersection(local[partly], valid)), area,
                              out=np.zeros_like(area), where=area > 0)
    keep = share >= min_share
    return truth[keep], int((~keep).sum())


def extents_overlap(predicted: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> bool:
    """Whether the extents of the predicted and the true buildings overlap at all."""
    return shapely.box(*predicted.to_crs("EPSG:4326").total_bounds).intersects(
        shapely.box(*truth.to_crs("EPSG:4326").total_bounds))


def confidence_figures(predicted: gpd.GeoDataFrame, result: Evaluation) -> dict:
    """ECE of the confidence (and of the raw confidence, when the table has it) and precision thresholds per region."""
    is_tp = result.matched >= 0
    figures = {"ece": expected_calibration_error(result.confidence, is_tp),
               "precision_thresholds": thresholds_by_region(result.confidence, is_tp, result.pred_region)}
    if "raw_confidence" in predicted:
        figures["ece_raw"] = expected_calibration_error(predicted["raw_confidence"].to_numpy(np.float64), is_tp)
    return figures
