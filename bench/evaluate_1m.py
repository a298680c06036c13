"""Benchmark: instance matching and scoring of 1,000,000 predicted against 1,000,000 true polygons.

    python bench/evaluate_1m.py [--n 1000000]

True buildings are 10×10 m squares on a 30 m grid in EPSG:4326 (built in UTM, then reprojected);
predictions are the same squares shifted by N(0, 2 m) and shrunk or grown a little, with 5 % of the
truths missed and 5 % extra predictions. The timed part is ``evaluate()``, the whole scoring (reprojection
to UTM, STRtree, intersections, matching, AP at ten thresholds, pixel IoU, outline quality, breakdowns).
Prints wall time and peak resident memory, with the machine named.
"""

from __future__ import annotations

import argparse
import resource
import time

import geopandas as gpd
import numpy as np
import shapely

from hardware import machine

from openfootprints.evaluation.metrics import evaluate


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def synthetic_tables(n: int, seed: int = 0) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    i = np.arange(n)
    x, y = 500000 + (i % side) * 30.0, 600000 + (i // side) * 30.0
    truth = shapely.box(x, y, x + 10, y + 10)
    keep = rng.random(n) > 0.05
    dx, dy = rng.normal(0, 2, (2, n))
    grow = rng.normal(0, 0.5, n)
    pred = shapely.box(x + dx - grow, y + dy - grow, x + dx + 10 + grow, y + dy + 10 + grow)[keep]
    n_extra = n - len(pred)
    ex = 500000 + rng.integers(0, side, n_extra) * 30.0 + 15
    ey = 600000 + rng.integers(0, side, n_extra) * 30.0 + 15
    pred = np.concatenate([pred, shapely.box(ex, ey, ex + 8, ey + 8)])
    conf = rng.random(len(pred))
    predicted = gpd.GeoDataFrame({"confidence": conf}, geometry=pred, crs="EPSG:32630").to_crs("EPSG:4326")
    true = gpd.GeoDataFrame(geometry=truth, crs="EPSG:32630").to_crs("EPSG:4326")
    return predicted, true


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    start = time.monotonic()
    predicted, truth = synthetic_tables(args.n)
    made = time.monotonic() - start
    before = peak_rss_gib()
    start = time.monotonic()
    result = evaluate(predicted, truth, grid_m=1000)
    seconds = time.monotonic() - start
    peak = peak_rss_gib()  # before machine(), which imports torch
    s = result.scores
    print(f"machine: {machine()}")
    print(f"{len(predicted):,} predicted vs {len(truth):,} true polygons (built in {made:.0f} s)")
    print(f"evaluate: {seconds:.1f} s; peak RSS {peak:.2f} GiB (before evaluate {before:.2f} GiB)")
    print(f"F1 {s.f1:.4f}, AP50 {s.ap:.4f}, AP50:95 {s.ap_50_95:.4f}, pixel IoU {s.pixel_iou:.4f}, "
          f"{len(result.by_region)} regions")


if __name__ == "__main__":
    main()
