"""Augmentations: mosaic, copy-paste and jitter keep image, labels and weights in agreement."""

import numpy as np
import shapely
import torch
from affine import Affine
from rasterio.windows import Window

from openfootprints.data.augment import Augmentation, RawChip, copy_paste, mosaic, photometric_jitter
from openfootprints.data.chips import ChipDataset, LabelledScene, building_ids, gap_weights, shrink_each
from openfootprints.io.raster import open_scene
from openfootprints.io.vector import read_polygons


def chip_with(boxes: list[tuple[int, int, int, int]], size: int = 48, value: float = 0.0) -> RawChip:
    """A chip whose buildings (pixel boxes x0, y0, x1, y1) have pixel value 200 + index, background ``value``."""
    ids = building_ids(np.array([shapely.box(*b) for b in boxes]), Affine.identity(), (size, size))
    image = np.full((3, size, size), value, np.float32)
    for k in range(1, len(boxes) + 1):
        image[:, ids == k] = 200 + k
    return RawChip(image, ids, np.ones((size, size), bool))


def test_a_pasted_building_appears_in_image_mask_and_weight_map_alike():
    target = chip_with([(4, 4, 14, 14)], value=10.0)
    donor = chip_with([(20, 20, 30, 28)], value=99.0)
    out, pasted = copy_paste(target, donor, np.random.default_rng(0), max_buildings=1)
    assert len(pasted) == 1
    where = out.ids == pasted[0]
    assert where.sum() == (donor.ids == 1).sum()  # same size: same scale
    assert (out.image[:, where] == 201).all()  # the donor's building pixels, not its background
    assert (out.image[:, ~where & (out.ids == 0)] == 10.0).all()  # the rest of the target unchanged
    assert (out.ids == 1).sum() == (target.ids == 1).sum()  # the existing building untouched
    mask = shrink_each(out.ids)
    assert mask[where].all()
    weight = gap_weights(out.ids, 10.0, 8.0)
    assert (weight[where] == 1.0).all()
    assert weight.max() > 1.0 == gap_weights(target.ids, 10.0, 8.0).max()  # a gap now, between two buildings
    assert (target.ids == 1).sum() == 100 and target.image[0, 0, 0] == 10.0  # the input chip is not modified


def test_copy_paste_keeps_clear_of_existing_buildings_and_skips_cut_ones():
    target = chip_with([(0, 0, 48, 20)])  # the top of the chip is taken
    donor = chip_with([(0, 10, 8, 18), (20, 20, 30, 30)])  # the first touches the edge: maybe cut
    for seed in range(10):
        out, pasted = copy_paste(target, donor, np.random.default_rng(seed), clearance_px=2)
        assert len(pasted) <= 1
        for k in pasted:
            rows, _ = np.nonzero(out.ids == k)
            assert rows.min() >= 22  # two pixels of clearance below the existing building
            assert (out.ids == k).sum() == 100  # the whole 10 × 10 building, not the cut one


def test_mosaic_takes_a_quadrant_from_each_chip_and_keeps_ids_distinct():
    corners = [(2, 2, 10, 10), (38, 2, 46, 10), (2, 38, 10, 46), (38, 38, 46, 46)]  # ids 1–4: NW, NE, SW, SE
    chips = [chip_with(corners, value=float(q)) for q in range(4)]
    out = mosaic(chips, np.random.default_rng(1))  # the centre falls in [12, 36]: each corner stays whole
    assert out.image[0, 0, 0] == 0 and out.image[0, 0, -1] == 1 and out.image[0, -1, 0] == 2
    assert out.image[0, -1, -1] == 3  # quadrant q from chip q
    assert sorted(np.unique(out.ids[out.ids > 0])) == [1, 4 + 2, 8 + 3, 12 + 4]  # ids offset per chip
    for q, k in enumerate([1, 6, 11, 16]):
        assert (out.image[:, out.ids == k] == 200 + q + 1).all()  # each building's own pixels
        assert (out.ids == k).sum() == 64


def test_jitter_changes_values_but_not_nodata():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 16, 16)).astype(np.float32)
    valid = np.ones((16, 16), bool)
    valid[:4] = False
    image[:, ~valid] = 0
    out = photometric_jitter(image, valid, 0.2, np.random.default_rng(1))
    assert (out[:, ~valid] == 0).all()
    assert not np.allclose(out[:, valid], image[:, valid])
    assert np.corrcoef(out[0, valid], image[0, valid])[0, 1] > 0.99  # same picture, other gain and contrast


def test_dataset_with_every_augmentation_keeps_targets_on_the_image(tiny_scene):
    scene = open_scene(tiny_scene[0])
    source = LabelledScene(scene, read_polygons(tiny_scene[1], crs=scene.crs).geometry)
    aug = Augmentation(jitter=0.1, mosaic_prob=1.0, copy_paste_prob=1.0)
    ds = ChipDataset([source], [(0, Window(0, 0, 256, 256))], 64, [120.0] * 3, [40.0] * 3, seed=2, augment=aug,
                     gap_w0=5.0, gap_sigma_px=3.0)
    for i in range(6):
        image, mask, weight = ds[i]
        assert image.shape == (3, 64, 64) and mask.shape == weight.shape == (1, 64, 64)
        assert torch.equal(ds[i][1], mask)  # deterministic per index
        assert ((weight == 1) | (mask == 0)).all()  # weight 1 inside buildings, raised only outside
    plain = ChipDataset([source], [(0, Window(0, 0, 256, 256))], 64, [120.0] * 3, [40.0] * 3, seed=2)
    assert not torch.equal(plain[0][0], ds[0][0])
