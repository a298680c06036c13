"""Whether one set of buildings scores better than another on the same place beyond chance: a paired bootstrap
over squares of the place.

On a place with 150–200 true buildings, one building found or lost moves F1 by about half a point, so two models
(or a model and its INT8 file, or a base model and its fine-tune) differ by a few points for reasons that would not
hold on the next street. Both are evaluated with the same grid of squares (``evaluate.grid_m``, in metres of the
place's UTM zone): each square holds its buildings' counts (predictions, those matched, truths, those found) under
both. Resampling the squares with replacement, the same squares for both, and recomputing each F1 from the summed
counts gives the spread of the difference that the choice of place alone causes (Efron & Tibshirani 1993; squares
rather than buildings, because neighbours share imagery, roofs and errors). The interval says how far apart the
two would be on a place like this one; it is no test of a place unlike it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CELL_M = 50.0  # the squares resampled: a few buildings each in the held-out places (their blocks are ~100 m)
RESAMPLES = 4000
COUNTS = ("matched_predicted", "n_predicted", "matched_true", "n_true")


def square_counts(by_region: Sequence[dict], names: Sequence[str]) -> np.ndarray:
    """(len(names), 4) int64 counts per square in ``names`` order, columns :data:`COUNTS`, from an evaluation's
    ``by_region`` rows (a square absent from them holds no building of that set: zeros)."""
    rows = {row["region"]: row for row in by_region}
    return np.array([[int(rows[name][k]) if name in rows else 0 for k in COUNTS] for name in names], np.int64)


def square_names(first: Sequence[dict], second: Sequence[dict]) -> list[str]:
    """The squares either evaluation's ``by_region`` rows name, sorted: those the resampling draws from."""
    return sorted({row["region"] for row in first} | {row["region"] for row in second})


def f1_of_counts(counts: np.ndarray) -> np.ndarray:
    """F1 from summed counts (..., 4) (columns :data:`COUNTS`): the harmonic mean of precision (matched /
    predicted) and recall (found / true); 0 where either is undefined or both are 0."""
    counts = counts.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(counts[..., 1] > 0, counts[..., 0] / counts[..., 1], 0.0)
        recall = np.where(counts[..., 3] > 0, counts[..., 2] / counts[..., 3], 0.0)
        return np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)


def resampled_differences(first: Sequence[dict], second: Sequence[dict], resamples: int = RESAMPLES, seed: int = 0
                          ) -> tuple[float, np.ndarray]:
    """F1 of ``second`` minus F1 of ``first`` (each an evaluation's ``by_region`` rows on the same grid of the same
    place) over the whole place, and the same difference on ``resamples`` resamplings of its squares, (resamples,)
    float64 (the same squares for both)."""
    if resamples < 1:
        raise ValueError(f"resamples must be ≥ 1, got {resamples}")
    names = square_names(first, second)
    a, b = square_counts(first, names), square_counts(second, names)
    difference = float(f1_of_counts(b.sum(axis=0)) - f1_of_counts(a.sum(axis=0)))
    if not names:
        return difference, np.zeros(resamples)
    picks = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    return difference, f1_of_counts(b[picks].sum(axis=1)) - f1_of_counts(a[picks].sum(axis=1))


def interval(difference: float, spread: np.ndarray, level: float = 0.95) -> dict:
    """``{"difference", "low", "high", "level"}``: ``low``/``high`` are the central ``level`` of ``spread``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(spread, [tail, 100 - tail])
    return {"difference": difference, "low": float(low), "high": float(high), "level": level}


def paired_f1_difference(first: Sequence[dict], second: Sequence[dict], resamples: int = RESAMPLES,
                         level: float = 0.95, seed: int = 0) -> dict:
    """:func:`resampled_differences` as an :func:`interval`, with the number of squares (``"squares"``)."""
    return {**interval(*resampled_differences(first, second, resamples, seed), level),
            "squares": len(square_names(first, second))}


def mean_difference(places: Sequence[tuple[float, np.ndarray]], level: float = 0.95) -> dict:
    """The :func:`interval` of the mean F1 difference over places, each given as :func:`resampled_differences`
    (of its own seed: the places share no square, and their resamplings are independent)."""
    if not places:
        raise ValueError("no place to average")
    return interval(float(np.mean([d for d, _ in places])), np.mean([s for _, s in places], axis=0), level)
