"""No seams: buildings across window borders and corners come out once, whole, and identical to a
single-window run, for any window size and overlap.

The network is replaced by a per-pixel function of the image (as in test_predict), so that what is
tested is the windowing, blending, strip vectorization and ownership, not the network's context; with
a real CNN, the halo gives each window's kept centre the context a single window would have.
"""

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from scipy.special import expit

from openfootprints.evaluation.matching import greedy_match, overlapping_pairs
from openfootprints.io.raster import open_scene
from openfootprints.model.bundle import load_bundle
from openfootprints.predict.probabilities import WindowPredictor, predict_probabilities
from openfootprints.vectorize.polygons import iter_buildings

SIZE = 384
# pixel boxes (col0, row0, col1, row1): across the borders of 128 px windows with 16 px halos (starts at
# 0, 96, 192, 256), of 64 px windows, and over their corners; plus a few well inside windows
BOXES = [(88, 10, 120, 30), (120, 40, 140, 60), (180, 90, 230, 130), (90, 90, 110, 110), (250, 250, 270, 262),
         (60, 180, 72, 260), (300, 20, 330, 200), (10, 300, 40, 330), (186, 186, 200, 200), (330, 330, 384, 384),
         (0, 140, 20, 160), (140, 0, 160, 12), (222, 300, 262, 340), (20, 20, 40, 40)]


@pytest.fixture()
def per_pixel_model(monkeypatch):
    def call(self, batch):
        return expit(batch[:, 0] / 2).astype(np.float32)

    monkeypatch.setattr(WindowPredictor, "probabilities", call)


@pytest.fixture(scope="module")
def border_scene(tmp_path_factory):
    """A 384 × 384 px scene at 0.5 m: background 60, buildings 200, placed across window borders."""
    image = np.full((3, SIZE, SIZE), 60, np.uint8)
    for c0, r0, c1, r1 in BOXES:
        image[:, r0:r1, c0:c1] = 200
    return write_scene_tif(tmp_path_factory.mktemp("seams") / "scene.tif", image)


def write_scene_tif(path, image: np.ndarray):
    """A (3, SIZE, SIZE) uint8 image as a GeoTIFF at 0.5 m in UTM."""
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8",
                       crs="EPSG:32630", transform=from_origin(500000, 800000, 0.5, 0.5)) as dst:
        dst.write(image)
    return path


def buildings(tmp_path, scene_path, bundle_path, window: int, halo_m: float, name: str, **decoding):
    """The polygons and confidences of a whole run (windows of ``window`` px), sorted by centroid; ``decoding``:
    more keyword arguments of iter_buildings."""
    scene, bundle = open_scene(scene_path), load_bundle(bundle_path)
    probs = predict_probabilities(scene, bundle, tmp_path / f"{name}.tif", window=window, halo_m=halo_m,
                                  batch_size=4, progress=False)
    found = list(iter_buildings(str(probs), 0.5, simplify_m=0.0, strip_px=100, margin_m=10.0, **decoding))
    polygons = np.concatenate([f.polygons for f in found])
    confidence = np.concatenate([f.confidence for f in found])
    order = np.lexsort((shapely.get_y(shapely.centroid(polygons)), shapely.get_x(shapely.centroid(polygons))))
    return polygons[order], confidence[order]


@pytest.mark.parametrize("window, halo_m", [(128, 8.0), (64, 4.0), (96, 0.0), (160, 16.0)])
def test_polygons_across_window_borders_equal_a_single_window_run(tmp_path, border_scene, tiny_bundle,
                                                                 per_pixel_model, window, halo_m):
    single, single_conf = buildings(tmp_path, border_scene, tiny_bundle, SIZE, 0.0, "single")
    tiled, tiled_conf = buildings(tmp_path, border_scene, tiny_bundle, window, halo_m, "tiled")
    assert len(single) == len(BOXES)
    assert len(tiled) == len(single)
    for a, b in zip(single, tiled):
        assert shapely.equals(a, b)
    assert np.array_equal(single_conf, tiled_conf)


def test_no_building_is_lost_or_doubled_over_the_whole_scene(tmp_path, border_scene, tiny_bundle, per_pixel_model):
    found, _ = buildings(tmp_path, border_scene, tiny_bundle, 64, 4.0, "tiled")
    transform = from_origin(500000, 800000, 0.5, 0.5)
    truth = np.array([shapely.box(*(transform @ (c0, r1)), *(transform @ (c1, r0))) for c0, r0, c1, r1 in BOXES])
    matched, iou = greedy_match(np.ones(len(found)), len(truth), overlapping_pairs(found, truth), 0.5)
    assert len(found) == len(truth)
    assert sorted(matched.tolist()) == list(range(len(truth)))  # each true building found exactly once
    assert iou.min() > 0.99  # and whole


# terraced houses sharing walls across the borders and corners of 64 and 128 px windows: (col0, row0, col1, row1)
TERRACES = [(40 + 16 * k, 56, 56 + 16 * k, 76) for k in range(6)] + [(180, 110 + 18 * k, 204, 128 + 18 * k)
                                                                    for k in range(5)] + [
    (240, 240, 258, 258), (258, 240, 276, 258), (240, 258, 258, 276), (258, 258, 276, 276)]


@pytest.fixture(scope="module")
def terrace_scene(tmp_path_factory):
    """A scene whose per-pixel 'energy' is low on every house's outline (so on shared walls) and high inside."""
    image = np.full((3, SIZE, SIZE), 40, np.uint8)
    for c0, r0, c1, r1 in TERRACES:
        image[:, r0:r1, c0:c1] = 150  # outline: footprint, not seed
    for c0, r0, c1, r1 in TERRACES:
        image[:, r0 + 2:r1 - 2, c0 + 2:c1 - 2] = 255  # core: seed
    return write_scene_tif(tmp_path_factory.mktemp("terraces") / "scene.tif", image)


def seeded_buildings(tmp_path, scene_path, bundle_path, window: int, halo_m: float, name: str):
    return buildings(tmp_path, scene_path, bundle_path, window, halo_m, name, grow_m=1.5, tile_px=90,
                     seed_threshold=0.75)[0]


@pytest.mark.parametrize("window, halo_m", [(128, 8.0), (64, 4.0)])
def test_touching_buildings_are_split_identically_across_window_and_tile_borders(tmp_path, terrace_scene, tiny_bundle,
                                                                                  per_pixel_model, window, halo_m):
    single = seeded_buildings(tmp_path, terrace_scene, tiny_bundle, SIZE, 0.0, "single")
    tiled = seeded_buildings(tmp_path, terrace_scene, tiny_bundle, window, halo_m, "tiled")
    transform = from_origin(500000, 800000, 0.5, 0.5)
    truth = np.array([shapely.box(*(transform @ (c0, r1)), *(transform @ (c1, r0))) for c0, r0, c1, r1 in TERRACES])
    assert len(single) == len(tiled) == len(TERRACES)
    assert all(shapely.equals(a, b) for a, b in zip(single, tiled))
    matched, iou = greedy_match(np.ones(len(tiled)), len(truth), overlapping_pairs(tiled, truth), 0.5)
    assert sorted(matched.tolist()) == list(range(len(truth))) and iou.min() > 0.95
