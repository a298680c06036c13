"""Probability raster in, building polygons out: instances, confidence, simplification, in strips.

Instances are the 4-connected components of ``probability ≥ threshold``, each grown back by the
label erosion used in training (without merging into neighbours). The raster is read in full-width
strips that overlap; an instance belongs to the strip that holds its top row, and is only accepted when
the strip shows it whole (if it touches the strip's edge the overlap is doubled and the strip redone, up
to 64 times the configured overlap or 16 strips; a region taller than that is kept as seen, with a
warning). So every building comes out exactly once and whole, whatever the strip size, with bounded memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
import shapely
from rasterio.features import shapes
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy import ndimage
from skimage.segmentation import expand_labels

from openfootprints.io.geo import pixel_size_m
from openfootprints.vectorize.regularize import regularize


log = logging.getLogger(__name__)
MAX_MARGIN_FACTOR = 64  # the strip overlap grows to 64× its start or 16 strips before cut instances are accepted


@dataclass
class Buildings:
    """Polygons in the raster's CRS with their confidence (mean probability over the instance's pixels)."""

    polygons: np.ndarray  # (n,) shapely polygons
    confidence: np.ndarray  # (n,) float32 in [0, 1]
    crs: object


def vectorize(prob_path: str, threshold: float = 0.5, grow_m: float = 0.0, simplify_m: float = 0.25,
              min_area_m2: float = 0.0, strip_px: int = 1024, margin_m: float = 150.0) -> Buildings:
    """All buildings of a probability raster (uint8, value/255 = probability)."""
    polys, confs = [], []
    crs = None
    for strip in iter_buildings(prob_path, threshold, grow_m, simplify_m, min_area_m2, strip_px, margin_m):
        polys.append(strip.polygons)
        confs.append(strip.confidence)
        crs = strip.crs
    if crs is None:
        with rasterio.open(prob_path) as src:
            crs = src.crs
    return Buildings(np.concatenate(polys) if polys else np.array([], dtype=object),
                     np.concatenate(confs) if confs else np.array([], np.float32), crs)


def iter_buildings(prob_path: str, threshold: float = 0.5, grow_m: float = 0.0, simplify_m: float = 0.25,
                   min_area_m2: float = 0.0, strip_px: int = 1024, margin_m: float = 150.0,
                   regularize_m: float = 0.0) -> Iterator[Buildings]:
    """Yield the buildings strip by strip (see the module docstring). Sizes in metres on the ground;
    ``regularize_m`` > 0 makes near-rectangular outlines rectangles that stay within that distance
    (:func:`~openfootprints.vectorize.regularize.regularize`)."""
    # a path, or an open raster-like source (a ProbabilityStream being written by the predicting thread)
    source = contextlib.nullcontext(prob_path) if hasattr(prob_path, "read") else rasterio.open(prob_path)
    with source as src:
        res_m = pixel_size_m(src.crs, src.transform, src.width, src.height)
        grow_px = int(round(grow_m / res_m))
        margin0 = max(int(np.ceil(margin_m / res_m)), 2 * grow_px + 2)
        level = int(np.clip(np.ceil(threshold * 255), 1, 255))
        min_pixels = 0.5 * min_area_m2 / res_m**2
        simplify_map = simplify_m / res_m * abs(src.transform.a)
        regularize_map = regularize_m / res_m * abs(src.transform.a)
        margin_cap = max(MAX_MARGIN_FACTOR * margin0, 16 * strip_px)
        for top in range(0, src.height, strip_px):
            bottom = min(top + strip_px, src.height)
            margin = margin0
            while True:
                last_try = margin >= margin_cap
                result = _strip(src, top, bottom, margin, level, grow_px, min_pixels, simplify_map, regularize_map,
                                accept_cut=last_try)
                if result is not None:
                    yield Buildings(*result, src.crs)
                    break
                margin = min(2 * margin, margin_cap)


def _strip(src, top: int, bottom: int, margin: int, level: int, grow_px: int, min_pixels: float,
           simplify_map: float, regularize_map: float = 0.0, accept_cut: bool = False):
    """Buildings whose top row is in [top, bottom); None when one of them is cut by the strip's edge.

    With ``accept_cut`` (the overlap has reached its cap) a cut instance is kept as seen, with a warning.
    """
    v0, v1 = max(0, top - margin), min(src.height, bottom + margin)
    window = Window(0, v0, src.width, v1 - v0)
    prob = src.read(1, window=window)
    labels, n = ndimage.label(prob >= level)
    if n == 0:
        return np.array([], dtype=object), np.array([], np.float32)
    boxes = ndimage.find_objects(labels)
    first_row = np.array([b[0].start for b in boxes]) + v0
    last_row = np.array([b[0].stop for b in boxes]) + v0
    owned = (first_row >= top) & (first_row < bottom)
    cut = owned & (last_row + 2 * grow_px + 1 >= v1) & (v1 < src.height)  # whole, with the neighbours it grows against
    if cut.any():
        if not accept_cut:
            return None
        log.warning("%s: %d region(s) of probability ≥ threshold taller than %d px starting in rows %d–%d are cut "
                    "at the strip edge", src.name, int(cut.sum()), margin, top, bottom)
    ids = np.flatnonzero(owned) + 1
    # per-instance pixel counts and probability sums, on each instance's box (no strip-sized temporaries)
    stats = np.array([_pixels_and_sum(prob, labels, boxes[i - 1], i) for i in ids], np.float64).reshape(-1, 2)
    keep = stats[:, 0] >= min_pixels
    ids, stats = ids[keep], stats[keep]
    if len(ids) == 0:
        return np.array([], dtype=object), np.array([], np.float32)
    confidence = (stats[:, 1] / stats[:, 0] / 255).astype(np.float32)
    view_transform = window_transform(window, src.transform)
    polygons = np.array([_outline(labels, boxes[i - 1], i, grow_px, view_transform) for i in ids], dtype=object)
    if simplify_map > 0:
        polygons = shapely.simplify(polygons, simplify_map, preserve_topology=True)
    if regularize_map > 0:
        polygons = regularize(polygons, regularize_map)
    return polygons, confidence


def _pixels_and_sum(prob: np.ndarray, labels: np.ndarray, box: tuple[slice, slice], label: int) -> tuple[int, int]:
    inside = labels[box] == label
    return int(inside.sum()), int(prob[box][inside].sum(dtype=np.int64))


def _outline(labels: np.ndarray, box: tuple[slice, slice], label: int, grow_px: int, transform) -> shapely.Polygon:
    """The polygon of one instance, grown by ``grow_px`` without entering its neighbours.

    Growing is done on a crop around the instance that holds every label within ``2 × grow_px`` of
    it, which gives exactly the result of growing the whole strip, at a fraction of the memory.
    """
    pad = 2 * grow_px + 1
    r0, r1 = max(0, box[0].start - pad), min(labels.shape[0], box[0].stop + pad)
    c0, c1 = max(0, box[1].start - pad), min(labels.shape[1], box[1].stop + pad)
    crop = labels[r0:r1, c0:c1]
    if grow_px > 0:
        crop = expand_labels(crop, grow_px)
    mask = crop == label
    pieces = [shapely.geometry.shape(geom) for geom, _ in
              shapes(mask.astype(np.uint8), mask=mask, connectivity=4,
                     transform=transform @ Affine.translation(c0, r0))]
    return _one_polygon(pieces)


def _one_polygon(pieces: list) -> shapely.Polygon:
    """An instance's outline: its pieces merged, or the largest if they do not join."""
    geom = pieces[0] if len(pieces) == 1 else shapely.union_all(pieces)
    if geom.geom_type == "MultiPolygon":
        geom = max(geom.geoms, key=lambda g: g.area)
    return geom
