"""Training-recipe parts: gap weights and mixup do what they claim."""

import numpy as np
import pytest
import shapely
import torch
from affine import Affine

from openfootprints.data.chips import building_ids, gap_weights
from openfootprints.train.module import bce_dice_loss, mixup


def two_buildings_with_a_gap(gap_px: int):
    """Two 10×10 px buildings side by side, ``gap_px`` apart, in a 30×40 raster."""
    a = shapely.box(5, 10, 15, 20)
    b = shapely.box(15 + gap_px, 10, 25 + gap_px, 20)
    return building_ids(np.array([a, b]), Affine.identity(), (30, 40))


def test_gap_weight_peaks_in_a_two_metre_gap_and_not_inside_buildings():
    ids = two_buildings_with_a_gap(4)  # 4 px = 2 m at 0.5 m
    w = gap_weights(ids, w0=10.0, sigma_px=5.0)
    assert (w[ids > 0] == 1.0).all()
    gap = w[10:20, 15:19]
    assert gap.min() > 5.0  # (d1 + d2) ≤ 4 px in the gap: weight close to 1 + w0
    assert w.max() == pytest.approx(gap.max())
    assert w[2, 2] < 1.05 and w[25, 35] < 1.05  # open ground far from the pair


def test_gap_weight_falls_as_the_gap_widens():
    narrow = gap_weights(two_buildings_with_a_gap(2), 10.0, 5.0)[15, 16]
    wide = gap_weights(two_buildings_with_a_gap(10), 10.0, 5.0)[15, 20]
    assert narrow > wide > 1.0


def test_a_lone_building_gets_no_gap_weight():
    ids = building_ids(np.array([shapely.box(5, 5, 15, 15)]), Affine.identity(), (30, 30))
    assert np.allclose(gap_weights(ids, 10.0, 5.0), 1.0)


def test_weighted_loss_counts_gap_pixels_more():
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    plain, heavy = torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    heavy[..., 0, 0] = 11.0
    assert bce_dice_loss(logits, target, heavy) > bce_dice_loss(logits, target, plain)
    nodata = plain.clone()
    nodata[..., :2, :] = 0
    other_logits, other_target = logits.clone(), target.clone()
    other_logits[..., :2, :], other_target[..., :2, :] = 5.0, 1.0  # what lies in nodata does not count
    assert torch.isclose(bce_dice_loss(logits, target, nodata), bce_dice_loss(other_logits, other_target, nodata))


def test_mixup_targets_are_the_same_convex_combination_as_the_images():
    g = torch.Generator().manual_seed(0)
    image, target = torch.rand(4, 3, 8, 8, generator=g), (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
    weight = torch.ones(4, 1, 8, 8)
    weight[1, :, :2] = 0
    perm = torch.tensor([2, 3, 0, 1])
    mixed_image, mixed_target, mixed_weight = mixup(image, target, weight, 0.3, perm)
    assert torch.allclose(mixed_image, 0.3 * image + 0.7 * image[perm])
    assert torch.allclose(mixed_target, 0.3 * target + 0.7 * target[perm])
    assert ((mixed_target > 0) & (mixed_target < 1)).any()  # soft targets
    assert (mixed_weight[1, :, :2] == 0).all() and (mixed_weight[3, :, :2] == 0).all()  # no data on either side
    assert (mixed_weight[0] == 1).all()


def test_training_runs_with_gap_weights_and_mixup(tmp_path, tiny_scene):
    from openfootprints.cli import main
    from openfootprints.model.bundle import load_bundle

    out = tmp_path / "m.ofp"
    assert main(["train", "--image", str(tiny_scene[0]), "--labels", str(tiny_scene[1]), "--out", str(out),
                 "train.max_epochs=1", "data.samples_per_epoch=4", "train.batch_size=2", "data.chip_px=64",
                 "data.block_m=32", "data.val_chips=1", "model.decoder_channels=[16,16,8,8,8]",
                 "data.gap_weight_w0=10", "train.mixup_prob=1.0", f"tracking.uri=file:{tmp_path / 'mlruns'}"]) == 0
    config = load_bundle(out).training["config"]
    assert config["data"]["gap_weight_w0"] == 10 and config["train"]["mixup_prob"] == 1.0
