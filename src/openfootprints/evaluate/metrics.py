"""Instance-level evaluation: one-to-one matching at IoU ≥ threshold, precision, recall, F1, AP, pixel IoU.

Matching is greedy in order of decreasing confidence (COCO style): each prediction takes the still
unmatched true building it overlaps most, if that IoU reaches the threshold. Counts at that matching give
precision, recall and F1 (SpaceNet's building F1 at IoU 0.5); the same ranking gives the precision–recall
curve and AP (COCO's 101-point interpolation). Pixel IoU is the area IoU of the union of all predicted
footprints against the union of all true footprints. Polygons are compared in a local UTM projection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import geopandas as gpd
import numpy as np
import shapely


@dataclass
class Scores:
    """Evaluation results. Counts are buildings; ``pixel_iou`` is an area ratio."""

    iou_threshold: float
    n_predicted: int
    n_true: int
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    ap: float
    pixel_iou: float
    mean_matched_iou: float

    def to_dict(self) -> dict:
        return asdict(self)


def pairwise_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every overlapping (prediction, truth) pair: arrays (pred index, truth index, IoU)."""
    if len(pred) == 0 or len(truth) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    tree = shapely.STRtree(truth)
    p_idx, t_idx = tree.query(pred, predicate="intersects")
    inter = shapely.area(shapely.intersection(pred[p_idx], truth[t_idx]))
    union = shapely.area(pred[p_idx]) + shapely.area(truth[t_idx]) - inter
    return p_idx, t_idx, np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def greedy_match(confidence: np.ndarray, n_truth: int, p_idx: np.ndarray, t_idx: np.ndarray, iou: np.ndarray,
                 threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Match predictions (by decreasing confidence) to their best unmatched truth with IoU ≥ threshold.

    Returns ``matched_truth`` (per prediction, truth index or -1) and ``matched_iou`` (per prediction).
    """
    matched_truth = np.full(len(confidence), -1)
    matched_iou = np.zeros(len(confidence))
    taken = np.zeros(n_truth, bool)
    ok = iou >= threshold
    p_idx, t_idx, iou = p_idx[ok], t_idx[ok], iou[ok]
    by_pred: dict[int, list[tuple[float, int]]] = {}
    for p, t, v in zip(p_idx.tolist(), t_idx.tolist(), iou.tolist()):
        by_pred.setdefault(p, []).append((v, t))
    for p in np.argsort(-confidence, kind="stable"):
        for v, t in sorted(by_pred.get(int(p), ()), reverse=True):
            if not taken[t]:
                taken[t] = True
                matched_truth[p], matched_iou[p] = t, v
                break
    return matched_truth, matched_iou


def average_precision(confidence: np.ndarray, is_tp: np.ndarray, n_truth: int) -> float:
    """COCO-style AP: precision made monotone, sampled at 101 recall levels."""
    if n_truth == 0:
        return float("nan")
    if len(confidence) == 0:
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    tp = np.cumsum(is_tp[order])
    fp = np.cumsum(~is_tp[order])
    recall = tp / n_truth
    precision = tp / (tp + fp)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    levels = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, levels, side="left")
    sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def local_metric_crs(*frames: gpd.GeoDataFrame):
    """A UTM CRS around the frames' data, for areas and IoU in metres."""
    for f in frames:
        if len(f):
            return f.estimate_utm_crs()
    return "EPSG:3857"


def evaluate(predicted: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, iou_threshold: float = 0.5,
             confidence_column: str = "confidence") -> tuple[Scores, np.ndarray]:
    """Score predicted buildings against true ones. Returns the scores and, per prediction, its matched truth (-1)."""
    crs = local_metric_crs(truth, predicted)
    pred = predicted.to_crs(crs).geometry.to_numpy() if len(predicted) else np.array([], dtype=object)
    true = truth.to_crs(crs).geometry.to_numpy() if len(truth) else np.array([], dtype=object)
    conf = (predicted[confidence_column].to_numpy(np.float64) if confidence_column in predicted
            else np.ones(len(pred)))
    p_idx, t_idx, iou = pairwise_iou(pred, true)
    matched, matched_iou = greedy_match(conf, len(true), p_idx, t_idx, iou, iou_threshold)
    is_tp = matched >= 0
    tp = int(is_tp.sum())
    fp, fn = len(pred) - tp, len(true) - tp
    precision = tp / len(pred) if len(pred) else 0.0
    recall = tp / len(true) if len(true) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    scores = Scores(iou_threshold, len(pred), len(true), tp, fp, fn, precision, recall, f1,
                    average_precision(conf, is_tp, len(true)), area_iou(pred, true),
                    float(matched_iou[is_tp].mean()) if tp else 0.0)
    return scores, matched


def area_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """IoU of the union of predicted footprints with the union of true footprints (pixel IoU, in area)."""
    a = shapely.union_all(pred) if len(pred) else shapely.Polygon()
    b = shapely.union_all(true) if len(true) else shapely.Polygon()
    union = shapely.union(a, b).area
    return float(shapely.intersection(a, b).area / union) if union > 0 else 1.0


def select_in_bounds(frame: gpd.GeoDataFrame, bounds_lonlat) -> gpd.GeoDataFrame:
    """Buildings whose centroid lies inside [west, south, east, north] (degrees)."""
    if bounds_lonlat is None or frame.empty:
        return frame
    lonlat = frame.to_crs("EPSG:4326")
    centroids = lonlat.to_crs(local_metric_crs(lonlat)).centroid.to_crs("EPSG:4326")
    return frame[centroids.within(shapely.box(*bounds_lonlat)).to_numpy()]


def format_table(scores: Scores) -> str:
    """The scores as an aligned two-column text table."""
    rows = [("IoU threshold", f"{scores.iou_threshold:.2f}"), ("predicted", scores.n_predicted),
            ("true", scores.n_true), ("true positives", scores.true_positives),
            ("false positives", scores.false_positives), ("false negatives", scores.false_negatives),
            ("precision", f"{scores.precision:.4f}"), ("recall", f"{scores.recall:.4f}"),
            ("F1", f"{scores.f1:.4f}"), (f"AP{round(scores.iou_threshold * 100)}", f"{scores.ap:.4f}"),
            ("pixel IoU", f"{scores.pixel_iou:.4f}"), ("mean IoU of matches", f"{scores.mean_matched_iou:.4f}")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
