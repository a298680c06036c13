import numpy as np
import shapely
import torch
from affine import Affine
from rasterio.windows import Window

from openfootprints.data.augment import flip_rotate
from openfootprints.data.chips import (ChipDataset, LabelledScene, building_mask, split_blocks,
                                       validation_windows)
from openfootprints.io.raster import open_scene
from openfootprints.io.vector import read_polygons


def test_erosion_opens_a_gap_between_buildings_that_share_a_wall():
    left, right = shapely.box(2, 2, 10, 10), shapely.box(10, 2, 18, 10)
    whole = building_mask(np.array([left, right]), Affine.identity(), (12, 20))
    eroded = building_mask(np.array([left, right]), Affine.identity(), (12, 20), erode_px=1)
    from scipy import ndimage

    assert ndimage.label(whole)[1] == 1  # touching: one blob
    assert ndimage.label(eroded)[1] == 2  # eroded: two buildings
    assert eroded.sum() == 2 * 6 * 6


def test_split_is_by_whole_blocks_and_respects_the_holdout(tiny_scene):
    scene = open_scene(tiny_scene[0])
    train, val = split_blocks(scene, 64, 0.25, seed=0)
    assert len(train) + len(val) == 16 and len(val) == 4
    assert not {(w.col_off, w.row_off) for w in train} & {(w.col_off, w.row_off) for w in val}
    left, bottom, right, top = scene.bounds
    exclude = (left, bottom, left + (right - left) / 2 - 1, top)  # the west half
    train2, val2 = split_blocks(scene, 64, 0.25, seed=0, exclude=exclude)
    assert all(w.col_off >= 128 for w in train2 + val2) and len(train2) + len(val2) == 8


def test_chips_are_deterministic_and_labels_match_the_image(tiny_scene):
    scene = open_scene(tiny_scene[0])
    polygons = read_polygons(tiny_scene[1], crs=scene.crs).geometry
    source = LabelledScene(scene, polygons)
    blocks = [(0, Window(0, 0, 256, 256))]
    ds = ChipDataset([source], blocks, 64, [0, 0, 0], [1, 1, 1], seed=1)
    (a, ma, va), (b, mb, vb) = ds[7], ds[7]
    assert torch.equal(va, vb)
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert a.shape == (3, 64, 64) and ma.shape == (1, 64, 64) and va.all()
    full = building_mask(polygons.to_numpy(), scene.transform, (256, 256))
    fixed = ChipDataset([source], blocks, 64, [0, 0, 0], [1, 1, 1], windows=[(0, Window(64, 128, 64, 64))])
    _, mask, _ = fixed[0]
    assert np.array_equal(mask[0].numpy(), full[128:192, 64:128])


def test_flip_rotate_moves_image_and_mask_together():
    rng = np.random.default_rng(3)
    image = rng.random((3, 8, 8)).astype(np.float32)
    mask = (image[:1] > 0.5).astype(np.float32)
    for seed in range(8):
        a, m = flip_rotate([image, mask], np.random.default_rng(seed))
        assert np.array_equal(m, (a[:1] > 0.5).astype(np.float32))


def test_validation_windows_tile_the_blocks():
    wins = validation_windows([(0, Window(0, 0, 128, 128)), (1, Window(128, 0, 128, 128))], 64, limit=100)
    assert len(wins) == 8
    assert len(validation_windows([(0, Window(0, 0, 128, 128))], 64, limit=2)) == 2


def test_the_margins_of_a_scene_that_is_not_a_multiple_of_the_block_are_sampled(tmp_path):
    from openfootprints.synth.scene import SceneSpec, write_scene

    write_scene(SceneSpec(width=200, height=150, seed=4), tmp_path / "s.tif", tmp_path / "s.geojson")
    scene = open_scene(tmp_path / "s.tif")
    train, val = split_blocks(scene, 64, 0.25, seed=0)
    covered = np.zeros((150, 200), bool)
    for w in train + val:
        covered[int(w.row_off):int(w.row_off + w.height), int(w.col_off):int(w.col_off + w.width)] = True
        assert w.width == w.height == 64 and w.row_off + 64 <= 150 and w.col_off + 64 <= 200
    val_pixels = np.zeros((150, 200), bool)
    for w in val:
        val_pixels[int(w.row_off):int(w.row_off + 64), int(w.col_off):int(w.col_off + 64)] = True
    for w in train:  # the split stays spatial: no training block reaches into a validation block
        assert not val_pixels[int(w.row_off):int(w.row_off + 64), int(w.col_off):int(w.col_off + 64)].any()
    assert covered[:, 192:].any() and covered[128:, :].any()  # the right and bottom margins are used
    assert covered.mean() > 0.9  # a block dropped where its neighbours went to both sides, at most
