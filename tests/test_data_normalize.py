"""One normalization for training chips, pseudo-labelled chips and detection windows."""

import numpy as np
import pytest

from openfootprints.data.normalize import Normalization


def test_pixels_are_standardized_per_band_and_nodata_is_zero():
    image = np.stack([np.full((2, 3), 110.0), np.full((2, 3), 50.0)]).astype(np.uint8)
    valid = np.array([[True, True, False], [True, True, True]])
    out = Normalization([100.0, 60.0], [5.0, 10.0])(image, valid)
    assert out.dtype == np.float32 and out.shape == (2, 2, 3)
    assert np.allclose(out[0][valid], 2.0) and np.allclose(out[1][valid], -1.0)
    assert (out[:, ~valid] == 0).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_any_pixel_type_is_standardized_in_float32_without_touching_the_input(dtype):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (3, 40, 50)).astype(dtype)
    before = image.copy()
    valid = rng.random((40, 50)) > 0.2
    mean, std = [101.3, 57.9, 30.5], [17.1, 9.7, 8.0]
    out = Normalization(mean, std)(image, valid)
    expected = (image.astype(np.float64) - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert out.dtype == np.float32 and np.allclose(out[:, valid], expected[:, valid], atol=1e-5)
    assert (out[:, ~valid] == 0).all() and np.array_equal(image, before)


def test_training_and_detection_share_it(tiny_bundle):
    from openfootprints.data.chips import ChipDataset
    from openfootprints.model.bundle import load_bundle
    from openfootprints.predict.probabilities import WindowPredictor

    bundle = load_bundle(tiny_bundle)
    predictor = WindowPredictor(bundle, "cpu")
    chips = ChipDataset([], [], chip_px=64, mean=bundle.mean, std=bundle.std)
    assert type(predictor.normalize) is type(chips.normalize) is Normalization


def test_mismatched_statistics_are_refused():
    with pytest.raises(ValueError, match="3 means but 2"):
        Normalization([1.0, 2.0, 3.0], [1.0, 1.0])
