"""One-to-one matching of predicted and true polygons by IoU, vectorized with shapely 2.

Candidate pairs come from an STRtree query; their intersection areas are computed in chunks on a
thread pool (GEOS releases the GIL). Matching is greedy in order of decreasing confidence, as in COCO:
each prediction takes the still unmatched true polygon it overlaps most, if that IoU reaches the
threshold. At thresholds above 0.5 this is the unique maximum matching, since a polygon can then overlap
at most one polygon of a set whose polygons do not overlap each other by more than half; then no
prediction or truth has two candidates, and the matching is computed without a loop.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import shapely

CHUNK = 65536


@dataclass
class Pairs:
    """Every overlapping (prediction, truth) pair: indexes, intersection area and IoU (arrays of one length)."""

    pred: np.ndarray
    truth: np.ndarray
    intersection: np.ndarray
    iou: np.ndarray


def _intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) <= CHUNK:
        return shapely.area(shapely.intersection(a, b))
    chunks = [slice(i, i + CHUNK) for i in range(0, len(a), CHUNK)]
    with ThreadPoolExecutor(min(len(chunks), os.cpu_count() or 1)) as pool:
        return np.concatenate(list(pool.map(lambda s: shapely.area(shapely.intersection(a[s], b[s])), chunks)))


def overlapping_pairs(pred: np.ndarray, truth: np.ndarray) -> Pairs:
    """All pairs of a predicted and a true polygon whose interiors overlap, with their IoU.

    ``pred`` and ``truth`` are arrays of shapely polygons in one metric CRS.
    """
    if len(pred) == 0 or len(truth) == 0:
        empty = np.zeros(0, np.int64)
        return Pairs(empty, empty, np.zeros(0), np.zeros(0))
    p_idx, t_idx = shapely.STRtree(truth).query(pred, predicate="intersects")
    inter = _intersection_areas(pred[p_idx], truth[t_idx])
    union = shapely.area(pred)[p_idx] + shapely.area(truth)[t_idx] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    keep = inter > 0
    return Pairs(p_idx[keep], t_idx[keep], inter[keep], iou[keep])


def greedy_match(confidence: np.ndarray, n_truth: int, pairs: Pairs, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Match predictions, by decreasing confidence, to their best unmatched truth with IoU ≥ ``threshold``.

    Returns ``matched`` (per prediction: truth index or -1) and ``matched_iou`` (per prediction, 0 if none).
    Ties in confidence keep the input order; ties in IoU go to the truth that comes first.
    """
    n_pred = len(confidence)
    matched = np.full(n_pred, -1, np.int64)
    matched_iou = np.zeros(n_pred)
    ok = pairs.iou >= threshold
    p, t, iou = pairs.pred[ok], pairs.truth[ok], pairs.iou[ok]
    if np.bincount(p, minlength=n_pred).max(initial=0) <= 1 and np.bincount(t, minlength=n_truth).max(initial=0) <= 1:
        matched[p], matched_iou[p] = t, iou  # no conflicts: every candidate pair is a match
        return matched, matched_iou
    rank = np.empty(n_pred, np.int64)
    rank[np.argsort(-np.asarray(confidence, np.float64), kind="stable")] = np.arange(n_pred)
    order = np.lexsort((t, -iou, rank[p]))  # by prediction rank, then best IoU, then lowest truth index
    taken = np.zeros(n_truth, bool)
    done = np.zeros(n_pred, bool)
    for pi, ti, v in zip(p[order].tolist(), t[order].tolist(), iou[order].tolist()):
        if done[pi] or taken[ti]:
            continue
        done[pi] = taken[ti] = True
        matched[pi], matched_iou[pi] = ti, v
    return matched, matched_iou
