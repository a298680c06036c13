"""Probability raster in, building polygons out: instances, confidence, simplification, in tiles.

Instances are the 4-connected components of ``probability ≥ threshold``, each grown back by the
label erosion used in training (without merging into neighbours). A model trained on the energy target
(:func:`~openfootprints.data.chips.energy_target`) gives a ``seed_threshold``: instances are then seeded by the
components of ``probability ≥ seed_threshold`` and grown by up to ``grow_m`` over the footprint
(``probability ≥ threshold``), each footprint pixel going to the nearest seed, so buildings that share a wall
come out apart (a marker-based watershed by distance). The raster is vectorized in tiles of
``strip_px`` rows × ``tile_px`` columns, row of tiles by row of tiles, each read with a margin on all four
sides. An instance belongs to the tile that holds its first pixel in raster order (the leftmost of its top
row: one of its own pixels, unlike its bounding box's corner, which an L-shaped instance leaves empty
and no tile would see), and is only accepted when the view shows it whole, with the neighbours it grows
against. If it reaches the view's bottom, left or right edge the margin is doubled and the tile redone
(the top edge cannot cut it: its rows start in the tile and the margin exceeds the growing's reach). The
margin grows to ``MAX_MARGIN_FACTOR`` times its start at most, so a stream is looked back on a bounded
number of rows; a region larger than that (1.2 km for a 150 m margin) is no building and is kept as seen,
with a warning. So every building comes out exactly once and whole, identical to one tile over the whole
raster, whatever the tile size; and memory is bounded by the tile, not the raster's width: a view holds
(strip_px + 2 margin) × (tile_px + 2 margin) pixels of probability (uint8), comparison (bool) and labels (int32).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import rasterio
from affine import Affine
import shapely
from rasterio.features import shapes
from rasterio.windows import Window

from openfootprints.io.geo import pixel_size_m
from openfootprints.vectorize.regularize import regularize


log = logging.getLogger(__name__)
MAX_MARGIN_FACTOR = 8  # the margin grows to 8× its start before cut instances are accepted (a stream's look-back)


class RasterSource(Protocol):
    """What vectorization reads: an open rasterio dataset, or a raster-like stream or array of probabilities."""

    name: str
    width: int
    height: int
    crs: Any
    transform: Affine

    def read(self, band: int, window: Window) -> np.ndarray: ...


Boxes = list[tuple[slice, slice]]  # scipy.ndimage.find_objects: each label's (rows, columns) box


@dataclass
class Buildings:
    """Polygons in the raster's CRS with their confidence (mean probability over the instance's pixels)."""

    polygons: np.ndarray  # (n,) shapely polygons
    confidence: np.ndarray  # (n,) float32 in [0, 1]
    crs: object


@dataclass(frozen=True)
class _Rules:
    """How one raster's pixels become instances and polygons."""

    level: int  # uint8 probability at or above which a pixel is an instance's (seed) pixel
    extent: int  # uint8 probability at or above which grown pixels are kept (0: all, no footprint)
    grow_px: int  # pixels each instance is grown by
    min_pixels: float  # instances with fewer pixels are dropped
    simplify_px: float  # simplification tolerance, pixels
    regularize_px: float  # regularization tolerance, pixels (0: off)
    min_confidence: float = 0.0  # instances of lower confidence are dropped before they are outlined


def rows_in_use(res_m: float, grow_m: float = 0.0, margin_m: float = 150.0, strip_px: int = 1024) -> int:
    """How many consecutive rows of a streamed source :func:`iter_buildings` may read between two releases:
    a strip and the largest margin above and below it (pixels of ``res_m`` metres)."""
    return strip_px + 2 * MAX_MARGIN_FACTOR * _first_margin(res_m, grow_m, margin_m)


def _first_margin(res_m: float, grow_m: float, margin_m: float) -> int:
    """The view's margin in pixels before any retry: ``margin_m``, and beyond the growing's reach (see _tile)."""
    return max(int(np.ceil(margin_m / res_m)), 2 * int(round(grow_m / res_m)) + 2)


def vectorize(prob_path: str, threshold: float = 0.5, grow_m: float = 0.0, simplify_m: float = 0.25,
              min_area_m2: float = 0.0, strip_px: int = 1024, margin_m: float = 150.0, *,
              tile_px: int | None = 8192, res_m: float | None = None,
              seed_threshold: float | None = None, regularize_m: float = 0.0, min_confidence: float = 0.0
              ) -> Buildings:
    """All buildings of a probability raster (uint8, value/255 = probability); see :func:`iter_buildings`."""
    polys, confs = [], []
    crs = None
    for tile in iter_buildings(prob_path, threshold, grow_m, simplify_m, min_area_m2, strip_px, margin_m,
                               regularize_m, tile_px=tile_px, res_m=res_m, seed_threshold=seed_threshold,
                               min_confidence=min_confidence):
        polys.append(tile.polygons)
        confs.append(tile.confidence)
        crs = tile.crs
    if crs is None:
        with rasterio.open(prob_path) as src:
            crs = src.crs
    return Buildings(np.concatenate(polys) if polys else np.array([], dtype=object),
                     np.concatenate(confs) if confs else np.array([], np.float32), crs)


def iter_buildings(prob_path: Any, threshold: float = 0.5, grow_m: float = 0.0, simplify_m: float = 0.25,
                   min_area_m2: float = 0.0, strip_px: int = 1024, margin_m: float = 150.0,
                   regularize_m: float = 0.0, *, tile_px: int | None = 8192,
                   res_m: float | None = None, seed_threshold: float | None = None,
                   min_confidence: float = 0.0) -> Iterator[Buildings]:
    """Yield the buildings tile by tile: ``strip_px`` rows × ``tile_px`` columns (None or 0: the full width),
    left to right, then down (see the module docstring). Sizes in metres on the ground; ``regularize_m`` > 0
    makes near-rectangular outlines rectangles that stay within that distance
    (:func:`~openfootprints.vectorize.regularize.regularize`).

    ``prob_path`` is a path or an open raster-like source (``read(1, window=...)`` of any window); if it has
    a ``release(row)`` method, it is called after each row of tiles with a row above which nothing will be
    read again. ``res_m``: the ground size of a pixel that turns the sizes into pixels (default: measured at
    the raster's centre). Pass the whole scene's when vectorizing a part of it, so that every part uses the
    same pixel thresholds and tolerances as a whole-scene run (the ground scale varies across a projection).
    ``seed_threshold``: seed instances at this level and grow them only over ``threshold`` (see the module
    docstring); None: instances are the components of ``threshold``. ``min_confidence``: instances whose confidence
    is lower are dropped before they are outlined (they still hold their pixels against the neighbours growing
    into them, so the buildings kept are those of a run without the cut, to the bit).
    """
    if strip_px <= 0 or (tile_px or 0) < 0:
        raise ValueError(f"strip_px must be > 0 and tile_px ≥ 0 (or None), got {strip_px} and {tile_px}")
    # a path, or an open raster-like source (a ProbabilityStream being written by the predicting thread)
    source = contextlib.nullcontext(prob_path) if hasattr(prob_path, "read") else rasterio.open(prob_path)
    with source as src:
        res_m = res_m or pixel_size_m(src.crs, src.transform, src.width, src.height)
        grow_px = int(round(grow_m / res_m))
        margin0 = _first_margin(res_m, grow_m, margin_m)
        level = int(np.clip(np.ceil(threshold * 255), 1, 255))
        seed_level = level if seed_threshold is None else int(np.clip(np.ceil(seed_threshold * 255), 1, 255))
        # seeds are a building's core: count a smaller share of the area limit for them
        share = 0.5 if seed_threshold is None else 0.1
        rules = _Rules(level=seed_level, extent=0 if seed_threshold is None else level, grow_px=grow_px,
                       min_pixels=share * min_area_m2 / res_m**2,
                       simplify_px=simplify_m / res_m, regularize_px=regularize_m / res_m,
                       min_confidence=min_confidence)
        margin_cap = MAX_MARGIN_FACTOR * margin0
        tile_px = tile_px or max(src.width, 1)
        release = getattr(src, "release", None)
        for top in range(0, src.height, strip_px):
            bottom = min(top + strip_px, src.height)
            for left in range(0, src.width, tile_px):
                tile = (top, bottom, left, min(left + tile_px, src.width))
                yield Buildings(*_whole_tile(src, tile, margin0, margin_cap, rules), src.crs)
            if release is not None:
                release(max(0, bottom - margin_cap))  # every later view starts at or below this row


def _whole_tile(src: RasterSource, tile: tuple[int, int, int, int], margin0: int, margin_cap: int,
                rules: _Rules) -> tuple[np.ndarray, np.ndarray]:
    """The polygons and confidences of the buildings ``tile`` owns, its margin doubled while one is cut."""
    margin = margin0
    while True:
        found = _tile(src, tile, margin, rules, accept_cut=margin >= margin_cap)
        if found is not None:
            return found
        margin = min(2 * margin, margin_cap)


def _tile(src: RasterSource, tile: tuple[int, int, int, int], margin: int, rules: _Rules, accept_cut: bool = False
          ) -> tuple[np.ndarray, np.ndarray] | None:
    """Buildings whose first pixel is in ``tile`` = (top, bottom, left, right) (pixels, ends excluded), seen in a
    view grown by ``margin`` px on each side; None when one of them is cut by the view's edge.

    With ``accept_cut`` (the margin has reached its cap) a cut instance is kept as seen, with a warning.
    """
    top, bottom, left, right = tile
    v0, v1 = max(0, top - margin), min(src.height, bottom + margin)
    c0, c1 = max(0, left - margin), min(src.width, right + margin)
    prob = src.read(1, window=Window(c0, v0, c1 - c0, v1 - v0))
    if prob.shape != (v1 - v0, c1 - c0):
        raise ValueError(f"{src.name}: rows {v0}–{v1}, columns {c0}–{c1} read as an array of shape {prob.shape}")
    from scipy import ndimage  # here, not at import: detection's first window need not wait for SciPy

    labels, n = ndimage.label(prob >= rules.level)
    empty = np.array([], dtype=object), np.array([], np.float32)
    if n == 0:
        return empty
    boxes = ndimage.find_objects(labels)
    ids = _owned(labels, boxes, tile, v0, c0)
    # whole, with the neighbours it grows against. The top edge cannot cut: an owned instance's rows are
    # ≥ top and the margin (≥ 2 grow_px + 2) is beyond the reach pad below, or the view starts at row 0.
    pad = 2 * rules.grow_px + 1
    last_row, first_col, last_col = (np.array([(boxes[i - 1][0].stop, boxes[i - 1][1].start, boxes[i - 1][1].stop)
                                               for i in ids]).reshape(-1, 3) + (v0, c0, c0)).T
    cut = (((last_row + pad >= v1) & (v1 < src.height)) | ((last_col + pad >= c1) & (c1 < src.width))
           | ((first_col - pad <= c0) & (c0 > 0)))
    if cut.any():
        if not accept_cut:
            return None
        log.warning("%s: %d region(s) of probability ≥ threshold larger than %d px starting in rows %d–%d, columns "
                    "%d–%d are cut at the tile edge", src.name, int(cut.sum()), margin, top, bottom, left, right)
    # per-instance pixel counts and probability sums, on each instance's box (no tile-sized temporaries)
    stats = np.array([_pixels_and_sum(prob, labels, boxes[i - 1], i) for i in ids], np.float64).reshape(-1, 2)
    confidence = (stats[:, 1] / stats[:, 0] / 255).astype(np.float32)
    keep = (stats[:, 0] >= rules.min_pixels) & (confidence >= rules.min_confidence)
    ids, confidence = ids[keep], confidence[keep]
    if len(ids) == 0:
        return empty
    polygons, corners = _outlines(labels, boxes, ids, rules.grow_px, prob if rules.extent else None, rules.extent)
    # simplified and regularized in pixels from each outline's own corner: the same numbers, hence the same
    # result to the bit, in any view (tolerance comparisons on map coordinates flip with their rounding)
    if rules.simplify_px > 0:
        polygons = shapely.simplify(polygons, rules.simplify_px, preserve_topology=True)
    if rules.regularize_px > 0:
        polygons = regularize(polygons, rules.regularize_px)
    polygons = _to_map(polygons, corners + (c0, v0), src.transform)
    return polygons, confidence


def _owned(labels: np.ndarray, boxes: Boxes, tile: tuple[int, int, int, int], v0: int, c0: int) -> np.ndarray:
    """(k,) labels of the instances whose first pixel in raster order (the leftmost of their top row) is in
    ``tile``; ``labels`` is the view whose top-left pixel is (``v0``, ``c0``) in the raster."""
    top, bottom, left, right = tile
    first_row, col0, col1 = (np.array([(b[0].start, b[1].start, b[1].stop) for b in boxes]) + (v0, c0, c0)).T
    owned = (first_row >= top) & (first_row < bottom) & (col0 < right) & (col1 > left)
    # the first pixel is within the box's columns: look it up where these straddle a side of the tile
    for i in np.flatnonzero(owned & ((col0 < left) | (col1 > right))):
        rows, cols = boxes[i]
        first_col = c0 + cols.start + int(np.argmax(labels[rows.start, cols] == i + 1))
        owned[i] = left <= first_col < right
    return np.flatnonzero(owned) + 1


def _pixels_and_sum(prob: np.ndarray, labels: np.ndarray, box: tuple[slice, slice], label: int) -> tuple[int, int]:
    inside = labels[box] == label
    return int(inside.sum()), int(prob[box][inside].sum(dtype=np.int64))


def _outlines(labels: np.ndarray, boxes: Boxes, ids: np.ndarray, grow_px: int, prob: np.ndarray | None = None,
              extent: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(k,) polygons of the instances ``ids`` of the view ``labels``, each grown by ``grow_px`` without entering
    its neighbours (and, with ``prob``, only over pixels whose ``prob`` ≥ ``extent``), in pixels from its own
    top-left corner; and (k, 2) those corners (column, row) in the view.

    Growing is done on a crop around each instance that holds every label within ``2 × grow_px`` of it
    (exactly the result of growing the whole view, at a fraction of the memory); the grown instances are
    painted on one canvas and traced in one pass (tracing each alone costs a GDAL call per building).
    """
    from skimage.segmentation import expand_labels  # as SciPy in _tile: imported with the first tile

    pad = 2 * grow_px + 1
    crops = np.array([(max(0, boxes[i - 1][0].start - pad), min(labels.shape[0], boxes[i - 1][0].stop + pad),
                       max(0, boxes[i - 1][1].start - pad), min(labels.shape[1], boxes[i - 1][1].stop + pad))
                      for i in ids]).reshape(-1, 4)
    # the canvas covers the crops only, not the view's margins: less to allocate and to trace
    top, left = crops[:, 0].min(), crops[:, 2].min()
    canvas = np.zeros((crops[:, 1].max() - top, crops[:, 3].max() - left), np.int32)
    for i, (r0, r1, c0, c1) in zip(ids, crops):
        crop = labels[r0:r1, c0:c1]
        grown = expand_labels(crop, grow_px) if grow_px > 0 else crop  # type: ignore[no-untyped-call]
        mine = grown == i
        if prob is not None:
            mine &= (prob[r0:r1, c0:c1] >= extent) | (crop == i)
        canvas[r0 - top : r1 - top, c0 - left : c1 - left][mine] = i
    pieces: dict[int, list[shapely.Polygon]] = {}
    for geom, value in shapes(canvas, mask=canvas > 0, connectivity=4):  # canvas pixel coordinates
        pieces.setdefault(int(value), []).append(_polygon(geom["coordinates"]))
    polygons = np.array([_one_polygon(pieces[i]) for i in ids], dtype=object)
    corners = shapely.bounds(polygons)[:, :2].reshape(-1, 2)  # whole pixel numbers
    return _shifted(polygons, -corners), corners + (left, top)


def _shifted(polygons: np.ndarray, by: np.ndarray) -> np.ndarray:
    """Each polygon moved by its own (dx, dy) row of ``by``."""
    coords, index = shapely.get_coordinates(polygons, return_index=True)
    return shapely.set_coordinates(polygons.copy(), coords + by[index])


def _to_map(polygons: np.ndarray, corners: np.ndarray, transform: Affine) -> np.ndarray:
    """Polygons in pixels from their (column, row) ``corners`` in the raster → coordinates of ``transform``."""
    coords, index = shapely.get_coordinates(polygons, return_index=True)
    col, row = (coords + corners[index]).T  # whole numbers plus the outline's own offsets: exact
    return shapely.set_coordinates(polygons.copy(), np.column_stack([
        transform.a * col + transform.b * row + transform.c, transform.d * col + transform.e * row + transform.f]))


def _polygon(rings: list[Any]) -> shapely.Polygon:
    """A polygon from GeoJSON rings (shell, then holes): ``shapely.geometry.shape`` at less than half the cost."""
    shell = shapely.linearrings(np.asarray(rings[0]))
    if len(rings) > 1:
        return shapely.Polygon(shell, [np.asarray(h) for h in rings[1:]])
    return cast(shapely.Polygon, shapely.polygons(shell))  # one ring in: one polygon out


def _one_polygon(pieces: list[shapely.Polygon]) -> shapely.Polygon:
    """An instance's outline: its pieces merged, or the largest if they do not join."""
    geom = pieces[0] if len(pieces) == 1 else shapely.union_all(pieces)
    if isinstance(geom, shapely.MultiPolygon):
        geom = max(geom.geoms, key=lambda g: g.area)
    return cast(shapely.Polygon, geom)
