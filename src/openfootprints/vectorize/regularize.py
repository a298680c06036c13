"""Regularized outlines: near-rectangular buildings become rectangles with straight edges and right angles.

A traced outline follows pixel staircases; most buildings are rectangles. An outline is replaced by a rectangle
with the orientation of its minimum rotated rectangle, each side pulled in by the same distance so the
area is the outline's (the enclosing rectangle sits on the staircase's outer corners and would be too
big), when the outline fills at least ``min_fill`` of its minimum rotated rectangle and no point of either
lies farther than ``tolerance`` from the other (Hausdorff distance): no building moves by more than the
tolerance. Other shapes (L, U, courtyards) are left as traced.
"""

from __future__ import annotations

import numpy as np
import shapely


def regularize(polygons: np.ndarray, tolerance: float, min_fill: float = 0.85) -> np.ndarray:
    """(n,) polygons → (n,) polygons, the near-rectangular ones replaced by rectangles of the same area.

    ``tolerance`` is in the polygons' units (convert metres on the ground first); ``min_fill`` is the
    least area ratio polygon / rectangle in (0, 1].
    """
    polygons = np.asarray(polygons, dtype=object)
    if len(polygons) == 0 or tolerance <= 0:
        return polygons
    envelopes = shapely.oriented_envelope(polygons)
    area, envelope_area = shapely.area(polygons), shapely.area(envelopes)
    fill = area / np.maximum(envelope_area, 1e-12)
    rectangles = shapely.buffer(envelopes, -_inset(shapely.length(envelopes), envelope_area, area), join_style="mitre")
    close = shapely.hausdorff_distance(polygons, rectangles) <= tolerance
    replace = (fill >= min_fill) & close & (shapely.get_type_id(rectangles) == 3) & ~shapely.is_empty(rectangles)
    return np.where(replace, rectangles, polygons)


def _inset(perimeter: np.ndarray, envelope_area: np.ndarray, area: np.ndarray) -> np.ndarray:
    """The distance d that every side of an L × W rectangle moves in for its area to become ``area``:
    (L − 2d)(W − 2d) = area, with 2(L + W) the perimeter."""
    disc = np.maximum(perimeter**2 - 16 * (envelope_area - area), 0.0)
    inset: np.ndarray = (perimeter - np.sqrt(disc)) / 8
    return inset
