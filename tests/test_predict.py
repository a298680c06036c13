import dataclasses

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy.special import expit

from openfootprints.errors import InputError
from openfootprints.io.raster import open_scene
from openfootprints.model.bundle import load_bundle
from openfootprints.predict.blend import ValidPixels
from openfootprints.predict.probabilities import (WindowPredictor, predict_probabilities, region_from_bounds,
                                                  window_grid, windows_in_flight)
from openfootprints.predict.windows import Region
from openfootprints.predict.windows import blend_weights, window_starts


@pytest.mark.parametrize("start, stop, window, stride", [(0, 1000, 128, 96), (5, 133, 128, 64), (0, 50, 128, 64),
                                                         (0, 257, 128, 128)])
def test_windows_cover_the_span_and_stay_inside(start, stop, window, stride):
    starts = window_starts(start, stop, window, stride)
    covered = np.zeros(stop, bool)
    for s in starts:
        covered[s : min(s + window, stop)] = True
        assert s >= start and (s + window <= stop or len(starts) == 1)
    assert covered[start:].all()
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


def test_blend_weights_are_positive_and_peak_in_the_middle():
    w = blend_weights(64, 8)
    assert w.shape == (64, 64) and (w > 0).all()
    assert w[32, 32] == 1.0 and w[0, 0] < 0.01 and w[0, 32] < w[8, 32]


@pytest.fixture()
def per_pixel_model(monkeypatch):
    """Replace the network by a per-pixel function of band 1, so the blended result is known exactly."""
    def call(self, batch):
        return expit(batch[:, 0] / 2).astype(np.float32)

    monkeypatch.setattr(WindowPredictor, "probabilities", call)


@pytest.mark.parametrize("halo_m, tta", [(0.0, 1), (8.0, 1), (12.0, 1), (8.0, 8)])
def test_streamed_blended_probabilities_equal_the_per_pixel_truth(tmp_path, tiny_scene, tiny_bundle,
                                                                  per_pixel_model, halo_m, tta):
    scene = open_scene(tiny_scene[0])
    bundle = load_bundle(tiny_bundle)
    region = Region(10, 250, 3, 201)  # not a multiple of the window: edges and clamped last windows
    out = predict_probabilities(scene, bundle, tmp_path / "p.tif", region, window=64, halo_m=halo_m,
                                batch_size=3, progress=False, tta=tta)  # TTA undone exactly: same result
    with rasterio.open(out) as src:
        got = src.read(1)
        assert src.transform.c == pytest.approx((scene.transform @ (3, 10))[0])
    band1 = rasterio.open(tiny_scene[0]).read(1)[10:250, 3:201].astype(np.float32)
    expected = np.round(expit((band1 - bundle.mean[0]) / bundle.std[0] / 2) * 255)
    assert got.shape == (240, 198)
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_real_network_runs_on_a_scene_smaller_than_the_window(tmp_path, tiny_scene, tiny_bundle):
    scene = open_scene(tiny_scene[0])
    out = predict_probabilities(scene, load_bundle(tiny_bundle), tmp_path / "p.tif", Region(0, 100, 0, 90),
                                progress=False)
    with rasterio.open(out) as src:
        assert (src.width, src.height) == (90, 100) and src.crs == scene.crs


def test_wrong_band_count_is_a_clear_error(tmp_path, tiny_scene, tiny_bundle):
    scene = open_scene(tiny_scene[0], bands=[1, 2])
    with pytest.raises(InputError, match="2 band\\(s\\) selected, but the model expects 3"):
        predict_probabilities(scene, load_bundle(tiny_bundle), tmp_path / "p.tif", progress=False)


def test_region_from_bounds_clips_to_the_scene(tiny_scene):
    scene = open_scene(tiny_scene[0])
    left, bottom, right, top = scene.bounds
    px = scene.transform.a
    region = region_from_bounds(scene, (left - 100, bottom + 128 * px, left + 64 * px, top + 100))
    assert (region.row0, region.row1, region.col0, region.col1) == (0, 128, 0, 64)
    with pytest.raises(InputError, match="does not overlap"):
        region_from_bounds(scene, (right + 10, bottom, right + 20, top))


@pytest.mark.parametrize("tta", [2, 4, 8])
def test_tta_averages_the_transformed_predictions(tiny_bundle, tta):
    from openfootprints.predict.probabilities import TTA_TRANSFORMS

    predictor = WindowPredictor(load_bundle(tiny_bundle), "cpu")
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    expected = np.mean([np.rot90((lambda p: p[..., ::-1] if flip else p)(predictor.probabilities(np.ascontiguousarray(
        (lambda v: v[..., ::-1] if flip else v)(np.rot90(batch, k, axes=(2, 3)))))), -k, axes=(1, 2))
        for k, flip in TTA_TRANSFORMS[:tta]], axis=0)
    got = predictor(batch, tta)
    assert np.allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, predictor(batch, 1), atol=1e-4)  # the untrained net is not equivariant


REGION_RUN = dict(window=64, halo_m=8.0, batch_size=1, progress=False, engine="torch")  # batch 1: identical arithmetic


@pytest.fixture(scope="module")
def whole_scene_run(tiny_scene, tiny_bundle, tmp_path_factory):
    """The tiny scene's probabilities, run whole (once for every region compared with it)."""
    return predict_probabilities(open_scene(tiny_scene[0]), load_bundle(tiny_bundle),
                                 tmp_path_factory.mktemp("whole") / "whole.tif", **REGION_RUN)


@pytest.mark.parametrize("region", [Region(37, 150, 61, 203), Region(0, 40, 200, 256), Region(100, 256, 0, 256)])
def test_a_region_gets_exactly_the_probabilities_of_a_whole_scene_run(tmp_path, tiny_scene, tiny_bundle, region,
                                                                      whole_scene_run):
    scene, bundle = open_scene(tiny_scene[0]), load_bundle(tiny_bundle)
    whole = whole_scene_run
    part = predict_probabilities(scene, bundle, tmp_path / "part.tif", region, **REGION_RUN)
    with rasterio.open(whole) as w, rasterio.open(part) as p:
        expected = w.read(1)[region.row0:region.row1, region.col0:region.col1]
        assert p.read(1).shape == expected.shape
        assert np.array_equal(p.read(1), expected)
        assert p.transform.almost_equals(scene.transform @ Affine.translation(region.col0, region.row0))


def test_windows_in_flight_hold_the_pixels_of_four_512_px_windows_and_one_per_run():
    assert windows_in_flight(512, runs=2) == 4 and windows_in_flight(256, runs=2) == 16
    assert windows_in_flight(1024, runs=2) == 2 and windows_in_flight(1024, runs=1) == 1
    assert windows_in_flight(2048, runs=2) == 2  # never fewer than the runs at once


def test_a_scene_smaller_than_the_window_is_one_window_of_its_own_size(tiny_scene, tiny_bundle):
    scene = open_scene(tiny_scene[0])  # 256 × 256 px
    bundle = dataclasses.replace(load_bundle(tiny_bundle), window=1024, halo_m=16.0)
    whole = Region(0, scene.height, 0, scene.width)
    grid = window_grid(scene, bundle, whole)
    assert grid.window == 256 and grid.starts() == [(0, 0)]
    assert window_grid(scene, bundle, whole, window=128).window == 128  # a smaller window than the scene is kept
    with pytest.raises(InputError, match="leaves no stride"):
        window_grid(scene, bundle, whole, window=128, halo_m=40.0)  # 80 px a side of a 128 px window


def test_valid_pixels_are_counted_as_the_rows_are_written(tmp_path, tiny_scene, tiny_bundle, per_pixel_model):
    with rasterio.open(tiny_scene[0]) as src:
        data, profile = src.read(), src.profile
    data[:, 40:120, 30:200] = 0  # a block of nodata
    holed = tmp_path / "holed.tif"
    with rasterio.open(holed, "w", **{**profile, "nodata": 0}) as dst:
        dst.write(data)
    scene = open_scene(holed)
    region, inner = Region(10, 250, 3, 201), Region(30, 90, 50, 180)
    valid = ValidPixels(inner)
    predict_probabilities(scene, load_bundle(tiny_bundle), tmp_path / "p.tif", region, window=64, halo_m=8.0,
                          batch_size=3, progress=False, valid_pixels=valid)
    truth = (data != 0).any(axis=0)
    assert valid.predicted == truth[10:250, 3:201].sum() < region.height * region.width
    assert valid.inside == truth[30:90, 50:180].sum() == 10 * 130
