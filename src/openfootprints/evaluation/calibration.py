"""Confidence that means something: isotonic calibration, its error, and precision thresholds per region.

A detection's raw confidence (mean probability inside it) is mapped by an isotonic regression
(scikit-learn) to the probability that it is a true building, i.e. matched at IoU ≥ 0.5. The mapping is
fitted on a validation area, stored in the model bundle as its breakpoints, and applied at detection by
linear interpolation (:meth:`openfootprints.model.bundle.Bundle.calibrate`). Precision thresholds follow the Open Buildings per-cell table: for each region,
the lowest confidence at which the detections above it reach 80 %, 85 % and 90 % precision, and how
many detections that keeps.
"""

from __future__ import annotations

import numpy as np

PRECISION_TARGETS = (0.8, 0.85, 0.9)


def fit_isotonic(confidence: np.ndarray, is_tp: np.ndarray) -> dict:
    """Fit raw confidence → P(true positive). Returns ``{"method", "x", "y", "n"}`` (breakpoints)."""
    if len(confidence) < 2 or len(np.unique(is_tp)) < 2:
        raise ValueError("calibration needs detections that include both true and false positives")
    from sklearn.isotonic import IsotonicRegression  # here: detection does not need scikit-learn

    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(np.asarray(confidence, np.float64), np.asarray(is_tp, np.float64))
    return {"method": "isotonic", "x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist(),
            "n": int(len(confidence))}


def reliability(confidence: np.ndarray, is_tp: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Per equal-width confidence bin: mean confidence, fraction of true positives, count."""
    confidence = np.asarray(confidence, np.float64)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = bins == b
        n = int(sel.sum())
        rows.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": n,
                     "confidence": float(confidence[sel].mean()) if n else float("nan"),
                     "accuracy": float(is_tp[sel].mean()) if n else float("nan")})
    return rows


def expected_calibration_error(confidence: np.ndarray, is_tp: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean |fraction of true positives − mean confidence| over equal-width bins."""
    rows = [r for r in reliability(confidence, is_tp, n_bins) if r["count"]]
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / total) if total else float("nan")


def precision_thresholds(confidence: np.ndarray, is_tp: np.ndarray, targets=PRECISION_TARGETS) -> dict:
    """For each target precision: the lowest confidence threshold whose detections above reach it, and their count.

    ``{target: {"threshold": t or None, "count": n}}``; None when no threshold reaches the target.
    """
    confidence = np.asarray(confidence, np.float64)
    order = np.argsort(-confidence, kind="stable")
    conf_sorted, tp_sorted = confidence[order], np.asarray(is_tp)[order]
    precision = np.cumsum(tp_sorted) / np.arange(1, len(order) + 1)
    # a threshold keeps every detection at or above it, so only the last of equal confidences counts
    last_of_tie = np.r_[conf_sorted[1:] != conf_sorted[:-1], True] if len(order) else np.zeros(0, bool)
    out = {}
    for target in targets:
        ok = np.flatnonzero(last_of_tie & (precision >= target))
        k = ok.max() if len(ok) else None
        out[target] = {"threshold": float(conf_sorted[k]) if k is not None else None,
                       "count": int(k + 1) if k is not None else 0}
    return out


def thresholds_by_region(confidence: np.ndarray, is_tp: np.ndarray, regions: np.ndarray,
                         targets=PRECISION_TARGETS) -> list[dict]:
    """:func:`precision_thresholds` for each region (rows with ``region``, ``n_detections`` and per-target columns)."""
    rows = []
    for name in sorted(set(regions.tolist())):
        sel = regions == name
        row = {"region": name, "n_detections": int(sel.sum())}
        for target, v in precision_thresholds(confidence[sel], is_tp[sel], targets).items():
            pct = round(target * 100)
            row[f"threshold_p{pct}"], row[f"count_p{pct}"] = v["threshold"], v["count"]
        rows.append(row)
    return rows
