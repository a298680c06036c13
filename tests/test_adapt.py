"""Adapting to a new place: labelled areas, fine-tuning from a bundle, OpenStreetMap labels, where to label next."""

import json
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch

from openfootprints.cli import main
from openfootprints.configuration import load_config
from openfootprints.data.chips import ChipDataset
from openfootprints.io.vector import read_polygons
from openfootprints.model.bundle import load_bundle
from openfootprints.labelling import ChipScore, best_chips, novelty, uncertainty
from openfootprints.synth.scene import SceneSpec, write_scene
from openfootprints.training.run import load_labelled_scenes, split_all

SMALL = ["data.chip_px=64", "data.block_m=32", "train.batch_size=4", "data.samples_per_epoch=8",
         "train.max_epochs=1", "tracking.energy=false"]


@pytest.fixture(scope="module")
def half_labelled(tmp_path_factory):
    """A synthetic scene whose footprints east of the middle are removed, the west half as the labelled area,
    and the removed footprints (EPSG:4326 GeoJSON files)."""
    d = tmp_path_factory.mktemp("half")
    image, labels = d / "scene.tif", d / "all.geojson"
    write_scene(SceneSpec(width=256, height=256, resolution_m=0.5, seed=21), image, labels)
    frame = gpd.read_file(labels)
    west, south, east, north = frame.to_crs(32631).total_bounds  # synthetic scenes are in UTM
    import rasterio
    with rasterio.open(image) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    middle = (left + right) / 2
    area = shapely.box(left, bottom, middle, top)
    local = frame.to_crs(crs)
    inside = local.geometry.within(area)
    kept, removed = d / "west.geojson", d / "east.geojson"
    frame[inside.to_numpy()].to_file(kept)
    frame[(~local.geometry.intersects(area)).to_numpy()].to_file(removed)
    gpd.GeoDataFrame(geometry=[area], crs=crs).to_crs(4326).to_file(d / "area.geojson")
    return dict(image=str(image), labels=str(kept), removed=str(removed), area=str(d / "area.geojson"), crs=crs)


def chips_of(half, *overrides):
    cfg = load_config(["data.resolution_m=0.5", "data.chip_px=64", "data.block_m=32", *overrides])
    sources = load_labelled_scenes([(half["image"], half["labels"])], cfg)
    train_blocks, _ = split_all(sources, cfg)
    return sources, ChipDataset(sources, train_blocks, chip_px=64, mean=[0.0] * 3, std=[1.0] * 3, seed=1)


def test_outside_the_labelled_area_nothing_is_learnt_and_unlabelled_buildings_carry_no_loss(half_labelled):
    sources, chips = chips_of(half_labelled, f"data.areas=[{half_labelled['area']}]")
    scene = sources[0].scene
    removed = read_polygons(half_labelled["removed"], crs=scene.crs).geometry.to_numpy()
    seen_weight = 0
    for i in range(24):
        _, _, weight = chips[i]
        seen_weight += float(weight.sum())
    assert seen_weight > 0
    for _, block in chips.blocks:  # every training block touches the labelled area
        assert scene.window_box(block).intersects(sources[0].area)
    # a chip over the removed buildings: their pixels, outside the area, have weight 0 (not "background")
    from openfootprints.data.chips import building_ids
    from rasterio.windows import Window, transform as window_transform
    window = Window(128, 0, 128, 256)
    raw = chips.raw_chip(0, window)
    _, target, weight = chips.targets(raw, np.random.default_rng(0))
    unlabelled = building_ids(removed, window_transform(window, scene.transform), (256, 128)) > 0
    assert unlabelled.any()
    assert float(weight[0][torch.from_numpy(unlabelled)].max()) == 0.0


def test_without_an_area_the_unlabelled_buildings_are_taught_as_background(half_labelled):
    sources, chips = chips_of(half_labelled)
    scene = sources[0].scene
    removed = read_polygons(half_labelled["removed"], crs=scene.crs).geometry.to_numpy()
    from openfootprints.data.chips import building_ids
    from rasterio.windows import Window, transform as window_transform
    window = Window(128, 0, 128, 256)
    _, target, weight = chips.targets(chips.raw_chip(0, window), np.random.default_rng(0))
    unlabelled = torch.from_numpy(building_ids(removed, window_transform(window, scene.transform), (256, 128)) > 0)
    assert float(weight[0][unlabelled].min()) == 1.0 and float(target[0][unlabelled].max()) == 0.0


def test_an_area_that_misses_the_imagery_is_an_error(half_labelled, tmp_path, capsys):
    far = tmp_path / "far.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(10, 10, 10.01, 10.01)], crs=4326).to_file(far)
    code = main(["train", "--image", half_labelled["image"], "--labels", half_labelled["labels"], "--area", str(far),
                 "--out", str(tmp_path / "m.ofp"), *SMALL])
    err = capsys.readouterr().err
    assert code == 2 and "far.geojson" in err and "overlaps the imagery" in err
    assert not (tmp_path / "m.ofp").exists()


def test_area_must_follow_its_image(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--area", "a.geojson", "--image", "x.tif", "--labels", "y.geojson"])
    assert "--area" in capsys.readouterr().err


@pytest.mark.slow
def test_finetune_keeps_the_parents_contract_and_records_it(half_labelled, tiny_bundle, tmp_path, capsys):
    from openfootprints.model.bundle import save_bundle

    out = tmp_path / "child.ofp"
    with_cut = load_bundle(tiny_bundle)
    with_cut.min_confidence = 0.7  # the parent's confidence cut, chosen on its own validation chips
    with_cut.training = {"config": {"data": {"gap_weight_w0": 10.0, "gap_sigma_m": 2.0}}}  # and its gap weights
    tiny_bundle = save_bundle(with_cut, tmp_path / "parent.ofp")
    # the config asks for another resolution, target and encoder: the parent's win
    assert main(["finetune", "--model", str(tiny_bundle), "--image", half_labelled["image"], "--labels",
                 half_labelled["labels"], "--area", half_labelled["area"], "--out", str(out),
                 "data.resolution_m=0.3", "data.target=energy", "model.encoder=resnet18", *SMALL]) == 0
    parent, child = load_bundle(tiny_bundle), load_bundle(out)
    assert child.resolution_m == pytest.approx(parent.resolution_m) and child.bands == parent.bands
    assert child.target == parent.target and child.architecture == parent.architecture
    assert child.mean == parent.mean and child.std == parent.std
    assert child.training["parent"]["path"] == str(tiny_bundle)
    assert child.training["config"]["train"]["lr"] == load_config([]).finetune.lr
    assert child.training["areas"] == [half_labelled["area"]]
    # a few labels leave too few validation buildings to choose a cut: the parent's is kept
    assert child.min_confidence == 0.7 and child.training["confidence_cut"]["inherited"]
    assert child.training["config"]["data"]["gap_weight_w0"] == 10.0
    assert child.training["config"]["data"]["gap_sigma_m"] == 2.0
    # the parent scored on the same validation chips before the first step, the same way (its cut kept there too)
    before, after = child.training["parent"]["validation"], child.training["confidence_cut"]
    assert before["n_true"] == after["n_true"] > 0 and before["inherited"] and before["min_confidence"] == 0.7
    assert "too few to tell whether it beats its parent" in capsys.readouterr().out
    # scoring the parent first leaves the network in training mode: its batch-norm statistics learnt this place
    running = [k for k in parent.state_dict if k.endswith("running_mean")]
    assert running and any(not torch.equal(parent.state_dict[k].float(), child.state_dict[k].float()) for k in running)


def test_a_fine_tune_is_compared_with_its_parent_on_its_held_back_buildings():
    from openfootprints.training.finetune import against_parent

    def bundle(after: float, before: float, n: int = 150):
        cut = {"f1": after, "n_true": n}
        return SimpleNamespace(training={"confidence_cut": cut, "parent": {"validation": {"f1": before, "n_true": n}}})

    better = against_parent(bundle(0.61, 0.44))
    assert better.startswith("F1 on the 150 held-back buildings of the validation chips: 0.61, its parent 0.44")
    assert "no better" not in better
    assert "no better than its parent here" in against_parent(bundle(0.43, 0.44))
    assert "no better than its parent here" in against_parent(bundle(0.44, 0.44))
    assert "too few to tell" in against_parent(bundle(0.9, 0.1, n=12))
    assert against_parent(SimpleNamespace(training={"confidence_cut": {"f1": 0.5, "n_true": 150}})) is None


def test_finetune_learns_as_its_parent_learnt_unless_the_config_says_otherwise(tiny_bundle):
    from openfootprints.training.finetune import finetune_config

    parent = load_bundle(tiny_bundle)
    parent.training = {"config": {"data": {"chip_px": 256, "gap_weight_w0": 10.0, "gap_sigma_m": 2.0,
                                           "areas": ["elsewhere.geojson"], "fix_invalid": True, "split_seed": 1},
                                  "augment": {"zoom": 0.4, "saturation": 0.9}}}
    cfg = finetune_config(load_config(["augment.zoom=0.1"]), parent, "parent.ofp")
    assert cfg.data.chip_px == 256 and cfg.data.gap_weight_w0 == 10.0 and cfg.data.gap_sigma_m == 2.0
    assert cfg.augment.saturation == 0.9 and cfg.augment.zoom == 0.1  # what the config sets wins
    assert cfg.data.areas is None and cfg.data.fix_invalid is False  # the place's own, never the parent's
    assert cfg.data.split_seed is None  # a new place's split is drawn by this run's seed
    as_given = finetune_config(load_config(["finetune.recipe=config"]), parent, "parent.ofp")
    defaults = load_config([])
    assert as_given.data.chip_px == defaults.data.chip_px and as_given.data.gap_weight_w0 == 0.0
    assert as_given.augment.zoom == defaults.augment.zoom


@pytest.mark.slow
def test_finetune_with_a_frozen_encoder_changes_only_the_decoder(half_labelled, tiny_bundle, tmp_path):
    out = tmp_path / "frozen.ofp"
    assert main(["finetune", "--model", str(tiny_bundle), "--image", half_labelled["image"], "--labels",
                 half_labelled["labels"], "--out", str(out), "train.freeze_encoder=true",
                 "train.init_normalization=adapt", "finetune.lr=0.01", *SMALL]) == 0
    parent, child = load_bundle(tiny_bundle), load_bundle(out)
    changed = {k for k, v in parent.state_dict.items()
               if v.is_floating_point() and not torch.equal(v.float(), child.state_dict[k].float())}
    assert changed and all(not k.startswith("encoder.") for k in changed)
    assert child.mean != parent.mean  # adapted to this imagery


def test_finetune_refuses_imagery_without_the_bundles_bands(tiny_bundle, tmp_path, capsys):
    import rasterio
    grey = tmp_path / "grey.tif"
    with rasterio.open(grey, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32631",
                       transform=rasterio.transform.from_origin(500000, 1000, 0.5, 0.5)) as dst:
        dst.write(np.zeros((1, 64, 64), np.uint8))
    labels = tmp_path / "l.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(500005, 980, 500010, 985)], crs=32631).to_file(labels)
    code = main(["finetune", "--model", str(tiny_bundle), "--image", str(grey), "--labels", str(labels),
                 "--out", str(tmp_path / "c.ofp"), *SMALL])
    err = capsys.readouterr().err
    assert code == 2 and "grey.tif" in err and "band" in err
    assert not (tmp_path / "c.ofp").exists()


OSM = """<?xml version="1.0" encoding="UTF-8"?>
<osm version="0.6" generator="openfootprints-test">
  <node id="1" lat="0.0" lon="0.0"/><node id="2" lat="0.0" lon="0.0002"/>
  <node id="3" lat="0.0002" lon="0.0002"/><node id="4" lat="0.0002" lon="0.0"/>
  <node id="5" lat="0.001" lon="0.001"/><node id="6" lat="0.001" lon="0.0012"/>
  <node id="7" lat="0.0012" lon="0.0012"/><node id="8" lat="0.0012" lon="0.001"/>
  <node id="9" lat="0.002" lon="0.002"/><node id="10" lat="0.002" lon="0.0022"/>
  <node id="11" lat="0.0022" lon="0.0022"/><node id="12" lat="0.0022" lon="0.002"/>
  <node id="13" lat="0.003" lon="0.003"/><node id="14" lat="0.003" lon="0.0032"/>
  <node id="15" lat="0.0032" lon="0.0032"/><node id="16" lat="0.0032" lon="0.003"/>
  <way id="100"><nd ref="1"/><nd ref="2"/><nd ref="3"/><nd ref="4"/><nd ref="1"/><tag k="building" v="yes"/></way>
  <way id="101"><nd ref="5"/><nd ref="6"/><nd ref="7"/><nd ref="8"/><nd ref="5"/><tag k="landuse" v="grass"/></way>
  <way id="102"><nd ref="9"/><nd ref="10"/><nd ref="11"/><nd ref="12"/><nd ref="9"/></way>
  <way id="103"><nd ref="13"/><nd ref="14"/><nd ref="15"/><nd ref="16"/><nd ref="13"/><tag k="building" v="no"/></way>
  <relation id="200"><member type="way" ref="102" role="outer"/><tag k="type" v="multipolygon"/>
    <tag k="building" v="house"/></relation>
</osm>
"""


def test_openstreetmap_buildings_are_read_from_ways_and_multipolygons(tmp_path):
    path = tmp_path / "extract.osm"
    path.write_text(OSM)
    frame = read_polygons(path, crs="EPSG:32631")
    assert sorted(frame["building"]) == ["house", "yes"]  # not the grass, not building=no
    assert frame.crs.to_epsg() == 32631
    assert all(20 < a < 25 * 25 for a in frame.geometry.area)  # ≈ 22 m squares, reprojected to metres


def test_an_openstreetmap_file_without_buildings_is_an_error(tmp_path):
    from openfootprints.errors import InputError
    path = tmp_path / "none.osm"
    path.write_text(OSM.replace('k="building"', 'k="amenity"'))
    with pytest.raises(InputError, match="none.osm: no building"):
        read_polygons(path)


def test_uncertainty_is_zero_when_sure_and_one_at_a_coin_toss():
    valid = np.ones((4, 4), bool)
    assert uncertainty(np.zeros((4, 4)), valid) == 0 and uncertainty(np.ones((4, 4)), valid) == 0
    assert uncertainty(np.full((4, 4), 0.5), valid) == 1


def test_an_energy_model_is_sure_on_outlines_and_unsure_between_background_and_outline():
    from openfootprints.labelling import building_probability

    valid = np.ones((4, 4), bool)
    energy = SimpleNamespace(target="energy", threshold=0.5)
    outline, gap, core = (np.full((4, 4), v) for v in (0.5, 0.25, 0.9))
    assert uncertainty(building_probability(outline, energy), valid) == 0  # a label's own value: sure
    assert uncertainty(building_probability(core, energy), valid) == 0
    assert uncertainty(building_probability(gap, energy), valid) == 1  # no label is 0.25: unsure
    mask = SimpleNamespace(target="eroded", threshold=0.5)
    assert uncertainty(building_probability(outline, mask), valid) == 1  # a mask model's 0.5 is a coin toss


def test_novelty_grows_as_a_chip_moves_away_from_the_training_statistics():
    rng = np.random.default_rng(0)
    valid = np.ones((32, 32), bool)
    like = rng.normal(100, 20, size=(3, 32, 32))
    values = [novelty(like + shift, valid, [100.0] * 3, [20.0] * 3) for shift in (0, 20, 60)]
    assert values[0] < 0.1 and values[0] < values[1] < values[2] < 1


def test_best_chips_rank_by_uncertainty_plus_weighted_novelty():
    from rasterio.windows import Window
    chips = [ChipScore(Window(i, 0, 1, 1), u, n, 0.0) for i, (u, n) in enumerate([(0.2, 0.9), (0.5, 0.0), (0.1, 0.1)])]
    assert [c.window.col_off for c in best_chips(chips, 2, 0.0)] == [1, 0]
    assert [c.window.col_off for c in best_chips(chips, 2, 1.0)] == [0, 1]


def test_suggest_writes_ranked_boxes_on_the_scene(half_labelled, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "next.geojson"
    assert main(["suggest", half_labelled["image"], "--model", str(tiny_bundle), "--n", "3", "--out", str(out),
                 "--quiet", "suggest.chip_m=32"]) == 0
    chips = gpd.read_file(out)
    assert list(chips["rank"]) == [1, 2, 3] and chips.crs.to_epsg() == 4326
    assert list(chips["score"]) == sorted(chips["score"], reverse=True)
    assert all(0 <= u <= 1 for u in chips["uncertainty"])
    scene_box = gpd.read_file(half_labelled["area"]).to_crs(half_labelled["crs"]).total_bounds
    sides = chips.to_crs(half_labelled["crs"]).geometry.bounds
    assert np.allclose(sides["maxx"] - sides["minx"], 32, atol=0.6)  # 64 px of 0.5 m
    assert (sides["minx"] >= scene_box[0] - 1).all()
    assert "3 chips" in capsys.readouterr().out
    assert json.loads(out.read_text())["type"] == "FeatureCollection"
    west = gpd.read_file(half_labelled["area"]).total_bounds  # the task area: the west half, in degrees
    task = tmp_path / "task.geojson"
    assert main(["suggest", half_labelled["image"], "--model", str(tiny_bundle), "--n", "50", "--out", str(task),
                 "--quiet", "suggest.chip_m=32", f"suggest.bbox=[{','.join(map(str, west))}]"]) == 0
    inside = gpd.read_file(task)
    assert 0 < len(inside) < 16 and inside.geometry.within(shapely.box(*west).buffer(1e-7)).all()
    assert main(["suggest", half_labelled["image"], "--model", str(tiny_bundle), "--out", str(task), "--quiet",
                 "suggest.bbox=[0,0,0.0001,0.0001]"]) == 2
    assert "inside suggest.bbox" in capsys.readouterr().err


def mean_probability_on(model, half, polygons_path, tmp_path) -> float:
    """The model's mean building probability over the pixels of the given footprints."""
    from openfootprints.model.onnx import load_model
    from openfootprints.predict.probabilities import predict_probabilities
    from openfootprints.io.raster import open_scene
    import rasterio
    from openfootprints.data.chips import building_ids

    bundle = load_model(model)
    scene = open_scene(half["image"], bands=bundle.bands, resolution_m=bundle.resolution_m)
    path = predict_probabilities(scene, bundle, tmp_path / f"{model.stem}.tif", progress=False, window=128,
                                 halo_m=8.0)
    with rasterio.open(path) as src:
        p = src.read(1) / 255.0
    polygons = read_polygons(polygons_path, crs=scene.crs).geometry.to_numpy()
    return float(p[building_ids(polygons, scene.transform, p.shape) > 0].mean())


@pytest.mark.slow
def test_with_the_area_given_the_model_does_not_learn_the_unlabelled_buildings_as_background(half_labelled, tmp_path):
    runs = {}
    for name, area in (("with_area", ["--area", half_labelled["area"]]), ("without", [])):
        out = tmp_path / f"{name}.ofp"
        assert main(["train", "--image", half_labelled["image"], "--labels", half_labelled["labels"], *area,
                     "--out", str(out), "data.chip_px=64", "data.block_m=32", "train.batch_size=8",
                     "data.samples_per_epoch=960", "train.max_epochs=1", "data.val_fraction=0",
                     "tracking.energy=false", "model.decoder_channels=[16,16,8,8,8]", "train.lr=0.01"]) == 0
        unlabelled = mean_probability_on(out, half_labelled, half_labelled["removed"], tmp_path)
        labelled = mean_probability_on(out, half_labelled, half_labelled["labels"], tmp_path)
        runs[name] = unlabelled / labelled  # the unlabelled buildings against the labelled ones, same model
    # with the area, the buildings nobody labelled look much like the labelled ones to the model; without it, they
    # are pushed towards background (measured: 0.75 against 0.48 after these 120 steps)
    assert runs["with_area"] > 0.6 and runs["without"] < runs["with_area"] - 0.15, runs


def anchored_fit(anchor_decay: float, weight_decay: float = 0.0) -> tuple[torch.nn.Module, dict]:
    """A tiny network fitted 6 steps from fixed weights on random chips; returns it and its starting weights."""
    import lightning as L

    from openfootprints.training.module import SegmentationModule

    L.seed_everything(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 16, 16), (torch.rand(12, 1, 16, 16) > 0.5).float(),
                                          torch.ones(12, 1, 16, 16))
    module = SegmentationModule(net, lr=0.05, weight_decay=weight_decay, total_steps=6, anchor_decay=anchor_decay)
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    return net, start


def test_anchor_decay_keeps_fine_tuned_weights_near_their_start():
    free, start = anchored_fit(0.0)
    anchored, same_start = anchored_fit(5.0)
    assert all(torch.equal(start[k], same_start[k]) for k in start)

    def drift(net):
        return sum(float((v - start[k]).norm()) for k, v in net.state_dict().items())

    assert 0 < drift(anchored) < 0.9 * drift(free)


def test_anchor_decay_replaces_weight_decay():
    # with the anchor on, weight decay towards zero is off: a huge weight_decay changes nothing
    plain, _ = anchored_fit(5.0, weight_decay=0.0)
    heavy, _ = anchored_fit(5.0, weight_decay=50.0)
    assert all(torch.allclose(v, heavy.state_dict()[k]) for k, v in plain.state_dict().items())


@pytest.fixture(scope="module")
def labelled_tiles(tmp_path_factory):
    """A synthetic scene cut into four separate 200 px GeoTIFF tiles (0.5 m) with their own labels, as fAIr and
    many mappers keep them; the fourth tile's labels are an empty file (a tile marked as having no building)."""
    import rasterio
    from rasterio.windows import Window, transform as window_transform

    d = tmp_path_factory.mktemp("tiles")
    write_scene(SceneSpec(width=400, height=400, resolution_m=0.5, seed=5), d / "scene.tif", d / "all.geojson")
    truth = gpd.read_file(d / "all.geojson")
    pairs = []
    with rasterio.open(d / "scene.tif") as src:
        for k, (row, col) in enumerate([(0, 0), (0, 200), (200, 0), (200, 200)]):
            window = Window(col, row, 200, 200)
            profile = {**src.profile, "width": 200, "height": 200, "transform": window_transform(window, src.transform)}
            image, labels = d / f"tile{k}.tif", d / f"tile{k}.geojson"
            with rasterio.open(image, "w", **profile) as dst:
                dst.write(src.read(window=window))
            box = gpd.GeoSeries([shapely.box(*rasterio.windows.bounds(window, src.transform))], crs=src.crs)
            inside = truth[truth.to_crs(src.crs).intersects(box.iloc[0]).to_numpy()] if k < 3 else truth.iloc[:0]
            inside.to_file(labels, driver="GeoJSON")
            pairs.append((str(image), str(labels)))
    return pairs


def test_separate_small_tiles_train_with_chips_fitted_to_them_and_whole_tiles_for_validation(labelled_tiles, caplog):
    from openfootprints.training.run import chips_fitted

    cfg = load_config(["data.resolution_m=0.5", "data.chip_px=256", "data.block_m=256"])
    with caplog.at_level("INFO"):
        sources = load_labelled_scenes(labelled_tiles, cfg)
    assert [len(s.polygons) > 0 for s in sources] == [True, True, True, False]  # the empty tile is a negative
    assert "taken as imagery with no building" in caplog.text
    fitted = chips_fitted(cfg, sources)
    assert fitted.data.chip_px == 192 and cfg.data.chip_px == 256  # 200 px tiles: the largest multiple of 32
    train_blocks, val_blocks = split_all(sources, fitted)
    assert len(val_blocks) == 1 and len(train_blocks) == 3  # whole tiles: one of four for validation
    assert {idx for idx, _ in train_blocks} | {idx for idx, _ in val_blocks} == {0, 1, 2, 3}
    chips = ChipDataset(sources, train_blocks, chip_px=192, mean=[0.0] * 3, std=[1.0] * 3, seed=1)
    image, target, weight = chips[0]
    assert image.shape == (3, 192, 192) and target.shape == weight.shape == (1, 192, 192)


def test_labels_with_no_building_anywhere_are_still_an_error(labelled_tiles):
    from openfootprints.errors import InputError

    cfg = load_config(["data.resolution_m=0.5"])
    empty = labelled_tiles[3][1]
    with pytest.raises(InputError, match="contains no geometries"):
        load_labelled_scenes([(labelled_tiles[0][0], empty), (labelled_tiles[1][0], empty)], cfg)
    with pytest.raises(InputError, match="too small to train on"):
        from openfootprints.training.run import chips_fitted

        chips_fitted(load_config(["data.resolution_m=8"]), load_labelled_scenes(labelled_tiles[:2],
                                                                                 load_config(["data.resolution_m=8"])))


@pytest.mark.slow
def test_finetune_runs_on_separate_small_tiles_and_an_empty_one(labelled_tiles, tiny_bundle, tmp_path):
    out = tmp_path / "tiles.ofp"
    args = ["finetune", "--model", str(tiny_bundle)]
    for image, labels in labelled_tiles:
        args += ["--image", image, "--labels", labels]
    assert main([*args, "--out", str(out), "train.batch_size=4", "data.samples_per_epoch=8", "train.max_epochs=1",
                 "tracking.energy=false"]) == 0
    assert load_bundle(out).training["config"]["data"]["chip_px"] == 192


def test_ema_decay_keeps_the_moving_average_of_weights_and_batch_norm_statistics():
    import lightning as L

    from openfootprints.training.module import SegmentationModule

    class Record(L.Callback):  # each step's trained weights, before the average takes them in
        def __init__(self):
            self.states = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.states.append({k: v.detach().clone().float() for k, v in module.net.state_dict().items()})

    L.seed_everything(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 1, 1))
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 16, 16), (torch.rand(12, 1, 16, 16) > 0.5).float(),
                                          torch.ones(12, 1, 16, 16))
    record, decay = Record(), 0.7
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", callbacks=[record])
    trainer.fit(SegmentationModule(net, lr=0.05, total_steps=6, ema_decay=decay),
                torch.utils.data.DataLoader(data, batch_size=2))
    expected = record.states[0]  # the first step's weights start the average
    for state in record.states[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * state[k] for k in state}
    last = record.states[-1]
    for k, v in net.state_dict().items():
        if v.is_floating_point():  # weights and running statistics alike
            assert torch.allclose(v, expected[k], atol=1e-6), k
    assert not torch.allclose(net[0].weight, last["0.weight"])  # not the last step's weights
    assert not torch.allclose(net[1].running_mean, last["1.running_mean"])
    assert int(net[1].num_batches_tracked) == 6  # a count, not averaged
