"""Benchmark: how fast probability rasters become building polygons (no model involved).

    python bench/vectorize_speed.py --size 6000

Draws a synthetic scene's footprints (``openfootprints synth``), rasterizes them as a probability raster
(uint8; 230 inside a footprint, blurred edges, so touching buildings merge as real predictions do), then
times :func:`openfootprints.vectorize.polygons.vectorize` on it with the detect defaults (threshold 0.5,
grown by 1 m, simplified by 0.25 m, at least 5 m²). Prints buildings per second and the machine. Run it
on two commits to compare versions of the vectorizer.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import rasterize
from scipy import ndimage

from hardware import machine

from openfootprints.io.vector import read_polygons
from openfootprints.synth.scene import SceneSpec, write_scene
from openfootprints.vectorize.polygons import vectorize


def probability_raster(size: int, folder: Path) -> Path:
    """A ``size`` px square probability raster at 0.5 m drawn from synthetic footprints (written once)."""
    out = folder / f"probabilities_{size}.tif"
    if out.exists():
        return out
    image, labels = folder / f"scene_{size}.tif", folder / f"scene_{size}.geojson"
    write_scene(SceneSpec(width=size, height=size, seed=11), image, labels)
    with rasterio.open(image) as src:
        profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform, compress="deflate", tiled=True)
    footprints = read_polygons(labels).to_crs(profile["crs"])
    inside = rasterize(((g, 1) for g in footprints.geometry), out_shape=(size, size),
                       transform=profile["transform"], dtype="uint8")
    prob = ndimage.uniform_filter(inside.astype(np.float32) * 230, size=3)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.round(prob).astype(np.uint8)[None])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=6000, help="raster side in pixels (0.5 m each)")
    parser.add_argument("--workdir", default="bench_output", help="where the rasters go")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    raster = probability_raster(args.size, folder)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        found = vectorize(str(raster), threshold=0.5, grow_m=1.0, simplify_m=0.25, min_area_m2=5.0)
        seconds.append(time.perf_counter() - start)
    best = min(seconds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"machine: {machine()}")
    print(f"{args.size}×{args.size} px ({args.size**2 * 0.25 / 1e6:.1f} km² at 0.5 m): {len(found.polygons)} buildings "
          f"in {best:.2f} s (best of {args.repeats}) = {len(found.polygons) / best:,.0f} buildings/s, "
          f"{args.size**2 * 0.25 / 1e6 / best * 3600:,.0f} km²/h; peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
