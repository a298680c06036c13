"""Training on many sources at once: different formats, ground resolutions and CRSs, scattered tiles; chips in
proportion to labelled area; the energy target; scale and sensor augmentation."""

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from PIL import Image
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window
from scipy import ndimage

from openfootprints.configuration import load_config
from openfootprints.data.augment import Augmentation, degrade
from openfootprints.data.chips import (ChipDataset, LabelledScene, block_probabilities, building_ids,
                                       energy_target)
from openfootprints.io.raster import open_scene
from openfootprints.io.vector import read_polygons
from openfootprints.synth.scene import SceneSpec, write_scene
from openfootprints.training.run import load_labelled_scenes, split_all

HALF = 20037508.342789244
Z = 19
TILE_M = 2 * HALF / 2**Z  # tile width in EPSG:3857 units


def tile_bounds(x: int, y: int) -> tuple[float, float, float, float]:
    west, north = -HALF + x * TILE_M, HALF - y * TILE_M
    return west, north - TILE_M, west + TILE_M, north


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """A GeoTIFF in UTM at 0.5 m, and an XYZ folder (EPSG:3857, z19 ≈ 0.3 m) of three scattered tiles warped from
    another synthetic scene drawn at 0.25 m; each with its footprints."""
    d = tmp_path_factory.mktemp("sources")
    write_scene(SceneSpec(width=256, height=256, resolution_m=0.5, seed=11), d / "a.tif", d / "a.geojson")
    write_scene(SceneSpec(width=1024, height=1024, resolution_m=0.25, seed=12), d / "b.tif", d / "b.geojson")
    folder = d / "tiles"
    with rasterio.open(d / "b.tif") as src:
        from rasterio.warp import transform_bounds
        west, south, east, north = transform_bounds(src.crs, "EPSG:3857", *src.bounds)
        x0, y0 = math.ceil((west + HALF) / TILE_M), math.ceil((HALF - north) / TILE_M)
        for dx, dy in [(0, 0), (1, 0), (2, 2)]:  # two neighbours and one alone
            x, y = x0 + dx, y0 + dy
            image = np.zeros((3, 256, 256), np.uint8)
            w, s, e, n = tile_bounds(x, y)
            reproject(src.read(), image, src_transform=src.transform, src_crs=src.crs,
                      dst_transform=rasterio.transform.from_bounds(w, s, e, n, 256, 256), dst_crs="EPSG:3857",
                      resampling=Resampling.bilinear)
            (folder / str(Z) / str(x)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / str(Z) / str(x) / f"{y}.png")
    return [(str(d / "a.tif"), str(d / "a.geojson")), (str(folder), str(d / "b.geojson"))]


def config(*overrides):
    return load_config(["data.resolution_m=0.5", "data.chip_px=64", "data.block_m=32", "data.block_min_valid=0.1",
                        "data.chip_min_valid=0.5", *overrides])


def test_sources_of_other_formats_resolutions_and_crss_come_to_one_ground_resolution(two_sources):
    sources = load_labelled_scenes(two_sources, config())
    assert [s.scene.crs.to_epsg() for s in sources] == [32630, 3857]
    assert sources[1].scene.scale > 1.5  # the 0.3 m tiles read at 0.5 m
    for s in sources:
        assert s.scene.resolution_m == pytest.approx(0.5, rel=0.05)
        assert len(s.polygons) > 0  # footprints reprojected to the imagery's CRS


def test_blocks_and_chips_come_only_from_where_a_source_has_imagery(two_sources):
    cfg = config()
    sources = load_labelled_scenes(two_sources, cfg)
    train, val = split_all(sources, cfg)
    tiles = sources[1]
    assert {idx for idx, _ in train} == {0, 1}
    ds = ChipDataset(sources, train, 64, [0, 0, 0], [1, 1, 1], seed=0,
                     probabilities=block_probabilities(sources, train), min_valid=0.5)
    drawn = [ds[i] for i in range(60)]
    assert all(float((w > 0).float().mean()) >= 0.5 for _, _, w in drawn)
    # every block of the tile folder lies on at least some imagery (the gap between tiles is never a block)
    for idx, window in train + val:
        if idx == 1:
            assert tiles.scene.read(window)[1].any()


def test_sources_are_drawn_in_proportion_to_valid_area_times_weight(two_sources):
    cfg = config()
    sources = load_labelled_scenes(two_sources, cfg)
    train, _ = split_all(sources, cfg)
    areas = []
    for k in (0, 1):
        valid = sum(sources[k].scene.read(w)[1].sum() for idx, w in train if idx == k)
        areas.append(valid * 0.5**2 * (sources[k].scene.resolution_m / 0.5) ** 2)
    p = block_probabilities(sources, train)
    share = [p[[i for i, (idx, _) in enumerate(train) if idx == k]].sum() for k in (0, 1)]
    assert share[1] == pytest.approx(areas[1] / sum(areas), abs=0.05)
    weighted = load_labelled_scenes(two_sources, config("data.source_weights=[1,0]"))
    assert block_probabilities(weighted, train)[[i for i, (idx, _) in enumerate(train) if idx == 1]].sum() == 0


def test_a_weight_per_source_must_match_the_sources(two_sources):
    from openfootprints.errors import InputError

    with pytest.raises(InputError, match="source_weights has 3 weight"):
        load_labelled_scenes(two_sources, config("data.source_weights=[1,1,1]"))


def test_zoomed_chips_keep_labels_on_their_buildings(tiny_scene):
    scene = open_scene(tiny_scene[0])
    source = LabelledScene(scene, read_polygons(tiny_scene[1], crs=scene.crs).geometry)
    ds = ChipDataset([source], [(0, Window(0, 0, 256, 256))], 64, [0, 0, 0], [1, 1, 1])
    zoomed = ds.raw_chip(0, Window(0, 0, 128, 128), out_px=64)  # twice the ground size in the same pixels
    full = ds.raw_chip(0, Window(0, 0, 128, 128))
    assert zoomed.image.shape == (3, 64, 64) and zoomed.ids.shape == (64, 64)
    halved = full.ids[1::2, 1::2] > 0
    assert ((zoomed.ids > 0) == halved).mean() > 0.95
    assert np.abs(zoomed.image - full.image.reshape(3, 64, 2, 64, 2).mean(axis=(2, 4))).mean() < 12


def test_random_chips_with_zoom_are_chip_sized_and_deterministic(tiny_scene):
    scene = open_scene(tiny_scene[0])
    source = LabelledScene(scene, read_polygons(tiny_scene[1], crs=scene.crs).geometry)
    ds = ChipDataset([source], [(0, Window(0, 0, 256, 256))], 64, [0, 0, 0], [1, 1, 1], seed=2,
                     augment=Augmentation(zoom=0.5))
    for i in range(10):
        a, m, w = ds[i]
        assert a.shape == (3, 64, 64) and m.shape == (1, 64, 64) and w.shape == (1, 64, 64)
        assert torch.equal(a, ds[i][0])


def test_energy_target_keeps_walls_between_touching_buildings_low():
    row = np.array([shapely.box(10 * k + 2, 2, 10 * k + 12, 14) for k in range(4)])  # 4 touching 10×12 px
    ids = building_ids(row, rasterio.Affine.identity(), (16, 46))
    target = energy_target(ids, ramp_px=4)
    assert (target[ids == 0] == 0).all() and (target[ids > 0] > 0.5).all() and target.max() == 1.0
    seeds, n = ndimage.label(target >= 0.75)
    assert n == 4  # one core per building
    assert all(len(np.unique(ids[seeds == k])) == 1 for k in range(1, n + 1))
    wall = target[:, 11]  # column 11: the last of building 1, next to building 2
    assert wall[ids[:, 11] > 0].max() < 0.75


def test_degrade_softens_only_valid_pixels_and_is_off_at_zero_strength():
    rng = np.random.default_rng(0)
    image = np.indices((64, 64)).sum(axis=0) % 2 * 2.0 - 1.0  # a 1 px checkerboard
    image = np.repeat(image[None], 3, axis=0).astype(np.float32)
    valid = np.ones((64, 64), bool)
    valid[:, :8] = False
    off = degrade(image, valid, Augmentation(), rng)
    assert np.array_equal(off[:, valid], image[:, valid])
    strong = Augmentation(coarsen=4.0, blur_px=2.0)
    detail = [np.abs(np.diff(degrade(image, valid, strong, np.random.default_rng(s))[:, :, 8:], axis=2)).mean()
              for s in range(8)]
    assert min(detail) < 0.5 * np.abs(np.diff(image[:, :, 8:], axis=2)).mean()
    assert all((degrade(image, valid, strong, np.random.default_rng(s))[:, ~valid] == 0).all() for s in range(4))


def test_a_continuation_keeps_its_parents_validation_blocks_out_of_training(two_sources):
    from openfootprints.model.bundle import Bundle, fingerprint_files
    from openfootprints.training.run import SPLIT_KEYS, with_split_seed

    from conftest import tiny_architecture

    files = [p for pair in two_sources for p in pair]
    recorded = dict(config().data)  # the parent's split settings are this run's
    parent = Bundle(architecture=tiny_architecture(), bands=[1, 2, 3], mean=[0.0] * 3, std=[1.0] * 3,
                    resolution_m=0.5, data_fingerprint=fingerprint_files(files),
                    training={"config": {"seed": 1, "data": {k: recorded[k] for k in SPLIT_KEYS}},
                              "scenes": [["elsewhere/" + Path(p).name for p in pair] for pair in two_sources]})
    sources = load_labelled_scenes(two_sources, config())
    val_of = {seed: split_all(sources, config(f"seed={seed}"))[1] for seed in (1, 7)}
    assert val_of[1] != val_of[7]  # another seed, another split: a continuation would train on the parent's val

    continued = with_split_seed(config("seed=7"), parent, two_sources)
    assert continued.data.split_seed == 1 and continued.seed == 7  # the draws of chips stay the run's own
    train, val = split_all(sources, continued)
    assert val == val_of[1] and not set(map(str, train)) & set(map(str, val_of[1]))
    parent.training["config"]["data"]["split_seed"] = 3  # the parent's own inherited split passes on
    assert with_split_seed(config("seed=7"), parent, two_sources).data.split_seed == 3

    assert with_split_seed(config("seed=7"), None, two_sources).data.split_seed == 7  # a new model: its seed
    assert with_split_seed(config("seed=7"), parent, two_sources[::-1]).data.split_seed == 7  # other order
    assert with_split_seed(config("seed=7"), parent, two_sources[:1]).data.split_seed == 7  # other scenes
    assert with_split_seed(config("seed=7", "data.split_seed=5"), parent, two_sources).data.split_seed == 5
    assert with_split_seed(config("seed=7", "data.block_m=64"), parent, two_sources).data.split_seed == 7  # other blocks
    parent.data_fingerprint = "0" * 16  # same names, other content
    assert with_split_seed(config("seed=7"), parent, two_sources).data.split_seed == 7


def test_a_bundles_split_seed_is_its_recorded_one_else_its_seed(tiny_bundle):
    from openfootprints.model.bundle import load_bundle
    from openfootprints.training.run import recorded_split_seed

    def trained(config: dict):
        bundle = load_bundle(tiny_bundle)
        bundle.training = {"config": config}
        return bundle

    champion = trained({"seed": 1, "data": {"val_fraction": 0.1}})  # trained before split_seed was recorded
    assert recorded_split_seed(champion) == 1
    assert recorded_split_seed(trained({"seed": 4, "data": {"split_seed": 1}})) == recorded_split_seed(champion)
    assert recorded_split_seed(trained({"seed": 2, "data": {}})) != recorded_split_seed(champion)  # trained on its val blocks
