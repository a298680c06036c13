"""Augmentation of training chips: flips and rotations, photometric jitter, sensor degradation (coarser
ground resolution, blur, noise, saturation), mosaic, copy-paste.

Mosaic and copy-paste change which buildings a chip holds, so they work on a :class:`RawChip` (image in the
file's units, building ids, valid pixels) before its targets are made: the mask, label erosion and gap
weights are then computed from the composed ids, and always agree with the image. Flips, rotations and
jitter come after, on the normalized image and its targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


@dataclass
class Augmentation:
    """Which augmentations a training set applies.

    ``jitter``: strength of photometric jitter (per-band gain in 1 ± jitter, offset in ± jitter standard
    deviations, contrast in 1 ± jitter); 0 = off. ``mosaic_prob``: share of chips made of four chips.
    ``copy_paste_prob``: share of chips that get up to ``copy_paste_max`` buildings pasted from another chip.
    """

    flips: bool = True
    jitter: float = 0.0
    mosaic_prob: float = 0.0
    copy_paste_prob: float = 0.0
    copy_paste_max: int = 8
    zoom: float = 0.0  # chips read over 1/(1 + zoom) … (1 + zoom) times their ground size (building scale)
    coarsen: float = 1.0  # image degraded to up to this many times the training ground resolution, then back
    blur_px: float = 0.0  # Gaussian blur σ up to this, pixels
    noise: float = 0.0  # Gaussian noise σ up to this, standard deviations of the normalized image
    saturation: float = 0.0  # colour saturation scaled within 1 ± this

    @property
    def degrades(self) -> bool:
        return self.coarsen > 1 or self.blur_px > 0 or self.noise > 0 or self.saturation > 0


@dataclass
class RawChip:
    """A chip before its targets are made: image (C, H, W) float32 in file units, ids (H, W) int32
    (0 background, k > 0 building k), valid (H, W) bool; labelled (H, W) bool where the labels are complete
    (None: everywhere)."""

    image: np.ndarray
    ids: np.ndarray
    valid: np.ndarray
    labelled: np.ndarray | None = None


def flip_rotate(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply the same random one of the 8 flips / 90° rotations to (C, H, W) arrays."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(1, 2))
        out.append(np.ascontiguousarray(a[:, :, ::-1] if flip else a))
    return out


def photometric_jitter(image: np.ndarray, valid: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random per-band gain and offset and a global contrast change of a normalized (C, H, W) image.

    Gains and contrast are drawn in [1 − strength, 1 + strength], offsets in ±strength (standard
    deviations, since the image is normalized). Nodata pixels stay 0.
    """
    c = image.shape[0]
    gain = rng.uniform(1 - strength, 1 + strength, size=(c, 1, 1)).astype(np.float32)
    offset = rng.uniform(-strength, strength, size=(c, 1, 1)).astype(np.float32)
    contrast = np.float32(rng.uniform(1 - strength, 1 + strength))
    mean = image[:, valid].mean() if valid.any() else 0.0
    out = (image * gain + offset - mean) * contrast + mean
    return np.where(valid, out, 0.0).astype(np.float32)


def degrade(image: np.ndarray, valid: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """A normalized (C, H, W) image as another sensor might have seen it, each step with probability ½:
    coarser (resampled to a ground resolution up to ``aug.coarsen`` times the chip's and back, antialiased),
    blurred (σ up to ``aug.blur_px``), less or more saturated, noisier. Nodata pixels stay 0.
    """
    c, h, w = image.shape
    batch = torch.from_numpy(image)[None]
    if aug.coarsen > 1 and rng.random() < 0.5:
        factor = rng.uniform(1.0, aug.coarsen)
        small = (max(1, round(h / factor)), max(1, round(w / factor)))
        batch = F.interpolate(F.interpolate(batch, size=small, mode="bilinear", antialias=True, align_corners=False),
                              size=(h, w), mode="bilinear", align_corners=False)
    out = batch[0].numpy()
    if aug.blur_px > 0 and rng.random() < 0.5:
        out = ndimage.gaussian_filter(out, sigma=(0, *[rng.uniform(0, aug.blur_px)] * 2))
    if aug.saturation > 0 and c >= 3 and rng.random() < 0.5:
        grey = out[:3].mean(axis=0, keepdims=True)
        out = out.copy()
        out[:3] = grey + (out[:3] - grey) * rng.uniform(1 - aug.saturation, 1 + aug.saturation)
    if aug.noise > 0 and rng.random() < 0.5:
        out = out + rng.normal(0, rng.uniform(0, aug.noise), size=out.shape).astype(np.float32)
    return np.where(valid, out, 0.0).astype(np.float32)


def mosaic(chips: list[RawChip], rng: np.random.Generator) -> RawChip:
    """Four chips of one size and ground resolution into one (YOLOX-style mosaic, without rescaling).

    A random centre splits the chip into four quadrants; quadrant q shows the same pixels of chip q. Building
    ids of each chip are offset so they stay distinct; buildings are cut at the quadrant borders.
    """
    if len(chips) != 4:
        raise ValueError(f"mosaic takes 4 chips, got {len(chips)}")
    h, w = chips[0].ids.shape
    cy, cx = int(rng.integers(h // 4, 3 * h // 4 + 1)), int(rng.integers(w // 4, 3 * w // 4 + 1))
    any_area = any(c.labelled is not None for c in chips)
    out = RawChip(np.zeros_like(chips[0].image), np.zeros((h, w), np.int32), np.zeros((h, w), bool),
                  np.zeros((h, w), bool) if any_area else None)
    quadrants = [(slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w)),
                 (slice(cy, h), slice(0, cx)), (slice(cy, h), slice(cx, w))]
    offset = 0
    for chip, (rows, cols) in zip(chips, quadrants):
        out.image[:, rows, cols] = chip.image[:, rows, cols]
        ids = chip.ids[rows, cols]
        out.ids[rows, cols] = np.where(ids > 0, ids + offset, 0)
        out.valid[rows, cols] = chip.valid[rows, cols]
        if out.labelled is not None:  # some chip has a labelled area
            out.labelled[rows, cols] = True if chip.labelled is None else chip.labelled[rows, cols]
        offset += int(chip.ids.max())
    return out


def copy_paste(target: RawChip, donor: RawChip, rng: np.random.Generator, max_buildings: int = 8,
               clearance_px: int = 2, tries: int = 10) -> tuple[RawChip, list[int]]:
    """Paste up to ``max_buildings`` whole buildings of ``donor`` into ``target`` at their own scale.

    Only buildings that lie wholly inside the donor chip on valid pixels are taken. Each goes to a random
    place where the target is valid and has no building within ``clearance_px`` pixels (so pasted buildings
    neither cover nor touch existing ones); a building that finds no such place in ``tries`` draws is skipped.
    Its pixels replace the target's in the image, and it gets a new id. Returns the new chip and the ids of
    the pasted buildings.
    """
    out = RawChip(target.image.copy(), target.ids.copy(), target.valid.copy(),
                  None if target.labelled is None else target.labelled.copy())
    h, w = out.ids.shape
    boxes = ndimage.find_objects(donor.ids)
    whole = [k for k, box in enumerate(boxes, start=1) if box is not None and _inside(box, h, w)
             and donor.valid[box][donor.ids[box] == k].all()]
    picked: np.ndarray | list[int] = rng.permutation(whole)[:max_buildings] if whole else []
    next_id, pasted = int(out.ids.max()) + 1, []
    for k in picked:
        box = boxes[k - 1]
        shape = donor.ids[box] == k
        place = _free_place(out, shape, clearance_px, tries, rng)
        if place is None:
            continue
        region = out.image[:, place[0], place[1]]
        region[:, shape] = donor.image[:, box[0], box[1]][:, shape]
        out.ids[place][shape] = next_id
        if out.labelled is not None:
            out.labelled[place][shape] = True  # a pasted building is a true label wherever it lands
        pasted.append(next_id)
        next_id += 1
    return out, pasted


def _inside(box: tuple[slice, slice], h: int, w: int) -> bool:
    """Whether a bounding box keeps off the chip's edge (a building touching the edge may be cut)."""
    return box[0].start > 0 and box[1].start > 0 and box[0].stop < h and box[1].stop < w


def _free_place(chip: RawChip, shape: np.ndarray, clearance: int, tries: int,
                rng: np.random.Generator) -> tuple[slice, slice] | None:
    """A random (rows, cols) box for ``shape`` on valid pixels with no building within ``clearance`` pixels."""
    h, w = chip.ids.shape
    bh, bw = shape.shape
    if bh + 2 * clearance > h or bw + 2 * clearance > w:
        return None
    for _ in range(tries):
        r = int(rng.integers(clearance, h - bh - clearance + 1))
        c = int(rng.integers(clearance, w - bw - clearance + 1))
        around = chip.ids[r - clearance: r + bh + clearance, c - clearance: c + bw + clearance]
        if not around.any() and chip.valid[r: r + bh, c: c + bw][shape].all():
            return slice(r, r + bh), slice(c, c + bw)
    return None
