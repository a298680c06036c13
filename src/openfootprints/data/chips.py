"""Training chips sampled on the fly from labelled scenes; labels rasterized per chip.

No chip is ever written to disk: a chip is a window of a :class:`~openfootprints.io.raster.Scene` read
when the data loader asks for it, with the building polygons that overlap it burnt into a mask.
The train / validation split is spatial: the scene is cut into square blocks and whole blocks go to one
side (see :func:`split_blocks`), so neighbouring chips never straddle the split.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
import torch
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy import ndimage

from openfootprints.data.augment import (Augmentation, RawChip, copy_paste, degrade, flip_rotate, mosaic,
                                         photometric_jitter)
from openfootprints.data.normalize import Normalization
from openfootprints.errors import InputError
from openfootprints.io.raster import Scene


@dataclass
class LabelledScene:
    """A scene and its building polygons in the scene's CRS; ``weight`` scales how often its chips are drawn
    (per square metre of imagery, against the other scenes). ``area`` (a polygon in the scene's CRS), when given,
    is where the labels are complete: outside it a pixel is neither building nor background (no loss), and chips
    are drawn where it lies."""

    scene: Scene
    polygons: gpd.GeoSeries
    weight: float = 1.0
    area: shapely.Geometry | None = None

    def __post_init__(self):
        self._tree = shapely.STRtree(self.polygons.to_numpy())

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_tree", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._tree = shapely.STRtree(self.polygons.to_numpy())

    def polygons_in(self, window: Window) -> np.ndarray:
        """The polygons that overlap a working-grid window."""
        return self.polygons.to_numpy()[self._tree.query(self.scene.window_box(window), predicate="intersects")]

    def area_share(self, window: Window) -> float:
        """Share of a working-grid window inside the labelled area (1 without an area)."""
        if self.area is None:
            return 1.0
        box = self.scene.window_box(window)
        return float(shapely.intersection(box, self.area).area / box.area)

    def labelled(self, transform, shape: tuple[int, int]) -> np.ndarray | None:
        """(h, w) bool: pixels (of the grid ``transform``) inside the labelled area; None without an area."""
        if self.area is None:
            return None
        return rasterize([(self.area, 1)], out_shape=shape, transform=transform, dtype="uint8").astype(bool)


def building_ids(polygons: np.ndarray, transform, shape: tuple[int, int]) -> np.ndarray:
    """Burn polygons into a (h, w) int32 raster: 0 background, i + 1 inside polygon i."""
    if len(polygons) == 0:
        return np.zeros(shape, np.int32)
    return rasterize([(g, i + 1) for i, g in enumerate(polygons)], out_shape=shape, transform=transform,
                     dtype="int32")


def shrink_each(ids: np.ndarray, erode_px: int = 0) -> np.ndarray:
    """(h, w) uint8 mask of the buildings in ``ids``, each shrunk by ``erode_px`` pixels on its own.

    Shrinking each building separately opens a gap between buildings that share a wall, which keeps
    them apart as separate instances at detection (where they are grown back by the same amount).
    """
    if erode_px <= 0:
        return (ids > 0).astype(np.uint8)
    disk = _disk(erode_px)
    same = (ndimage.grey_erosion(ids, footprint=disk, mode="nearest") == ids) & (
        ndimage.grey_dilation(ids, footprint=disk, mode="nearest") == ids)
    return (same & (ids > 0)).astype(np.uint8)


def building_mask(polygons: np.ndarray, transform, shape: tuple[int, int], erode_px: int = 0) -> np.ndarray:
    """Burn polygons into a (h, w) uint8 mask, each building shrunk by ``erode_px`` pixels (see :func:`shrink_each`)."""
    return shrink_each(building_ids(polygons, transform, shape), erode_px)


def energy_target(ids: np.ndarray, ramp_px: float) -> np.ndarray:
    """(h, w) float32 target in [0, 1] that sees each building's border, shared walls included.

    0 on background; on building pixels ``0.5 + 0.5 · min(d / ramp_px, 1)``, where d (pixels, ≥ 1) is the
    distance to the nearest pixel that is not of the same building (background or a neighbour). So every
    building pixel is above 0.5 (the footprint), the value rises from the outline inwards and a wall shared by
    two buildings stays low: detection seeds instances where it is high and grows them over the footprint
    (the energy of the deep watershed transform, Bai & Urtasun 2017, as a single output).
    """
    edge = (ndimage.grey_erosion(ids, size=3, mode="nearest") != ids) | (
        ndimage.grey_dilation(ids, size=3, mode="nearest") != ids)
    inner = (ids > 0) & ~edge
    depth = ndimage.distance_transform_edt(inner) + 1.0  # ≥ 1 on building pixels: 1 on the outline
    ramp = np.minimum(depth / max(ramp_px, 1.0), 1.0)
    return np.where(ids > 0, 0.5 + 0.5 * ramp, 0.0).astype(np.float32)


def gap_weights(ids: np.ndarray, w0: float, sigma_px: float) -> np.ndarray:
    """U-Net loss weights (h, w) float32: ``1 + w0 · exp(−(d1 + d2)² / 2σ²)`` on background, 1 inside buildings.

    d1 and d2 are the distances in pixels to the nearest and second-nearest building of ``ids``, so the
    weight peaks in narrow gaps between two buildings. Each building's distance map is computed only
    within 3σ of it (beyond, the term is below w0 · 1 %).
    """
    h, w = ids.shape
    reach = int(np.ceil(3 * sigma_px)) + 1
    d1 = np.full(ids.shape, np.inf, np.float32)
    d2 = np.full(ids.shape, np.inf, np.float32)
    for k, box in enumerate(ndimage.find_objects(ids), start=1):
        if box is None:
            continue
        r0, r1 = max(0, box[0].start - reach), min(h, box[0].stop + reach)
        c0, c1 = max(0, box[1].start - reach), min(w, box[1].stop + reach)
        dist = ndimage.distance_transform_edt(ids[r0:r1, c0:c1] != k).astype(np.float32)
        near, second = d1[r0:r1, c0:c1], d2[r0:r1, c0:c1]
        second[...] = np.minimum(second, np.maximum(near, dist))
        near[...] = np.minimum(near, dist)
    term = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma_px**2))
    return np.where(ids > 0, 1.0, 1.0 + term).astype(np.float32)


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y) <= radius * radius


def split_blocks(scene: Scene, block_px: int, val_fraction: float, seed: int,
                 exclude: tuple[float, float, float, float] | None = None,
                 min_valid: float = 0.5, area: shapely.Geometry | None = None) -> tuple[list[Window], list[Window]]:
    """Cut a scene into ``block_px`` square blocks and assign whole blocks to train or validation.

    Blocks with less than ``min_valid`` valid pixels, blocks touching ``exclude`` (bounds in the
    scene's CRS: an area held out from training altogether) and blocks that miss ``area`` (where the labels
    are complete, in the scene's CRS) are dropped. At least one block goes to each side when there are two or more.
    The grid starts at the top-left corner; where the scene's size is not a multiple of ``block_px``, a last row
    and column of blocks end at its far edges (overlapping their neighbours, so no margin is left unsampled) and
    join the side of the grid blocks they overlap (dropped when those went to both sides).
    """
    valid = _coarse_valid(scene, block_px)
    blocks: list[Window] = []
    edges: list[Window] = []
    for row in block_starts(scene.height, block_px):
        for col in block_starts(scene.width, block_px):
            window = Window(col, row, block_px, block_px)
            if exclude is not None and scene.window_box(window).intersects(shapely.box(*exclude)):
                continue
            if area is not None and not scene.window_box(window).intersects(area):
                continue
            on_grid = row % block_px == 0 and col % block_px == 0
            share = valid[row // block_px, col // block_px] if on_grid else _window_valid(scene, window)
            if share >= min_valid:
                (blocks if on_grid else edges).append(window)
    if not blocks:  # what there is lies in the margins: their blocks are the split's
        blocks, edges = edges, []
    if not blocks:
        where = " inside its labelled area (--area)" if area is not None else ""
        raise InputError(f"{scene.path}: no {block_px} px block with enough valid pixels{where} for the split; "
                         "lower data.block_m or data.chip_px")
    order = np.random.default_rng(seed).permutation(len(blocks))
    n_val = min(len(blocks) - 1, max(1, round(val_fraction * len(blocks)))) if len(blocks) > 1 else 0
    n_val = n_val if val_fraction > 0 else 0
    val = [blocks[i] for i in order[:n_val]]
    train = [blocks[i] for i in order[n_val:]]
    for edge in edges:
        sides = {side for side, group in ((0, train), (1, val)) if any(_overlap(edge, w) for w in group)}
        if sides == {1}:
            val.append(edge)
        elif sides == {0} or (not sides and train):  # beside no used block: it cannot leak into validation
            train.append(edge)
    key = lambda w: (w.row_off, w.col_off)  # noqa: E731
    return sorted(train, key=key), sorted(val, key=key)


def block_starts(length: int, block_px: int) -> list[int]:
    """Offsets of the blocks along one side: every ``block_px`` from 0, plus one ending at the far edge when the
    side is not a multiple of ``block_px`` (none when the side is shorter than a block)."""
    starts = list(range(0, length - block_px + 1, block_px))
    if starts and starts[-1] + block_px < length:
        starts.append(length - block_px)
    return starts


def _overlap(a: Window, b: Window) -> bool:
    return (abs(a.row_off - b.row_off) < max(a.height, b.height)
            and abs(a.col_off - b.col_off) < max(a.width, b.width))


def _window_valid(scene: Scene, window: Window) -> float:
    """Fraction of valid pixels in a working-grid window, read at 16 × 16."""
    return float(scene.coarse_valid(window, (16, 16)).mean())


def _coarse_valid(scene: Scene, block_px: int) -> np.ndarray:
    """Fraction of valid pixels per block, read at a reduced resolution; shape (rows of blocks, cols of blocks)."""
    nby, nbx = scene.height // block_px, scene.width // block_px
    cells = max(1, block_px // 16)  # samples per block side
    if nby == 0 or nbx == 0:
        return np.zeros((nby, nbx))
    mask = scene.coarse_valid(Window(0, 0, nbx * block_px, nby * block_px), (nby * cells, nbx * cells))
    return mask.reshape(nby, cells, nbx, cells).mean(axis=(1, 3))


def normalization_stats(sources: list[LabelledScene], blocks: list[tuple[int, Window]], n: int = 32,
                        seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation over the valid pixels of ``n`` blocks (file units)."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(blocks), size=min(n, len(blocks)), replace=False)
    values = []
    for k in picks:
        scene_idx, window = blocks[k]
        image, valid = sources[scene_idx].scene.read(window)
        values.append(image[:, valid][:, ::7])
    pixels = np.concatenate(values, axis=1).astype(np.float64)
    return pixels.mean(axis=1).tolist(), np.maximum(pixels.std(axis=1), 1e-6).tolist()


def block_probabilities(sources: list[LabelledScene], blocks: list[tuple[int, Window]]) -> np.ndarray:
    """(n,) probability of drawing each block: its valid ground area (m², from a coarse read of the mask) inside its
    scene's labelled area, times its scene's weight, so that scenes are sampled in proportion to the labelled
    imagery they hold."""
    area = np.zeros(len(blocks))
    for k, (idx, block) in enumerate(blocks):
        scene = sources[idx].scene
        area[k] = (_window_valid(scene, block) * sources[idx].area_share(block) * block.width * block.height * scene.resolution_m**2
                   * sources[idx].weight)
    if area.sum() <= 0:
        raise InputError("train: the training blocks hold no valid pixels (or every scene has weight 0)")
    return area / area.sum()


def random_window(blocks: list[tuple[int, Window]], chip_px: int, rng: np.random.Generator,
                  probabilities: np.ndarray | None = None) -> tuple[int, Window]:
    """A ``chip_px`` square at a random place in a random block (drawn with ``probabilities``, else uniformly):
    (scene index, Window). A block smaller than the chip gives a chip its size (no chip spans two blocks)."""
    scene_idx, block = blocks[rng.choice(len(blocks), p=probabilities)]
    size = min(chip_px, int(block.width), int(block.height))
    col = block.col_off + rng.integers(0, block.width - size + 1)
    row = block.row_off + rng.integers(0, block.height - size + 1)
    return scene_idx, Window(int(col), int(row), size, size)


class ChipDataset(torch.utils.data.Dataset):
    """Chips of ``chip_px`` pixels from blocks of labelled scenes.

    In random mode (``windows=None``) item ``i`` is a chip at a random place in a random block (blocks drawn
    with ``probabilities``, else uniformly), the place drawn from a generator seeded with ``(seed, i)``: use it
    with a sampler that draws indexes. A random chip with less than ``min_valid`` valid pixels is drawn again
    (up to 8 times), so scenes of scattered tiles give chips on their imagery. With ``windows`` given (a fixed
    list of ``(scene index, Window)``), item ``i`` is that window.
    Each item is ``(image (C, H, W) float32 normalized, target (1, H, W) float32, weight (1, H, W) float32)``.
    The target is ``target="eroded"``: the building mask, each building shrunk by ``erode_px``; or
    ``"energy"``: :func:`energy_target` with ``ramp_px``. The weight is 0 on nodata and, with ``gap_w0`` > 0,
    raised in the gaps between buildings (:func:`gap_weights`, ``gap_sigma_px`` in pixels). ``augment`` applies
    to random mode only. Outside a source's labelled area (:attr:`LabelledScene.area`) the weight is 0 too, and a
    random chip with no labelled pixel is drawn again.
    """

    VIRTUAL_LENGTH = 2**31 - 1
    TARGETS = ("eroded", "energy")

    def __init__(self, sources: list[LabelledScene], blocks: list[tuple[int, Window]], chip_px: int,
                 mean: list[float], std: list[float], erode_px: int = 0, seed: int = 0,
                 augment: Augmentation | None = None, windows: list[tuple[int, Window]] | None = None,
                 gap_w0: float = 0.0, gap_sigma_px: float = 5.0, target: str = "eroded", ramp_px: float = 5.0,
                 probabilities: np.ndarray | None = None, min_valid: float = 0.0):
        if target not in self.TARGETS:
            raise InputError(f"data.target={target}: must be one of {', '.join(self.TARGETS)}")
        self.sources, self.blocks, self.chip_px = sources, blocks, chip_px
        self.normalize = Normalization(mean, std)
        self.erode_px, self.seed, self.windows = erode_px, seed, windows
        self.augment = augment if windows is None else None
        self.gap_w0, self.gap_sigma_px = gap_w0, gap_sigma_px
        self.target, self.ramp_px = target, ramp_px
        self.probabilities, self.min_valid = probabilities, min_valid

    def __len__(self) -> int:
        return len(self.windows) if self.windows is not None else self.VIRTUAL_LENGTH

    def _random_chip(self, rng: np.random.Generator) -> RawChip:
        """A random chip of ``chip_px`` pixels, over a ground size zoomed by the augmentation, on imagery."""
        zoom = self.augment.zoom if self.augment else 0.0
        for _ in range(8):
            size = round(self.chip_px * np.exp(rng.uniform(-np.log1p(zoom), np.log1p(zoom)))) if zoom else self.chip_px
            chip = self.raw_chip(*random_window(self.blocks, size, rng, self.probabilities),
                                 out_px=self.chip_px)
            usable = chip.valid if chip.labelled is None else chip.valid & chip.labelled
            if usable.mean() >= self.min_valid and (chip.labelled is None or usable.any()):
                break
        return chip

    def raw_chip(self, scene_idx: int, window: Window, out_px: int | None = None) -> RawChip:
        """The image, building ids and valid pixels of a working-grid window, resampled to ``out_px`` pixels
        a side when given (a zoom: buildings look larger or smaller)."""
        source = self.sources[scene_idx]
        shape = (out_px, out_px) if out_px else (int(window.height), int(window.width))
        image, valid = source.scene.read(window, out_shape=shape)
        transform = window_transform(window, source.scene.transform) @ Affine.scale(window.width / shape[1],
                                                                                      window.height / shape[0])
        ids = building_ids(source.polygons_in(window), transform, shape)
        return RawChip(image.astype(np.float32, copy=False), ids, valid, source.labelled(transform, shape))

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, i])
        if self.windows is not None:
            return self.targets(self.raw_chip(*self.windows[i]), rng)
        chip = self._random_chip(rng)
        aug = self.augment
        if aug and aug.mosaic_prob > 0 and rng.random() < aug.mosaic_prob:
            chip = mosaic([chip] + [self._random_chip(rng) for _ in range(3)], rng)
        if aug and aug.copy_paste_prob > 0 and rng.random() < aug.copy_paste_prob:
            chip, _ = copy_paste(chip, self._random_chip(rng), rng, aug.copy_paste_max)
        return self.targets(chip, rng)

    def target_of(self, ids: np.ndarray) -> np.ndarray:
        """(h, w) float32 training target of a chip's building ids (see the class docstring)."""
        if self.target == "energy":
            return energy_target(ids, self.ramp_px)
        return shrink_each(ids, self.erode_px).astype(np.float32)

    def targets(self, chip: RawChip, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalized image, target and loss weight of a chip, then sensor degradation, flips and jitter."""
        mask = self.target_of(chip.ids)
        weight = chip.valid.astype(np.float32)
        if chip.labelled is not None:
            weight *= chip.labelled  # outside the labelled area: neither building nor background
        if self.gap_w0 > 0:
            weight *= gap_weights(chip.ids, self.gap_w0, self.gap_sigma_px)
        image = self.normalize(chip.image, chip.valid)
        if self.augment and self.augment.degrades:
            image = degrade(image, chip.valid, self.augment, rng)
        if self.augment and self.augment.jitter > 0:
            image = photometric_jitter(image, chip.valid, self.augment.jitter, rng)
        mask, weight = mask[None], weight[None]
        if self.augment and self.augment.flips:
            image, mask, weight = flip_rotate([image, mask, weight], rng)
        return torch.from_numpy(image), torch.from_numpy(mask), torch.from_numpy(weight)


def validation_windows(blocks: list[tuple[int, Window]], chip_px: int, limit: int) -> list[tuple[int, Window]]:
    """Non-overlapping chips tiling the validation blocks, at most ``limit``, spread over the blocks."""
    windows = []
    for scene_idx, block in blocks:
        for row in range(int(block.row_off), int(block.row_off + block.height) - chip_px + 1, chip_px):
            for col in range(int(block.col_off), int(block.col_off + block.width) - chip_px + 1, chip_px):
                windows.append((scene_idx, Window(col, row, chip_px, chip_px)))
    if len(windows) > limit:
        keep = np.linspace(0, len(windows) - 1, limit).round().astype(int)
        windows = [windows[i] for i in keep]
    return windows
