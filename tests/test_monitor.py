"""Drift monitoring: the reference profile a bundle keeps, and detection warning on imagery unlike it."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from openfootprints.cli import main
from openfootprints.configuration import load_config
from openfootprints.model.bundle import load_bundle, save_bundle
from openfootprints.monitor.drift import MAJOR_PSI, PIXEL_EDGES, STRIDE, Profile, compare, psi, window_profile
from openfootprints.pipeline import detect, load_predictor

SETTINGS = ["tracking.energy=false", "detect.threshold=0.45"]


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(0)
    bins = np.concatenate([[-np.inf], PIXEL_EDGES, [np.inf]])
    reference = np.histogram(rng.normal(0, 1, 100_000), bins)[0]
    assert psi(reference, reference) == 0
    assert psi(reference, np.histogram(rng.normal(0, 1, 100_000), bins)[0]) < 0.01  # another sample of it
    shifts = [psi(reference, np.histogram(rng.normal(m, 1, 100_000), bins)[0]) for m in (0.25, 0.5, 1.0)]
    assert shifts == sorted(shifts) and shifts[0] < MAJOR_PSI < shifts[2]


def test_window_profile_counts_sampled_valid_pixels_per_bin():
    images = np.zeros((1, 2, 8, 8), np.float32)
    images[0, 0] = 5.0  # beyond the last edge: the outer bin
    images[0, 1] = -0.1
    valid = np.ones((1, 8, 8), bool)
    valid[0, :4] = False  # the top half is nodata
    outputs = np.full((1, 8, 8), 0.95, np.float32)
    profile = window_profile(images, valid, outputs)
    sampled = (8 // STRIDE) * (8 // STRIDE) // 2
    assert profile.pixels == sampled
    assert profile.bands[0, -1] == sampled and profile.bands[1].sum() == sampled
    assert profile.bands[1, np.searchsorted(PIXEL_EDGES, -0.1)] == sampled
    assert profile.output[-1] == sampled
    np.testing.assert_allclose(profile.band_means(), [5.0, -0.1], rtol=1e-6)
    assert Profile.from_dict(profile.to_dict()).bands.tolist() == profile.bands.tolist()


def test_too_few_pixels_are_not_judged():
    few = Profile.empty(3)
    few.output[0] = 10
    assert compare(few, few) is None


def darkened_and_blurred(source: str, out) -> str:
    """The scene at 40 % of its brightness, blurred (σ 3 px): imagery from a hazy, dim day or a softer sensor."""
    with rasterio.open(source) as src:
        profile, pixels = src.profile, src.read()
    changed = np.stack([ndimage.gaussian_filter(band.astype(np.float32) * 0.4, 3) for band in pixels])
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(changed.round().astype(pixels.dtype))
    return str(out)


@pytest.fixture(scope="module")
def profiled_bundle(tiny_scene, tiny_bundle, tmp_path_factory):
    """The tiny bundle with the profile of what it saw on the tiny scene as its reference."""
    cfg = load_config(SETTINGS)
    folder = tmp_path_factory.mktemp("profiled")
    predictor = load_predictor(cfg, str(tiny_bundle), str(folder))
    detect(cfg, str(tiny_scene[0]), str(tiny_bundle), str(folder / "reference.parquet"), progress=False,
           predictor=predictor)
    bundle = load_bundle(tiny_bundle)
    bundle.profile = predictor.seen.to_dict()
    return save_bundle(bundle, folder / "profiled.ofp")


def test_detection_on_like_imagery_reports_no_major_drift(profiled_bundle, tiny_scene, tmp_path):
    summary = detect(load_config(SETTINGS), str(tiny_scene[0]), str(profiled_bundle), str(tmp_path / "b.parquet"),
                     progress=False)
    drift = summary["drift"]
    assert drift["major"] is False and max(drift["band_psi"]) < 0.01
    assert drift["buildings_per_km2"] == drift["reference_buildings_per_km2"] > 0  # the same scene, found alike
    assert drift["confidence_psi"] is None or drift["confidence_psi"] < 0.01
    assert "warning" not in summary


def test_darkened_blurred_imagery_is_reported_as_drift(profiled_bundle, tiny_scene, tmp_path, capsys):
    dim = darkened_and_blurred(str(tiny_scene[0]), tmp_path / "dim.tif")
    summary = detect(load_config(SETTINGS), dim, str(profiled_bundle), str(tmp_path / "b.parquet"), progress=False)
    assert summary["drift"]["major"] is True and min(summary["drift"]["band_psi"]) > MAJOR_PSI
    assert all(shift < -0.5 for shift in summary["drift"]["mean_shift_std"])  # darker in every band
    assert summary["warning"].startswith("dim.tif: imagery unlike the model's training data")
    assert (tmp_path / "b.parquet").exists()  # a warning, not an error: the buildings are still written
    assert summary["hint"].startswith(f"to adapt the model to this imagery: openfootprints suggest {dim} --model")
    assert f"finetune --model MODEL.ofp --image {dim}" in summary["hint"]  # not the base model: say which
    assert summary["model"]["name"] == "a bundle" and "card" not in summary["model"]


def test_a_bundle_without_a_profile_is_not_compared(tiny_scene, tiny_bundle, tmp_path):
    summary = detect(load_config(SETTINGS), str(tiny_scene[0]), str(tiny_bundle), str(tmp_path / "b.parquet"),
                     progress=False)
    assert "drift" not in summary


@pytest.mark.slow
def test_training_stores_the_profile_of_its_validation_chips(tiny_scene, tmp_path):
    out = tmp_path / "m.ofp"
    assert main(["train", "--image", str(tiny_scene[0]), "--labels", str(tiny_scene[1]), "--out", str(out),
                 "data.chip_px=64", "data.block_m=32", "train.batch_size=4", "data.samples_per_epoch=8",
                 "train.max_epochs=1", "tracking.energy=false", "model.decoder_channels=[16,16,8,8,8]"]) == 0
    profile = Profile.from_dict(load_bundle(out).profile)
    assert profile.bands.shape == (3, len(PIXEL_EDGES) + 1) and profile.pixels == 3 * (64 // STRIDE) ** 2  # 3 chips
    assert np.all(np.abs(profile.band_means()) < 1.0)  # normalized by the training imagery's own statistics
    assert "buildings" in load_bundle(out).profile and profile.buildings.shape == (10,)  # found on the same chips
    cut = load_bundle(out).training["confidence_cut"]  # chosen on the same chips, and counted as detection would
    assert cut["min_confidence"] == load_bundle(out).min_confidence and cut["n_kept"] <= cut["n_predicted"]
    assert profile.decoding.get("min_confidence", 0.0) == cut["min_confidence"]


@pytest.mark.slow
def test_the_service_warns_and_counts_a_drifted_scene(profiled_bundle, tiny_scene, tmp_path):
    from fastapi.testclient import TestClient

    from openfootprints.serve import create_app
    from openfootprints.serve.app import WARNING_HEADER

    dim = darkened_and_blurred(str(tiny_scene[0]), tmp_path / "dim.tif")
    with TestClient(create_app(load_config(SETTINGS), profiled_bundle)) as client:
        like = client.post("/detect", files={"file": ("scene.tif", open(tiny_scene[0], "rb"), "image/tiff")})
        unlike = client.post("/detect", files={"file": ("dim.tif", open(dim, "rb"), "image/tiff")})
        metrics = client.get("/metrics").text
    assert like.status_code == unlike.status_code == 200
    assert WARNING_HEADER not in like.headers
    assert "unlike the model's training data" in unlike.headers[WARNING_HEADER]
    assert "openfootprints_scenes_total 2.0" in metrics and "openfootprints_scenes_drifted_total 1.0" in metrics


def test_scale_lists_the_cells_whose_imagery_drifted(profiled_bundle, tiny_scene, tmp_path):
    from openfootprints.scale.engine import scale

    dim = darkened_and_blurred(str(tiny_scene[0]), tmp_path / "dim.tif")
    cfg = load_config([*SETTINGS, "scale.zoom=16"])
    like = scale(cfg, str(tiny_scene[0]), str(profiled_bundle), str(tmp_path / "like"))
    unlike = scale(cfg, dim, str(profiled_bundle), str(tmp_path / "unlike"))
    assert like["cells_drifted"] == [] and like["cells_done_now"] >= 1
    assert len(unlike["cells_drifted"]) >= 1 and unlike["cells_failed"] == 0  # a warning, not a failure


def pixels_alike(n_bands: int = 3) -> Profile:
    """A profile of 10,000 sampled pixels, all in the middle bins."""
    profile = Profile.empty(n_bands)
    profile.bands[:, len(PIXEL_EDGES) // 2] = 10_000
    profile.output[0] = 10_000
    return profile


def test_buildings_are_counted_per_tenth_of_confidence_and_kept_in_the_bundle_profile():
    profile = pixels_alike()
    profile.add_buildings(np.array([0.05, 0.55, 0.58, 0.95, 1.0]))
    assert profile.buildings.tolist() == [1, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert Profile.from_dict(profile.to_dict()).buildings.tolist() == profile.buildings.tolist()
    assert profile.buildings_per_km2() is None  # no area counted yet
    profile.area_m2 = 40_000.0
    assert profile.buildings_per_km2() == pytest.approx(125.0)  # 5 buildings on 0.04 km²
    old = profile.to_dict()
    del old["buildings"]  # a bundle profiled before buildings were counted
    assert Profile.from_dict(old).buildings.sum() == 0


def test_buildings_found_with_other_confidences_are_reported_as_drift():
    reference, sure, unsure = pixels_alike(), pixels_alike(), pixels_alike()
    decoding = {"threshold": 0.5, "min_area_m2": 5.0}
    for profile, confidence, n in ((reference, 0.92, 100), (sure, 0.93, 60), (unsure, 0.55, 60)):
        profile.add_buildings(np.full(n, confidence))  # unsure: the same pixels, but it hesitates over every building
        profile.area_m2, profile.decoding = 1e6, dict(decoding)
    alike = compare(reference, sure, "a.tif")
    assert alike.warning is None and alike.confidence_psi == 0
    assert (alike.buildings_per_km2, alike.reference_buildings_per_km2) == (60, 100)
    drifted = compare(reference, unsure, "b.tif")
    assert drifted.confidence_psi > MAJOR_PSI and "building confidence PSI" in drifted.warning
    unsure.decoding = {"threshold": 0.3, "min_area_m2": 5.0}  # found with another threshold: not comparable
    assert compare(reference, unsure, "b.tif").confidence_psi is None and compare(reference, unsure).warning is None
    unsure.decoding = dict(decoding)
    unsure.buildings[:] = 0
    unsure.add_buildings(np.full(10, 0.55))  # too few buildings to judge their confidence
    assert compare(reference, unsure, "b.tif").confidence_psi is None


def test_the_reference_counts_the_buildings_detection_would_find_in_a_chip():
    from openfootprints.training.run import ChipDecoding

    output = np.zeros((64, 64), np.float32)
    output[8:24, 8:24] = 0.9  # a building of 16 x 16 px (8 x 8 m at 0.5 m)
    output[40:56, 30:50] = 0.8
    output[2:4, 60:62] = 0.9  # 1 m²: under min_area_m2
    valid = np.ones((64, 64), bool)
    decoding = ChipDecoding(0.5, threshold=0.5, seed_threshold=0.75, grow_m=2.0, min_area_m2=5.0, simplify_m=0.5)
    np.testing.assert_allclose(sorted(decoding.confidences(output, valid)), [0.8, 0.9], atol=0.01)
    valid[:, 28:] = False  # the second building is on nodata: not a building
    np.testing.assert_allclose(decoding.confidences(output, valid), [0.9], atol=0.01)
    output[:] = 0
    output[20:30, 0:10] = 0.9  # reaches the left edge: this chip's
    output[40:50, 54:64] = 0.8  # reaches the right edge: the next chip's (each building counted once)
    np.testing.assert_allclose(decoding.confidences(output, np.ones((64, 64), bool)), [0.9], atol=0.01)


def test_buildings_per_km2_of_chips_and_of_a_detection_agree(profiled_bundle, tiny_scene, tmp_path):
    """The reference counts buildings chip by chip over their valid area; detection counts them once over the
    scene, whatever its windows' overlap: on the same probabilities the two densities agree."""
    from openfootprints.training.run import ChipDecoding

    raster = tmp_path / "p.tif"
    summary = detect(load_config(SETTINGS + [f"detect.probabilities={raster}"]), str(tiny_scene[0]),
                     str(profiled_bundle), str(tmp_path / "b.parquet"), progress=False)
    with rasterio.open(raster) as src:
        probabilities = src.read(1) / 255
    decoding = ChipDecoding(0.5, threshold=0.45, seed_threshold=None, grow_m=0.0, min_area_m2=5.0, simplify_m=0.5)
    chips = [probabilities[r : r + 64, c : c + 64] for r in range(0, 256, 64) for c in range(0, 256, 64)]
    found = sum(len(decoding.confidences(chip, np.ones(chip.shape, bool))) for chip in chips)
    chip_density = found / (256 * 256 * 0.25 / 1e6)
    assert found >= 100 and summary["drift"]["buildings_per_km2"] == pytest.approx(chip_density, rel=0.05)
