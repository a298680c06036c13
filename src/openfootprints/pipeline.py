"""The detect and evaluate commands, stage by stage: predict → vectorize → export; evaluate.

Each function takes the resolved config and file paths, writes its outputs atomically and its resolved
config beside them, and returns what it wrote.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from openfootprints.evaluate.metrics import Evaluation, evaluate, format_table, select_in_bounds
from openfootprints.export.buildings import buildings_table
from openfootprints.io.atomic import atomic_path
from openfootprints.io.geo import degrees_to_crs
from openfootprints.io.raster import open_scene
from openfootprints.io.vector import read_polygons, read_table, write_table
from openfootprints.model.bundle import load_bundle
from openfootprints.predict.probabilities import predict_probabilities, region_from_bounds
from openfootprints.vectorize.polygons import vectorize

log = logging.getLogger(__name__)


def write_config_beside(cfg: DictConfig, output: Path) -> Path:
    """Write the resolved config as ``<output>.config.yaml``, so the result can be reproduced."""
    path = output.with_name(output.name + ".config.yaml")
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def detect(cfg: DictConfig, scene_path: str, model_path: str, out: str, progress: bool = True) -> dict:
    """Detect buildings in a scene and write the buildings table to ``out`` (format by extension).

    Returns a summary: counts, area in km², seconds per stage and the output paths.
    """
    d = cfg.detect
    out = Path(out)
    bundle = load_bundle(model_path)
    bands = list(cfg.data.bands) if cfg.data.bands else bundle.bands
    scene = open_scene(scene_path, bands=bands, resolution_m=bundle.resolution_m)
    bounds = degrees_to_crs(d.bbox, scene.crs) if d.bbox else None
    region = region_from_bounds(scene, bounds)
    timings = {}
    with tempfile.TemporaryDirectory(prefix="openfootprints-") as tmp:
        prob_path = Path(tmp) / "probabilities.tif"
        start = time.monotonic()
        predict_probabilities(scene, bundle, prob_path, region, d.window_px, d.halo_m, d.batch_size, d.device, progress)
        timings["predict_s"] = time.monotonic() - start
        start = time.monotonic()
        found = vectorize(str(prob_path), d.threshold if d.threshold is not None else bundle.threshold,
                          grow_m=bundle.label_erosion_m, simplify_m=d.simplify_m, min_area_m2=d.min_area_m2,
                          margin_m=d.max_building_m)
        table = buildings_table(found.polygons, found.confidence, found.crs, model_version=bundle.version,
                                source=Path(scene_path).name, min_area_m2=d.min_area_m2)
        timings["vectorize_s"] = time.monotonic() - start
        write_table(table, out)
        if d.probabilities:
            with atomic_path(d.probabilities) as keep:
                Path(prob_path).replace(keep)
    area_km2 = region.width * region.height * scene.resolution_m**2 / 1e6
    total = sum(timings.values())
    summary = {"buildings": len(table), "area_km2": round(area_km2, 4), **{k: round(v, 2) for k, v in timings.items()},
               "km2_per_hour": round(area_km2 / total * 3600, 1) if total else None, "output": str(out),
               "config": str(write_config_beside(cfg, out))}
    log.info("detect: %d buildings over %.3f km² in %.1f s", len(table), area_km2, total)
    return summary


def evaluate_files(cfg: DictConfig, predicted_path: str, truth_path: str, out_json: str | None = None,
                   bbox=None) -> Evaluation:
    """Evaluate a buildings table against true footprints; optionally only within ``bbox`` (degrees)."""
    e = cfg.evaluate
    predicted = read_table(predicted_path)
    truth = read_polygons(truth_path, fix_invalid=cfg.data.fix_invalid, allow_empty=True)
    predicted, truth = select_in_bounds(predicted, bbox), select_in_bounds(truth, bbox)
    result = evaluate(predicted, truth, e.iou, region_column=e.region_column, grid_m=e.grid_m)
    if out_json:
        with atomic_path(out_json) as tmp:
            tmp.write_text(json.dumps({"predicted": str(predicted_path), "truth": str(truth_path),
                                       "bbox": list(bbox) if bbox else None, **result.to_dict()}, indent=2))
    return result


__all__ = ["detect", "evaluate_files", "format_table", "write_config_beside"]
