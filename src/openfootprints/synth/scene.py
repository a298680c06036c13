"""Synthetic scenes: a georeferenced RGB GeoTIFF of buildings seen from above, and their true footprints.

The scene is drawn in pixel space (row down, column right) at ``resolution_m`` metres on the ground per
pixel, then georeferenced in any CRS by measuring, at the scene centre, how many map units one ground
metre is in that CRS. Everything is driven by one ``numpy.random.Generator``, so a seed fixes the scene.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import cast

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.features import rasterize
from scipy import ndimage
from shapely import affinity
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from openfootprints.io.geo import ground_scale

ROOF_COLOURS = np.array(
    [
        [150, 60, 45],  # red tiles
        [175, 85, 60],  # terracotta
        [140, 145, 150],  # grey metal
        [200, 200, 195],  # concrete / white
        [95, 110, 140],  # blue sheet
        [120, 95, 70],  # brown / thatch
        [185, 170, 140],  # beige
        [70, 75, 80],  # dark bitumen
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class SceneSpec:
    """What to draw. Sizes in pixels (width, height) and metres on the ground."""

    width: int = 1024
    height: int = 1024
    resolution_m: float = 0.5
    crs: str = "EPSG:32630"
    center_lonlat: tuple[float, float] = (-1.6, 6.7)  # Kumasi, Ghana
    building_density: float = 1.0  # multiplier on the default number of buildings per km²
    seed: int = 0


@dataclass
class Building:
    """One footprint in pixel coordinates (column, row), with what is needed to draw its roof."""

    polygon: Polygon
    angle_deg: float
    height_m: float
    colour: np.ndarray
    gable: bool


def scene_transform(spec: SceneSpec) -> Affine:
    """Affine from pixel (col, row) to the CRS so that one pixel is ``resolution_m`` on the ground."""
    crs = CRS.from_user_input(spec.crs)
    lon, lat = spec.center_lonlat
    sx, sy = ground_scale(crs, lon, lat)
    cx, cy = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    px, py = spec.resolution_m * sx, spec.resolution_m * sy
    return Affine(px, 0.0, cx - px * spec.width / 2, 0.0, -py, cy + py * spec.height / 2)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Noise with features about ``sigma`` pixels across, scaled to zero mean and unit std; (rows, cols)."""
    small = (max(2, int(shape[0] / sigma) + 3), max(2, int(shape[1] / sigma) + 3))
    coarse = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), 1.0)
    zoom = (shape[0] / (small[0] - 2), shape[1] / (small[1] - 2))
    field = ndimage.zoom(coarse, zoom, order=1)[: shape[0], : shape[1]]
    field = np.pad(field, ((0, shape[0] - field.shape[0]), (0, shape[1] - field.shape[1])), mode="edge")
    return (field - field.mean()) / (field.std() + 1e-6)


def _roads(rng: np.random.Generator, spec: SceneSpec) -> list[Polygon]:
    """A few straight roads crossing the scene, 5–12 m wide, as pixel polygons."""
    diag = math.hypot(spec.width, spec.height)
    n = max(1, int(round(spec.width * spec.height * spec.resolution_m**2 / 250_000)))
    roads = []
    for _ in range(n):
        cx, cy = rng.uniform(0, spec.width), rng.uniform(0, spec.height)
        angle = rng.uniform(0, 180)
        width_px = rng.uniform(5, 12) / spec.resolution_m
        line = box(-diag, -width_px / 2, diag, width_px / 2)
        roads.append(affinity.translate(affinity.rotate(line, angle, origin=(0, 0)), cx, cy))
    return roads


def _footprint(length_m: float, width_m: float, angle: float, cx: float, cy: float, res: float, l_shape: bool,
               rng: np.random.Generator) -> Polygon:
    """A rectangle (or an L) of the given ground size, rotated by ``angle`` degrees, centred at (cx, cy) px."""
    hl, hw = length_m / res / 2, width_m / res / 2
    shape = box(-hl, -hw, hl, hw)
    if l_shape:
        notch = box(hl * rng.uniform(0.0, 0.4), hw * rng.uniform(-0.2, 0.3), hl, hw)
        shape = cast(Polygon, shape.difference(notch))  # the corner cut off: an L, still one polygon
    return affinity.translate(affinity.rotate(shape, angle, origin=(0, 0)), cx, cy)


def _sample_buildings(rng: np.random.Generator, spec: SceneSpec, roads: list[Polygon]) -> list[Building]:
    """Place isolated buildings (huts to blocks) and rows of touching buildings, avoiding roads and each other."""
    res = spec.resolution_m
    area_km2 = spec.width * spec.height * res**2 / 1e6
    target = int(1500 * area_km2 * spec.building_density)
    road_union = shapely.union_all(roads) if roads else Polygon()
    placed: list[Building] = []
    index = _GrowingIndex()
    tries = 0
    while len(placed) < target and tries < target * 30:
        tries += 1
        cx, cy = rng.uniform(0, spec.width), rng.uniform(0, spec.height)
        angle = rng.uniform(0, 180)
        kind = rng.choice(["hut", "house", "house", "house", "block", "row"], p=[0.12, 0.25, 0.25, 0.2, 0.08, 0.1])
        group: list[tuple[Polygon, float]] = []
        if kind == "row":
            n = int(rng.integers(3, 7))
            unit_w, depth = rng.uniform(5, 9), rng.uniform(8, 13)
            start = -(n * unit_w) / 2
            rad = math.radians(angle)
            for i in range(n):
                off = (start + (i + 0.5) * unit_w) / res
                w_i = unit_w * rng.uniform(0.9, 1.1)
                group.append((_footprint(w_i, depth, angle, cx + off * math.cos(rad), cy + off * math.sin(rad),
                                         res, False, rng), rng.uniform(3, 7)))
        else:
            if kind == "hut":
                length, width = rng.uniform(3, 5), rng.uniform(3, 5)
            elif kind == "house":
                length, width = rng.uniform(7, 16), rng.uniform(6, 11)
            else:
                length, width = rng.uniform(18, 40), rng.uniform(12, 25)
            group.append((_footprint(length, width, angle, cx, cy, res, kind == "block" and rng.random() < 0.4, rng),
                          rng.uniform(3, 20) if kind == "block" else rng.uniform(2.5, 7)))
        union = shapely.union_all([g for g, _ in group])
        if not box(4, 4, spec.width - 4, spec.height - 4).contains(union):
            continue
        clearance = union.buffer(1.5 / res)
        if clearance.intersects(road_union):
            continue
        if index.intersects(clearance):
            continue
        index.add(union)
        colour_idx = int(rng.integers(len(ROOF_COLOURS)))
        for poly, height in group:
            if kind == "row" and rng.random() < 0.6:
                colour_idx = int(rng.integers(len(ROOF_COLOURS)))
            colour = ROOF_COLOURS[colour_idx] * rng.uniform(0.85, 1.15, 3).astype(np.float32)
            placed.append(Building(poly, angle, height, colour, gable=bool(rng.random() < 0.6)))
    return _share_walls(placed)


class _GrowingIndex:
    """Intersection queries against a growing set of polygons: an STRtree rebuilt now and then, plus a short tail."""

    def __init__(self, rebuild_every: int = 256):
        self.frozen: list[BaseGeometry] = []
        self.tail: list[BaseGeometry] = []
        self.tree: shapely.STRtree | None = None
        self.rebuild_every = rebuild_every

    def add(self, geom: BaseGeometry) -> None:
        self.tail.append(geom)
        if len(self.tail) >= self.rebuild_every:
            self.frozen += self.tail
            self.tail = []
            self.tree = shapely.STRtree(self.frozen)

    def intersects(self, geom: BaseGeometry) -> bool:
        if self.tree is not None and len(self.tree.query(geom, predicate="intersects")):
            return True
        return any(geom.intersects(g) for g in self.tail)


def _share_walls(buildings: list[Building]) -> list[Building]:
    """Remove slivers where units of a row overlap, so touching buildings share a wall and never overlap."""
    polys = [b.polygon for b in buildings]
    tree = shapely.STRtree(polys)
    for i, b in enumerate(buildings):
        for j in tree.query(b.polygon, predicate="intersects"):
            if j > i and polys[i].intersection(polys[j]).area > 0:
                polys[j] = polys[j].difference(polys[i])
    out = []
    for b, p in zip(buildings, polys):
        if p.geom_type == "MultiPolygon":
            p = max(p.geoms, key=lambda g: g.area)
        if p.area > 4:
            out.append(Building(shapely.set_precision(p, 0.01), b.angle_deg, b.height_m, b.colour, b.gable))
    return out


def _trees(rng: np.random.Generator, spec: SceneSpec, buildings: list[Building]) -> list[Polygon]:
    """Round crowns 3–10 m across in free space."""
    res = spec.resolution_m
    n = int(900 * spec.width * spec.height * res**2 / 1e6)
    occupied = shapely.STRtree([b.polygon.buffer(1 / res) for b in buildings]) if buildings else None
    out = []
    for _ in range(n):
        c = shapely.Point(rng.uniform(0, spec.width), rng.uniform(0, spec.height)).buffer(rng.uniform(1.5, 5) / res)
        if occupied is None or len(occupied.query(c, predicate="intersects")) == 0:
            out.append(c)
    return out


def render(spec: SceneSpec) -> tuple[np.ndarray, list[Polygon]]:
    """Draw the scene. Returns the image (3, height, width) uint8 and the footprints in pixel coordinates."""
    rng = np.random.default_rng(spec.seed)
    shape = (spec.height, spec.width)
    res = spec.resolution_m
    roads = _roads(rng, spec)
    buildings = _sample_buildings(rng, spec, roads)
    trees = _trees(rng, spec, buildings)

    # Ground: soil and grass patches at two scales.
    grass = _smooth_noise(rng, shape, 60 / res) > 0.3
    soil = np.stack([np.full(shape, c, np.float32) for c in (165, 140, 105)])
    soil[:, grass] = np.array([95, 120, 70], np.float32)[:, None]
    texture = _smooth_noise(rng, shape, 3 / res) * 10 + _smooth_noise(rng, shape, 20 / res) * 12
    image = soil + texture[None]

    if roads:
        road_mask = rasterize(roads, out_shape=shape, all_touched=False).astype(bool)
        image[:, road_mask] = np.array([105, 105, 108], np.float32)[:, None] + texture[None, road_mask] * 0.4

    # Shadows: footprints shifted away from the sun (north-west sun, shadows fall south-east).
    sun_dx, sun_dy = 0.5, 0.7
    shadows = [affinity.translate(b.polygon, sun_dx * b.height_m / res * 0.4, sun_dy * b.height_m / res * 0.4)
               for b in buildings]
    shadows += [affinity.translate(t, 2 / res, 2.5 / res) for t in trees]
    if shadows:
        shadow_mask = rasterize(shadows, out_shape=shape).astype(bool)
        image[:, shadow_mask] *= 0.45

    if buildings:
        ids = rasterize([(b.polygon, i + 1) for i, b in enumerate(buildings)], out_shape=shape, dtype="int32")
        _draw_roofs(image, ids, buildings, rng)

    if trees:
        crown = rasterize(trees, out_shape=shape).astype(bool)
        leaves = _smooth_noise(rng, shape, 1.5 / res)
        image[:, crown] = np.array([50, 85, 40], np.float32)[:, None] + leaves[None, crown] * 14

    image = ndimage.gaussian_filter(image, sigma=(0, 0.6, 0.6))
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), [b.polygon for b in buildings]


def _draw_roofs(image: np.ndarray, ids: np.ndarray, buildings: list[Building], rng: np.random.Generator) -> None:
    """Fill each building's pixels with its roof colour, a darker half for gable roofs and a dark outline."""
    rows, cols = np.nonzero(ids)
    k = ids[rows, cols] - 1
    centres = np.array([b.polygon.centroid.coords[0] for b in buildings])
    angles = np.radians([b.angle_deg for b in buildings])
    colours = np.stack([b.colour for b in buildings])
    gable = np.array([b.gable for b in buildings])
    dx, dy = cols - centres[k, 0], rows - centres[k, 1]
    across = -dx * np.sin(angles[k]) + dy * np.cos(angles[k])
    shade = np.where(gable[k] & (across > 0), 0.78, 1.0).astype(np.float32)
    roof = colours[k] * shade[:, None]
    roof += rng.normal(0, 5, roof.shape).astype(np.float32)
    image[:, rows, cols] = roof.T
    edge = (ids != ndimage.grey_erosion(ids, size=3)) & (ids > 0)
    image[:, edge] *= 0.75


def to_crs_polygons(polygons: list[Polygon], transform: Affine) -> list[Polygon]:
    """Pixel-space polygons (col, row) to map coordinates with the scene's affine."""
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    return [affinity.affine_transform(p, [a, b, d, e, c, f]) for p in polygons]


def write_scene(spec: SceneSpec, image_path: str | os.PathLike, labels_path: str | os.PathLike,
                tile_px: int = 2048) -> int:
    """Render ``spec`` and write the GeoTIFF and its footprints (any pyogrio format, by extension).

    Scenes larger than ``tile_px`` are drawn tile by tile (each tile its own seed, derived from the
    scene's), so memory stays bounded for any size. Both files are written atomically. Returns the
    number of buildings.
    """
    import geopandas as gpd
    import rasterio
    from rasterio.windows import Window

    from openfootprints.io.atomic import atomic_outputs

    transform = scene_transform(spec)
    profile = dict(driver="GTiff", width=spec.width, height=spec.height, count=3, dtype="uint8", crs=spec.crs,
                   transform=transform, tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                   photometric="RGB", interleave="pixel", BIGTIFF="IF_SAFER")
    single = spec.width <= tile_px and spec.height <= tile_px
    polygons: list[Polygon] = []
    with atomic_outputs(image_path, labels_path) as (tmp_image, tmp_labels):
        with rasterio.open(tmp_image, "w", **profile) as dst:
            for row in range(0, spec.height, tile_px):
                for col in range(0, spec.width, tile_px):
                    seed = spec.seed if single else int(np.random.SeedSequence([spec.seed, row, col]).generate_state(1)[0])
                    tile = replace(spec, width=min(tile_px, spec.width - col), height=min(tile_px, spec.height - row),
                                   seed=seed)
                    image, polys = render(tile)
                    dst.write(image, window=Window(col, row, tile.width, tile.height))
                    polygons += [affinity.translate(p, col, row) for p in polys]
        footprints = gpd.GeoDataFrame({"building_id": range(len(polygons))},
                                      geometry=to_crs_polygons(polygons, transform), crs=spec.crs)
        footprints.to_file(tmp_labels, engine="pyogrio")
    return len(polygons)
