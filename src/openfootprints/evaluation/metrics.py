"""Instance-level scores: precision, recall, F1, AP, pixel IoU, outline quality, and their breakdowns.

Definitions (docs/metrics.md has the details and how they compare with SpaceNet and COCO):
- a prediction is a true positive when :func:`~openfootprints.evaluation.matching.greedy_match` pairs it
  with a true building at IoU ≥ the threshold; precision = TP / predictions, recall = TP / truths,
  F1 their harmonic mean (SpaceNet's building F1 at 0.5);
- AP is COCO's 101-point interpolated average precision over predictions ranked by confidence;
  AP50:95 its mean over IoU thresholds 0.50, 0.55, …, 0.95;
- pixel IoU is total overlap area / total covered area of the two sets (as if rasterized finely);
- matched-outline quality: mean IoU, mean absolute error of dominant orientation (degrees, modulo 90),
  median ratio of predicted to true area;
- what the errors are (:func:`error_breakdown`): false negatives merged with a neighbour, split into pieces,
  missed or misshaped; false positives spurious, merging several buildings, part of one, or misshaped.
All areas are m² in a local UTM projection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import geopandas as gpd
import numpy as np
import shapely

from openfootprints.evaluation.matching import Pairs, greedy_match, overlapping_pairs

SIZE_BINS_M2 = (0.0, 25.0, 50.0, 100.0, 200.0, 500.0, 1000.0, float("inf"))
MOSTLY = 0.5  # "covers" / "lies in": at least this share of the other polygon's area, or of its own
BARELY = 0.1  # "missed" / "spurious": less than this share of its area overlaps the other set
COCO_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


@dataclass
class Scores:
    """Headline numbers. Counts are buildings; areas m²; angles degrees."""

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
    ap_50_95: float
    pixel_iou: float
    mean_matched_iou: float
    orientation_error_deg: float
    area_ratio: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Evaluation:
    """Scores plus what reports and calibration need: per-building outcomes and breakdowns."""

    scores: Scores
    matched: np.ndarray  # (n_pred,) index of the matched truth or -1
    matched_iou: np.ndarray  # (n_pred,)
    truth_matched: np.ndarray  # (n_true,) bool
    confidence: np.ndarray  # (n_pred,)
    pred_region: np.ndarray  # (n_pred,) region name of each prediction ("all" without a breakdown)
    by_size: list[dict] = field(default_factory=list)
    by_region: list[dict] = field(default_factory=list)
    errors: dict = field(default_factory=dict)  # error_breakdown()
    extra: dict = field(default_factory=dict)  # e.g. calibration figures added by the caller

    def to_dict(self) -> dict:
        return {**self.scores.to_dict(), **self.extra, "by_size": self.by_size, "by_region": self.by_region,
                "errors": self.errors}


def average_precision(confidence: np.ndarray, is_tp: np.ndarray, n_truth: int) -> float:
    """COCO-style AP: precision made monotone, sampled at 101 recall levels. NaN without truths."""
    if n_truth == 0:
        return float("nan")
    if len(confidence) == 0:
        return 0.0
    order = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    tp = np.cumsum(is_tp[order])
    fp = np.cumsum(~is_tp[order])
    recall = tp / n_truth
    precision = np.maximum.accumulate((tp / (tp + fp))[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())


def dominant_orientation_deg(geoms: np.ndarray) -> np.ndarray:
    """Orientation of each polygon's minimum rotated rectangle, in degrees modulo 90 (shape (n,))."""
    if len(geoms) == 0:
        return np.zeros(0)
    coords, index = shapely.get_coordinates(shapely.oriented_envelope(geoms), return_index=True)
    _, start = np.unique(index, return_index=True)
    nxt = np.minimum(start + 1, len(coords) - 1)
    d = coords[nxt] - coords[start]
    return np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 90.0


def orientation_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest angle between orientations defined modulo 90°, in [0, 45]."""
    diff = np.abs(a - b) % 90.0
    return np.minimum(diff, 90.0 - diff)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def _rates(tp_pred: int, n_pred: int, tp_true: int, n_true: int) -> dict:
    precision = tp_pred / n_pred if n_pred else float("nan")
    recall = tp_true / n_true if n_true else float("nan")
    f1 = _f1(precision, recall) if n_pred and n_true else float("nan")
    return {"n_predicted": n_pred, "n_true": n_true, "matched_predicted": tp_pred, "matched_true": tp_true,
            "precision": precision, "recall": recall, "f1": f1}


def breakdown_by_size(pred_area: np.ndarray, true_area: np.ndarray, is_tp: np.ndarray, truth_matched: np.ndarray,
                      bins=SIZE_BINS_M2) -> list[dict]:
    """Precision per bin of predicted area, recall per bin of true area, F1 of the two (m² bins)."""
    out = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        p_in = (pred_area >= lo) & (pred_area < hi)
        t_in = (true_area >= lo) & (true_area < hi)
        out.append({"min_m2": lo, "max_m2": hi, **_rates(int(is_tp[p_in].sum()), int(p_in.sum()),
                                                         int(truth_matched[t_in].sum()), int(t_in.sum()))})
    return out


def region_labels(frame: gpd.GeoDataFrame, metric_geoms: np.ndarray, column: str | None,
                  grid_m: float | None) -> np.ndarray:
    """Region of each building: a column's value, or the ``grid_m`` square of its centroid.

    ``metric_geoms`` are the frame's geometries in the metric CRS; squares are named ``"<col>_<row>"``
    in units of ``grid_m`` from that CRS's origin.
    """
    if column:
        return frame[column].astype(str).to_numpy()
    if grid_m and len(metric_geoms):
        cells = np.floor(shapely.get_coordinates(shapely.centroid(metric_geoms)) / grid_m).astype(np.int64)
        unique, inverse = np.unique(cells, axis=0, return_inverse=True)
        names = np.array([f"{x}_{y}" for x, y in unique])
        return names[inverse.ravel()]
    return np.full(len(frame), "all")


def breakdown_by_region(pred_region: np.ndarray, true_region: np.ndarray, is_tp: np.ndarray,
                        truth_matched: np.ndarray) -> list[dict]:
    """Precision, recall and F1 per region (predictions and truths each counted in their own region)."""
    out = []
    for name in sorted(set(pred_region.tolist()) | set(true_region.tolist())):
        p_in, t_in = pred_region == name, true_region == name
        out.append({"region": name, **_rates(int(is_tp[p_in].sum()), int(p_in.sum()),
                                            int(truth_matched[t_in].sum()), int(t_in.sum()))})
    return out


def local_metric_crs(*frames: gpd.GeoDataFrame):
    """A UTM CRS around the frames' data, for areas and IoU in metres."""
    for f in frames:
        if len(f):
            return f.estimate_utm_crs()
    return "EPSG:3857"


def evaluate(predicted: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, iou_threshold: float = 0.5,
             confidence_column: str = "confidence", region_column: str | None = None,
             grid_m: float | None = None) -> Evaluation:
    """Score predicted buildings against true ones (see the module docstring for every definition)."""
    crs = local_metric_crs(truth, predicted)
    pred = predicted.to_crs(crs).geometry.to_numpy() if len(predicted) else np.array([], dtype=object)
    true = truth.to_crs(crs).geometry.to_numpy() if len(truth) else np.array([], dtype=object)
    conf = (predicted[confidence_column].to_numpy(np.float64) if confidence_column in predicted
            else np.ones(len(pred)))
    pairs = overlapping_pairs(pred, true)
    matched, matched_iou = greedy_match(conf, len(true), pairs, iou_threshold)
    is_tp = matched >= 0
    truth_matched = np.zeros(len(true), bool)
    truth_matched[matched[is_tp]] = True
    pred_area, true_area = shapely.area(pred), shapely.area(true)
    scores = _scores(iou_threshold, conf, pairs, matched, matched_iou, pred, true, pred_area, true_area)
    by_size = breakdown_by_size(pred_area, true_area, is_tp, truth_matched)
    pred_region = region_labels(predicted, pred, region_column, grid_m)
    by_region = []
    if region_column or grid_m:
        by_region = breakdown_by_region(pred_region, region_labels(truth, true, region_column, grid_m), is_tp,
                                        truth_matched)
    errors = error_breakdown(pairs, pred_area, true_area, is_tp, truth_matched)
    return Evaluation(scores, matched, matched_iou, truth_matched, conf, pred_region, by_size, by_region, errors)


def error_breakdown(pairs: Pairs, pred_area: np.ndarray, true_area: np.ndarray, is_tp: np.ndarray,
                    truth_matched: np.ndarray) -> dict[str, dict[str, int]]:
    """What each unmatched building is, by how it overlaps the other set (shares of areas, in this order):

    false negatives (true buildings not found at the IoU threshold):
      ``merged``: one prediction covers most of it and most of another true building (several came out as one);
      ``split``: two or more predictions lie mostly inside it and together cover most of it (it came out in
      pieces); ``missed``: predictions cover less than 10 % of it; ``misshaped``: the rest (found, but shifted,
      too large or too small);
    false positives (predictions matching no true building):
      ``merge``: it covers most of two or more true buildings; ``spurious``: less than 10 % of it lies on true
      buildings (not a building, or one the labels lack); ``part``: it lies mostly inside one true building and
      covers less than half of it (a piece of it, or an outline too small); ``misshaped``: the rest (shifted, or
      too large).
    "Most" is at least half (``MOSTLY``). Shares are summed over pairs, so they assume that neither set overlaps
    itself (as ``detect``'s buildings do not). Arrays: (n_pred,) and (n_true,) areas in m² and match flags.
    """
    n_pred, n_true = len(pred_area), len(true_area)
    share_of_true = pairs.intersection / np.maximum(true_area[pairs.truth], 1e-12)
    share_of_pred = pairs.intersection / np.maximum(pred_area[pairs.pred], 1e-12)
    covers = share_of_true >= MOSTLY  # the pair's prediction covers most of its true building
    inside = share_of_pred >= MOSTLY  # the pair's prediction lies mostly inside its true building
    merging = np.bincount(pairs.pred[covers], minlength=n_pred) >= 2  # per prediction
    merged = np.zeros(n_true, bool)
    merged[pairs.truth[covers & merging[pairs.pred]]] = True
    pieces = np.bincount(pairs.truth[inside], minlength=n_true)
    pieces_cover = np.bincount(pairs.truth[inside], weights=share_of_true[inside], minlength=n_true)
    split = (pieces >= 2) & (pieces_cover >= MOSTLY) & ~merged
    missed = (np.bincount(pairs.truth, weights=share_of_true, minlength=n_true) < BARELY) & ~merged & ~split
    fn = ~truth_matched
    on_buildings = np.bincount(pairs.pred, weights=share_of_pred, minlength=n_pred)
    spurious = (on_buildings < BARELY) & ~merging
    part = np.zeros(n_pred, bool)
    part[pairs.pred[inside & ~covers]] = True
    part &= ~merging & ~spurious
    fp = ~is_tp
    return {"false_negatives": {"merged": int((fn & merged).sum()), "split": int((fn & split).sum()),
                                "missed": int((fn & missed).sum()),
                                "misshaped": int((fn & ~merged & ~split & ~missed).sum())},
            "false_positives": {"merge": int((fp & merging).sum()), "spurious": int((fp & spurious).sum()),
                                "part": int((fp & part).sum()),
                                "misshaped": int((fp & ~spurious & ~merging & ~part).sum())}}


def _scores(threshold, conf, pairs: Pairs, matched, matched_iou, pred, true, pred_area, true_area) -> Scores:
    is_tp = matched >= 0
    tp, n_pred, n_true = int(is_tp.sum()), len(pred), len(true)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else float("nan")
    aps = [average_precision(conf, greedy_match(conf, n_true, pairs, t)[0] >= 0, n_true) for t in COCO_THRESHOLDS]
    inter = pairs.intersection.sum()
    covered = pred_area.sum() + true_area.sum() - inter
    if tp:
        orient = orientation_error_deg(dominant_orientation_deg(pred[is_tp]), dominant_orientation_deg(true[matched[is_tp]]))
        area_ratio = float(np.median(pred_area[is_tp] / np.maximum(true_area[matched[is_tp]], 1e-9)))
    else:
        orient, area_ratio = np.array([np.nan]), float("nan")
    f1 = _f1(precision, recall) if n_true else 0.0
    return Scores(threshold, n_pred, n_true, tp, n_pred - tp, n_true - tp, precision, recall, f1,
                  average_precision(conf, is_tp, n_true), float(np.mean(aps)),
                  float(inter / covered) if covered > 0 else float("nan"),
                  float(matched_iou[is_tp].mean()) if tp else 0.0, float(np.mean(orient)), area_ratio)


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
            ("AP50:95", f"{scores.ap_50_95:.4f}"), ("pixel IoU", f"{scores.pixel_iou:.4f}"),
            ("mean IoU of matches", f"{scores.mean_matched_iou:.4f}"),
            ("orientation error (°)", f"{scores.orientation_error_deg:.2f}"),
            ("area ratio (median)", f"{scores.area_ratio:.3f}")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def format_errors(errors: dict[str, dict[str, int]]) -> str:
    """The error breakdown as two lines: ``false negatives: 8 merged, 6 split, …`` and the false positives'."""
    return "\n".join(f"{kind.replace('_', ' ')}: " + ", ".join(f"{n} {what}" for what, n in counts.items())
                     for kind, counts in errors.items())
