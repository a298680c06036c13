"""The building confidence below which detection drops a building, chosen on the validation chips.

A detector's weakest buildings are mostly false ones (cars, trees, sheds, shadows), and where the cut that
maximizes F1 lies depends on the model, so it is measured, not guessed: after training, every validation chip
is decoded into buildings as detection would decode it, each building is matched to the chip's true buildings
at IoU ≥ 0.5, and the cut that maximizes F1 over all chips is stored in the bundle (``Bundle.min_confidence``).
Matching is greedy by decreasing confidence, so a building's outcome does not depend on the weaker ones: one
matching gives the F1 of every cut exactly. A fine-tuned model whose few labels leave too few validation buildings
to choose a cut keeps its parent's (measured in docs/adapt.md: without one, fine-tuned models output many weak
false buildings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import rasterio.features
import shapely
from affine import Affine

from openfootprints.evaluation.matching import greedy_match, overlapping_pairs

IOU = 0.5
MIN_TRUE = 100  # fewer true validation buildings than this: no cut (a few buildings would decide it)
TOLERANCE = 0.005  # the lowest cut whose F1 is within this of the best: no cut bought for less


@dataclass(frozen=True)
class CutChoice:
    """The chosen cut and what it does on the validation chips (counts are buildings, F1 at IoU 0.5)."""

    min_confidence: float  # buildings with a lower (raw) confidence are dropped; 0: none is
    f1: float  # validation F1 with the cut
    f1_uncut: float  # validation F1 without it
    n_true: int
    n_predicted: int  # validation buildings before the cut
    n_kept: int  # ... and after it
    inherited: bool = False  # the parent's cut (too few validation buildings to choose one)

    def to_dict(self) -> dict:
        return asdict(self)


def true_polygons(ids: np.ndarray, transform: Affine) -> np.ndarray:
    """(n,) shapely polygons of the buildings of an (H, W) id raster (0: background), in ``transform``'s units."""
    parts: dict[int, list] = {}
    for geom, value in rasterio.features.shapes(ids.astype(np.int32), mask=ids > 0, transform=transform):
        parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    return np.array([shapely.union_all(p) for p in parts.values()], dtype=object)


def chip_outcomes(polygons: np.ndarray, confidence: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(n,) bool: which of a chip's found buildings (``polygons``, ``confidence``) match a true one at IoU ≥ 0.5."""
    matched, _ = greedy_match(confidence, len(truth), overlapping_pairs(polygons, truth), IOU)
    return matched >= 0


def f1_at_cut(confidence: np.ndarray, is_tp: np.ndarray, n_true: int, cut: float) -> float:
    """F1 of the (n,) buildings with ``confidence`` ≥ ``cut`` (``is_tp``: (n,) bool) against ``n_true`` true ones."""
    kept = np.asarray(confidence) >= cut
    return 2 * int(np.asarray(is_tp)[kept].sum()) / max(int(kept.sum()) + n_true, 1)


def choose_min_confidence(confidence: np.ndarray, is_tp: np.ndarray, n_true: int,
                          inherited: float = 0.0) -> CutChoice:
    """The cut on (n,) building ``confidence`` that maximizes F1, given which buildings are true positives
    (``is_tp``, (n,) bool) and how many true buildings there are; the lowest cut within :data:`TOLERANCE` of
    the best F1. With fewer than :data:`MIN_TRUE` true buildings: ``inherited`` (a parent model's cut), else
    none."""
    confidence, is_tp = np.asarray(confidence, np.float64), np.asarray(is_tp, bool)
    order = np.argsort(-confidence, kind="stable")
    tp = np.cumsum(is_tp[order])  # true positives among the k+1 most confident
    kept = np.arange(1, len(order) + 1)
    f1 = 2 * tp / np.maximum(kept + n_true, 1)
    f1_uncut = float(f1[-1]) if len(f1) else 0.0
    if n_true < MIN_TRUE and inherited > 0:
        return CutChoice(inherited, f1_at_cut(confidence, is_tp, n_true, inherited), f1_uncut, n_true, len(order),
                         int((confidence >= inherited).sum()), inherited=True)
    if n_true < MIN_TRUE or not len(f1):
        return CutChoice(0.0, f1_uncut, f1_uncut, n_true, len(order), len(order))
    last_of_value = np.r_[confidence[order][1:] != confidence[order][:-1], True]  # a cut keeps all of a value
    candidates = np.flatnonzero(last_of_value)
    good = candidates[f1[candidates] >= f1[candidates].max() - TOLERANCE]
    k = int(good.max())  # the most buildings kept: the lowest cut
    cut = 0.0 if k == len(order) - 1 else float(confidence[order][k])
    return CutChoice(cut, float(f1[k]), f1_uncut, n_true, len(order), k + 1)
