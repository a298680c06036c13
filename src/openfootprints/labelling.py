"""``openfootprints suggest``: where a mapper should label next, so that the next labels do the most good.

The scene is cut into square chips of ``suggest.chip_m`` metres on the ground. For each chip with enough valid
imagery the model's building probabilities give its **uncertainty**: the mean over valid pixels of
``1 − |2p − 1|`` (0 where the model is sure, 1 where p = 0.5). An energy model's output is not a probability:
its target is 0 on background and from the threshold (0.5, a building's outline) up inside, never between, so
its p is the energy over the threshold, capped at 1 (:func:`building_probability`): outlines read as sure, the
gap no label has as unsure. Its imagery gives its **novelty**: how far the
chip's per-band mean and standard deviation lie from the model's training data (the bundle's normalization),
in training standard deviations, as ``d / (1 + d)`` in [0, 1). The score is
``uncertainty + suggest.novelty_weight · novelty``; the ``n`` best chips come out as boxes (EPSG:4326) that
JOSM, QGIS or the viewer open, ranked, with their scores and the area the model calls building.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from omegaconf import DictConfig
from rasterio.windows import Window

from openfootprints.errors import InputError
from openfootprints.io.atomic import check_writable
from openfootprints.io.raster import Scene
from openfootprints.io.formats import FORMATS
from openfootprints.io.geo import degrees_to_crs
from openfootprints.io.vector import write_table
from openfootprints.model.bundle import Bundle
from openfootprints.pipeline import adapt_to_scene, load_predictor, open_for_model
from openfootprints.predict.probabilities import predict_probabilities
from openfootprints.predict.windows import Region


@dataclass
class ChipScore:
    """One chip of the scene's working grid (pixels) and its scores (each in [0, 1])."""

    window: Window
    uncertainty: float
    novelty: float
    building_share: float  # share of the chip's valid pixels on a building (output ≥ the bundle's threshold)

    def score(self, novelty_weight: float) -> float:
        return self.uncertainty + novelty_weight * self.novelty


def chip_windows(scene: Scene, chip_px: int) -> list[Window]:
    """Non-overlapping ``chip_px`` squares tiling the scene's working grid (a partial last row/column is dropped
    unless the scene is smaller than one chip)."""
    rows = range(0, max(scene.height - chip_px, 0) + 1, chip_px)
    cols = range(0, max(scene.width - chip_px, 0) + 1, chip_px)
    return [Window(c, r, min(chip_px, scene.width), min(chip_px, scene.height)) for r in rows for c in cols]


def building_probability(output: np.ndarray, bundle: Bundle) -> np.ndarray:
    """The network's (h, w) output in [0, 1] as a probability of building: itself for a mask model; for an energy
    model, ``min(1, energy / threshold)``."""
    if bundle.target != "energy":
        return output
    return np.minimum(output / bundle.threshold, 1.0)


def uncertainty(probabilities: np.ndarray, valid: np.ndarray) -> float:
    """Mean of ``1 − |2p − 1|`` over the valid pixels of a (h, w) probability array in [0, 1]."""
    return float((1 - np.abs(2 * probabilities[valid] - 1)).mean())


def novelty(image: np.ndarray, valid: np.ndarray, mean: list[float], std: list[float]) -> float:
    """How unlike the training data a (C, h, w) chip is: d / (1 + d), where d is the root mean square over bands of
    the chip's band mean and band standard deviation, each minus the training one, in training standard deviations."""
    pixels = image[:, valid].astype(np.float64)
    m, s = np.asarray(mean)[:, None], np.asarray(std)[:, None]
    d_mean = (pixels.mean(axis=1, keepdims=True) - m) / s
    d_std = (pixels.std(axis=1, keepdims=True) - s) / s
    d = float(np.sqrt(np.mean(np.concatenate([d_mean, d_std]) ** 2)))
    return d / (1 + d)


def score_chips(scene: Scene, bundle: Bundle, probabilities: Path, chip_px: int, min_valid: float) -> list[ChipScore]:
    """The scores of every chip with at least ``min_valid`` valid pixels; ``probabilities`` is the scene's uint8
    probability raster (value / 255) on the scene's working grid."""
    scores = []
    with rasterio.open(probabilities) as prob:
        for window in chip_windows(scene, chip_px):
            image, valid = scene.read(window)
            if valid.mean() < min_valid:
                continue
            output = prob.read(1, window=window).astype(np.float32) / 255.0
            scores.append(ChipScore(window, uncertainty(building_probability(output, bundle), valid),
                                    novelty(image, valid, bundle.mean, bundle.std),
                                    float((output[valid] >= bundle.threshold).mean())))
    return scores


def best_chips(scores: list[ChipScore], n: int, novelty_weight: float) -> list[ChipScore]:
    """The ``n`` highest-scoring chips, best first (ties broken by position, so the order is deterministic)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i].score(novelty_weight), i))
    return [scores[i] for i in order[:n]]


def chips_table(scene: Scene, chips: list[ChipScore], novelty_weight: float) -> gpd.GeoDataFrame:
    """The chips as ranked boxes in EPSG:4326 with their scores."""
    boxes = [scene.window_box(c.window) for c in chips]
    return gpd.GeoDataFrame({"rank": np.arange(1, len(chips) + 1),
                             "score": [round(c.score(novelty_weight), 4) for c in chips],
                             "uncertainty": [round(c.uncertainty, 4) for c in chips],
                             "novelty": [round(c.novelty, 4) for c in chips],
                             "building_share": [round(c.building_share, 4) for c in chips]},
                            geometry=boxes, crs=scene.crs).to_crs("EPSG:4326")


def suggest(cfg: DictConfig, scene_path: str, model_path: str, out: str | Path, n: int | None = None,
            progress: bool = False) -> gpd.GeoDataFrame:
    """Rank the chips of a scene by how much labelling them would teach the model; write the ``n`` best (default
    ``suggest.n``) to ``out`` (any vector format of :func:`~openfootprints.io.vector.write_table`) and return them."""
    check_writable(out, FORMATS)
    s = cfg.suggest
    n = s.n if n is None else n
    if n < 1:
        raise InputError(f"suggest: --n {n}: must be 1 or more")
    with tempfile.TemporaryDirectory(prefix="openfootprints-suggest-") as tmp:
        predictor = load_predictor(cfg, model_path, tmp)
        bundle = predictor.bundle
        scene = open_for_model(cfg, scene_path, bundle)
        if cfg.detect.adapt_bn:  # unsure as detection would be, on this scene's own statistics
            adapt_to_scene(cfg, scene, Region(0, scene.height, 0, scene.width), predictor)
        chip_px = max(32, round(s.chip_m / scene.resolution_m))
        probabilities = predict_probabilities(scene, bundle, Path(tmp) / "probabilities.tif", predictor=predictor,
                                              batch_size=cfg.detect.batch_size, progress=progress, tta=cfg.detect.tta)
        scores = score_chips(scene, bundle, probabilities, chip_px, s.min_valid)
    if s.bbox:  # the mapper's task area: chips wholly inside it
        box = shapely.box(*degrees_to_crs(s.bbox, scene.crs))
        scores = [c for c in scores if box.covers(scene.window_box(c.window))]
    if not scores:
        where = f" inside suggest.bbox={list(s.bbox)}" if s.bbox else ""
        raise InputError(f"{scene_path}: no {s.chip_m:g} m chip{where} with at least {s.min_valid:.0%} valid pixels; "
                         "lower suggest.chip_m or suggest.min_valid")
    table = chips_table(scene, best_chips(scores, n, s.novelty_weight), s.novelty_weight)
    write_table(table, out)
    return table
