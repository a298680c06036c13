"""bench/serve_load.py's memory summary: the largest sample of each minute and the trend before the kill."""

import math

import pytest
from conftest import bench_module


@pytest.fixture(scope="module")
def serve_load():
    return bench_module("serve_load")


def sampler(serve_load, samples):
    s = serve_load.MemorySampler(server=None, t0=0.0)
    s.samples = samples
    return s


def test_the_largest_sample_of_each_minute(serve_load):
    s = sampler(serve_load, [(0, 1.0), (30, 2.0), (61, 1.5), (119, 1.7), (185, 3.0)])
    assert s.by_minute() == [2.0, 1.7, 0.0, 3.0]  # no sample in the third minute


def test_the_trend_is_the_slope_after_the_first_minute_and_before_the_kill(serve_load):
    growing = [(t, 2.0 + 0.1 * t / 60) for t in range(0, 600, 5)]
    flat_then_jump = [(t, 3.0 if t < 300 else 4.0) for t in range(0, 600, 5)]
    warm_up = [(t, 1.0 if t < 60 else 3.0) for t in range(0, 300, 5)]
    assert sampler(serve_load, growing).trend_gib_per_minute(until_s=300) == pytest.approx(0.1)
    assert sampler(serve_load, flat_then_jump).trend_gib_per_minute(until_s=300) == pytest.approx(0.0, abs=1e-9)
    assert sampler(serve_load, warm_up).trend_gib_per_minute(until_s=300) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(sampler(serve_load, growing[:14]).trend_gib_per_minute(until_s=300))  # too few samples
