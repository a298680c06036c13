import numpy as np
import pytest

from openfootprints.predict.blend import BlendStrip, ValidPixels, weight_sums
from openfootprints.predict.stream import ProbabilityArray
from openfootprints.predict.windows import Region, blend_ramp, window_starts


def random_windows(rows: list[int], cols: list[int], window: int, seed: int):
    """A probability (window, window) float32 and validity per window; some windows wholly invalid (not run)."""
    rng = np.random.default_rng(seed)
    out = {}
    for r in rows:
        for c in cols:
            valid = rng.random((window, window)) > 0.2
            if rng.random() < 0.15:
                valid[:] = False
            out[r, c] = rng.random((window, window), dtype=np.float32), valid
    return out


def blended_at_once(windows, rows, cols, ramp, region):
    """The blend of a float32 array as large as the lattice, windows added row by row: the arithmetic the strip must
    reproduce to the bit."""
    size = len(ramp)
    weights = np.outer(ramp, ramp)
    acc = np.zeros((rows[-1] + size - rows[0], cols[-1] + size - cols[0]), np.float32)
    valid_all = np.zeros(acc.shape, bool)
    for (r, c), (prob, valid) in windows.items():
        if valid.any():
            acc[r - rows[0] : r - rows[0] + size, c - cols[0] : c - cols[0] + size] += prob * weights
            valid_all[r - rows[0] : r - rows[0] + size, c - cols[0] : c - cols[0] + size] |= valid
    denominator = np.maximum(weight_sums(rows, ramp)[:, None] * weight_sums(cols, ramp), 1e-6)
    prob = acc / denominator
    prob[~valid_all] = 0.0
    inside = (slice(region.row0 - rows[0], region.row1 - rows[0]), slice(region.col0 - cols[0], region.col1 - cols[0]))
    return np.round(prob[inside] * 255).astype(np.uint8), valid_all[inside]


@pytest.mark.parametrize("length, window, halo, region", [
    ((300, 280), 64, 8, None),
    ((300, 280), 64, 0, None),  # no overlap at all: nothing carried
    ((235, 301), 64, 15, Region(17, 200, 5, 299)),  # last row and column pulled far back
    ((128, 96), 64, 8, Region(64, 128, 0, 96)),
    ((40, 50), 64, 8, None),  # one window, larger than the scene
])
def test_the_strip_blends_exactly_as_one_array_of_the_whole_lattice(length, window, halo, region):
    height, width = length
    region = region or Region(0, height, 0, width)
    stride = window - 2 * halo
    rows = [s for s in window_starts(0, height, window, stride) if s < region.row1 and s + window > region.row0]
    cols = [s for s in window_starts(0, width, window, stride) if s < region.col1 and s + window > region.col0]
    ramp = blend_ramp(window, halo)
    windows = random_windows(rows, cols, window, seed=sum(length) + halo)
    sink = ProbabilityArray("p", region.width, region.height, None, None)
    counted = ValidPixels(Region(region.row0 + 3, region.row0 + 40, region.col0 + 2, region.col0 + 30))
    strip = BlendStrip(ramp, rows, cols, region, sink, counted)
    for r in rows:
        strip.start_row()
        for c in cols:
            prob, valid = windows[r, c]
            if valid.any():
                strip.add(c - cols[0], prob * np.outer(ramp, ramp), valid)
        strip.finish_row()
    expected, valid = blended_at_once(windows, rows, cols, ramp, region)
    assert np.array_equal(sink.array, expected)
    assert 0 < (sink.array > 0).sum() < sink.array.size
    inner = counted.inner
    assert counted.predicted == valid.sum()
    assert counted.inside == valid[inner.row0 - region.row0 : inner.row1 - region.row0,
                                   inner.col0 - region.col0 : inner.col1 - region.col0].sum()


def test_the_strip_keeps_float_sums_only_for_the_rows_two_rows_of_windows_share():
    ramp = blend_ramp(64, 8)
    rows = window_starts(0, 1000, 64, 48)  # overlaps of 16 rows, and 40 where the last row is pulled back
    strip = BlendStrip(ramp, rows, [0, 48, 96], Region(0, 1000, 0, 160), ProbabilityArray("p", 160, 1000, None, None))
    assert strip.carry.shape == (64 - (rows[-1] - rows[-2]), 160) == (40, 160)
    assert strip.work.shape == (64, 64)
