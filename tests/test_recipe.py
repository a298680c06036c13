"""Training-recipe parts: gap weights and mixup do what they claim."""

import numpy as np
import pytest
import shapely
import torch
from affine import Affine

from openfootprints.data.chips import building_ids, gap_weights
from openfootprints.training.module import bce_dice_loss, mixup


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


@pytest.mark.slow
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


def test_rdrop_term_is_zero_for_identical_passes_and_positive_otherwise():
    from openfootprints.training.module import rdrop_kl

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    weight = torch.ones(2, 1, 8, 8)
    assert rdrop_kl(a, a, weight) == 0
    kl = rdrop_kl(a, b, weight)
    assert kl > 0 and torch.isclose(kl, rdrop_kl(b, a, weight))  # symmetric
    p, q = torch.sigmoid(a), torch.sigmoid(b)  # against the textbook Bernoulli KL
    textbook = 0.5 * ((p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log())
                      + (q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()))
    assert torch.isclose(kl, textbook.mean(), rtol=1e-4)
    weight[:, :, :4] = 0
    b2 = b.clone()
    b2[:, :, :4] = a[:, :, :4]  # where the passes agree, or there is no data, nothing counts
    assert torch.isclose(rdrop_kl(a, b2, weight), rdrop_kl(a, b, weight))


def test_dropout_makes_two_training_passes_differ_and_survives_the_bundle(tmp_path):
    from conftest import tiny_architecture
    from openfootprints.model.bundle import Bundle, load_bundle, save_bundle
    from openfootprints.model.network import build_network

    arch = tiny_architecture()
    arch.dropout, arch.drop_path = 0.2, 0.1
    net = build_network(arch).train()
    x = torch.randn(2, 3, 64, 64)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))
    path = save_bundle(Bundle(architecture=arch, bands=[1, 2, 3], mean=[0.0] * 3, std=[1.0] * 3, resolution_m=0.5,
                              state_dict=net.state_dict()), tmp_path / "d.ofp")
    again = load_bundle(path)
    assert again.architecture.dropout == 0.2
    assert torch.allclose(again.network()(x), net(x))


@pytest.mark.slow
def test_a_chip_with_flipped_labels_gets_the_highest_el2n_score(tiny_scene, cfg):
    from rasterio.windows import Window

    from conftest import tiny_architecture
    from openfootprints.data.chips import ChipDataset, LabelledScene, validation_windows
    from openfootprints.io.raster import open_scene
    from openfootprints.io.vector import read_polygons
    from openfootprints.training.diet import el2n_scores
    from openfootprints.training.run import short_fit

    scene = open_scene(tiny_scene[0])
    source = LabelledScene(scene, read_polygons(tiny_scene[1], crs=scene.crs).geometry)
    blocks = [(0, Window(0, 0, 256, 256))]
    chips = dict(chip_px=64, mean=[120.0] * 3, std=[40.0] * 3)
    cfg.train.batch_size = 4
    net = short_fit(cfg, tiny_architecture(), ChipDataset([source], blocks, seed=0, **chips), steps=25, seed=0)
    windows = validation_windows(blocks, 64, limit=100)
    honest = ChipDataset([source], blocks, windows=windows, **chips)

    class FlippedChip(torch.utils.data.Dataset):
        def __len__(self):
            return len(honest)

        def __getitem__(self, i):
            image, mask, weight = honest[i]
            return image, (1 - mask if i == 5 else mask), weight

    scores = el2n_scores(net, FlippedChip(), batch_size=4)
    assert scores.shape == (16,) and np.argmax(scores) == 5
    clean = el2n_scores(net, honest, batch_size=4)
    assert scores[5] == pytest.approx(1 - clean[5], abs=1e-5)  # |p − (1 − y)| = 1 − |p − y|


def test_prune_keeps_the_hardest_after_dropping_the_very_hardest():
    from openfootprints.training.diet import prune

    scores = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 0.05])
    kept = prune(scores, keep=0.5, offset=0.1)
    assert sorted(scores[kept].tolist()) == [0.4, 0.5, 0.6, 0.7, 0.8]  # 0.9 dropped as a likely label error
    assert len(prune(scores, keep=0.01, offset=0.0)) == 1


@pytest.mark.slow
def test_training_with_a_data_diet_writes_scores_and_gallery(tmp_path, tiny_scene):
    import pandas as pd

    from openfootprints.cli import main
    from openfootprints.model.bundle import load_bundle

    out = tmp_path / "m.ofp"
    assert main(["train", "--image", str(tiny_scene[0]), "--labels", str(tiny_scene[1]), "--out", str(out),
                 "train.max_epochs=1", "data.samples_per_epoch=4", "train.batch_size=2", "data.chip_px=64",
                 "data.block_m=64", "data.val_fraction=0.25", "data.val_chips=1",
                 "model.decoder_channels=[16,16,8,8,8]", "diet.keep=0.5", "diet.seeds=1", "diet.steps=2",
                 "diet.gallery=4", f"tracking.uri=file:{tmp_path / 'mlruns'}"]) == 0
    scores = pd.read_csv(f"{out}.el2n.csv")
    assert len(scores) == 12 and scores["kept"].sum() == 6  # 12 training chips of the 16 blocks of 64 px
    kept, dropped = scores[scores["kept"]], scores[~scores["kept"]]
    assert dropped["el2n"].max() == scores["el2n"].max()  # the offset dropped the top one
    assert kept["el2n"].min() >= dropped["el2n"].drop(dropped["el2n"].idxmax()).max()
    png = open(f"{out}.el2n.png", "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_bundle(out).training["diet"]["kept"] == 6


@pytest.mark.slow
def test_self_training_learns_from_soft_pseudo_labels(tmp_path, tiny_scene, tiny_bundle):
    from openfootprints.cli import main
    from openfootprints.data.pseudo import PseudoLabelledScene
    from openfootprints.io.raster import open_scene
    from openfootprints.model.bundle import load_bundle
    from openfootprints.training.selftrain import pseudo_label
    from rasterio.windows import Window

    probs = pseudo_label(load_config_default(), str(tiny_bundle), str(tiny_scene[0]), tmp_path / "p.tif")
    soft = PseudoLabelledScene(open_scene(tiny_scene[0]), probs).soft_target(Window(0, 0, 64, 64))
    assert soft.shape == (64, 64) and 0 <= soft.min() and soft.max() <= 1
    assert len(np.unique(soft)) > 2  # soft, not thresholded

    out = tmp_path / "student.ofp"
    assert main(["self-train", "--teacher", str(tiny_bundle), "--image", str(tiny_scene[0]), "--labels",
                 str(tiny_scene[1]), "--unlabelled", str(tiny_scene[0]), "--out", str(out),
                 "selftrain.rounds=2", "train.max_epochs=1", "data.samples_per_epoch=4", "train.batch_size=2",
                 "data.chip_px=64", "data.block_m=32", "data.val_chips=1", "model.decoder_channels=[16,16,8,8,8]",
                 f"tracking.uri=file:{tmp_path / 'mlruns'}"]) == 0
    student = load_bundle(out)
    assert student.training["self_training"]["round"] == 2
    assert student.training["self_training"]["teacher"] == str(tmp_path / "student.round1.ofp")
    assert student.architecture.dropout == 0.1 and student.architecture.drop_path == 0.1  # the student's noise
    assert student.training["config"]["augment"]["jitter"] == 0.2


def load_config_default():
    from openfootprints.configuration import load_config

    return load_config([])


def test_the_deadline_stops_training_before_a_step_and_a_validation_would_pass_it():
    from openfootprints.training.module import Deadline

    now = [0.0]
    trainer = type("T", (), {"should_stop": False})()
    deadline = Deadline(100.0, clock=lambda: now[0])
    deadline.on_validation_start(trainer, None)
    now[0] = 6.0
    deadline.on_validation_end(trainer, None)  # a validation pass takes 6 s
    for _ in range(100):
        deadline.on_train_batch_start(trainer, None, None, 0)
        now[0] += 2.0  # a step takes 2 s
        deadline.on_train_batch_end(trainer, None, None, None, 0)
        if trainer.should_stop:
            break
    assert trainer.should_stop and now[0] == 92.0  # 92 + 2 + 6 = 100: one more step and the validation fit exactly
    assert now[0] + deadline.step_s + deadline.val_s <= 100.0


def test_an_untrained_model_is_called_so():
    from openfootprints.training.run import untrained_warning

    assert "looks untrained: validation pixel IoU 0.05 after 5 steps" in untrained_warning({"val_pixel_iou": 0.05}, 5)
    assert untrained_warning({"val_pixel_iou": 0.6}, 500) is None and untrained_warning({}, 5) is None


@pytest.mark.slow
def test_training_can_start_from_a_bundle_and_records_its_parent(tmp_path, tiny_scene, tiny_bundle, capsys):
    from openfootprints.cli import main
    from openfootprints.model.bundle import load_bundle

    from openfootprints.model.bundle import save_bundle
    from openfootprints.model.lineage import lineage, totals

    parent = load_bundle(tiny_bundle)  # a parent of two stages: one before it, its own
    parent.training = {"steps": 300, "seconds": 60.0, "energy_kwh": 0.01, "scenes": [["a.tif", "a.geojson"]],
                       "stage_name": "second", "ancestry": [{"name": "first", "steps": 100, "seconds": 30.0,
                                                              "energy_kwh": 0.005, "data": [], "from": "ImageNet weights"}]}
    tiny_bundle = save_bundle(parent, tmp_path / "parent.ofp")
    out = tmp_path / "child.ofp"
    assert main(["train", "--image", str(tiny_scene[0]), "--labels", str(tiny_scene[1]), "--out", str(out),
                 f"train.init={tiny_bundle}", "model.decoder_channels=[16,16,8,8,8]", "train.max_epochs=1",
                 "data.samples_per_epoch=8", "train.batch_size=4", "data.chip_px=64", "data.block_m=32",
                 "tracking.energy=false", "train.lr=1e-9"]) == 0
    child = load_bundle(out)
    assert child.mean == parent.mean and child.std == parent.std  # the parent's normalization, kept
    assert child.training["parent"]["path"] == str(tiny_bundle)
    stages = lineage(child)  # the parent's two stages, then the child's own
    assert [s.get("name") for s in stages[:2]] == ["first", "second"] and stages[2]["from"] == "the stage before"
    assert stages[2]["steps"] == child.training["steps"] == 2 and stages[2]["data"] == [[str(p) for p in tiny_scene]]
    assert totals(stages)["steps"] == 402
    moved = max(float((child.state_dict[k].float() - v.float()).abs().max()) for k, v in parent.state_dict.items()
                if v.is_floating_point() and "running" not in k)
    assert moved < 1e-3  # started from the parent's weights (a learning rate of 1e-9 barely moves them)
    other = tmp_path / "other.ofp"
    code = main(["train", "--image", str(tiny_scene[0]), "--labels", str(tiny_scene[1]), "--out", str(other),
                 f"train.init={tiny_bundle}", "tracking.energy=false", "data.chip_px=64", "data.block_m=32"])
    assert code == 2 and "architecture" in capsys.readouterr().err and not other.exists()
