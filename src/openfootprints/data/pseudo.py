"""Chips with soft pseudo-labels: unlabelled imagery and a teacher's probability raster over it.

Noisy-student self-training (Xie et al. 2020; Open Buildings) trains a student on labelled chips and on
these, with the teacher's probabilities as soft per-pixel targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from openfootprints.data.augment import Augmentation, flip_rotate, photometric_jitter
from openfootprints.data.chips import ChipDataset, random_window
from openfootprints.data.normalize import Normalization
from openfootprints.errors import InputError
from openfootprints.io.raster import Scene


@dataclass
class PseudoLabelledScene:
    """A scene and the teacher's probability raster (uint8, value / 255) on the scene's working grid."""

    scene: Scene
    probabilities: Path

    def soft_target(self, window: Window) -> np.ndarray:
        """(h, w) float32 building probabilities in [0, 1] of a working-grid window."""
        with rasterio.open(self.probabilities) as src:
            if (src.width, src.height) != (self.scene.width, self.scene.height):
                raise InputError(f"{self.probabilities}: {src.width}×{src.height} px, but the scene's grid is "
                                 f"{self.scene.width}×{self.scene.height}")
            return src.read(1, window=window).astype(np.float32) / 255.0


class PseudoChipDataset(torch.utils.data.Dataset):
    """Random chips of ``chip_px`` pixels from blocks of pseudo-labelled scenes.

    Item ``i`` is ``(image (C, H, W) float32 normalized, soft target (1, H, W) float32 in [0, 1], weight
    (1, H, W) float32: 1 on valid pixels, 0 on nodata)``, at a place drawn from a generator seeded with
    ``(seed, i)``, with flips, rotations and jitter as ``augment`` says (the student's input noise).
    """

    VIRTUAL_LENGTH = 2**31 - 1

    def __init__(self, sources: list[PseudoLabelledScene], blocks: list[tuple[int, Window]], chip_px: int,
                 mean: list[float], std: list[float], seed: int = 0, augment: Augmentation | None = None):
        self.sources, self.blocks, self.chip_px, self.seed, self.augment = sources, blocks, chip_px, seed, augment
        self.normalize = Normalization(mean, std)

    def __len__(self) -> int:
        return self.VIRTUAL_LENGTH

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, i])
        scene_idx, window = random_window(self.blocks, self.chip_px, rng)
        source = self.sources[scene_idx]
        image, valid = source.scene.read(window)
        target = source.soft_target(window)[None]
        image = self.normalize(image, valid)
        if self.augment and self.augment.jitter > 0:
            image = photometric_jitter(image, valid, self.augment.jitter, rng)
        weight = valid[None].astype(np.float32)
        if self.augment and self.augment.flips:
            image, target, weight = flip_rotate([image, target, weight], rng)
        return torch.from_numpy(image), torch.from_numpy(target), torch.from_numpy(weight)


class MixedDataset(torch.utils.data.Dataset):
    """Item ``i`` from ``second`` with probability ``fraction`` (drawn from ``(seed, i)``), else from ``first``."""

    def __init__(self, first: ChipDataset | PseudoChipDataset, second: ChipDataset | PseudoChipDataset,
                 fraction: float, seed: int = 0):
        self.first, self.second, self.fraction, self.seed = first, second, fraction, seed

    def __len__(self) -> int:
        return min(len(self.first), len(self.second))

    def __getitem__(self, i: int):
        use_second = np.random.default_rng([self.seed, i, 1]).random() < self.fraction
        return (self.second if use_second else self.first)[i]
