"""Benchmark: how fast probability rasters become building polygons (no model involved).

    python bench/vectorize_speed.py --size 6000

Draws a synthetic scene's footprints (``openfootprints synth``), rasterizes them as a probability raster
(uint8; 230 inside a footprint, blurred edges, so touching buildings merge as real predictions do), then
times :func:`openfootprints.vectorize.polygons.vectorize` on it with the detect defaults (threshold 0.5,
grown by 1 m, simplified by 0.25 m, at least 5 m²). Then the same footprints as the energy target
(:func:`openfootprints.data.chips.energy_target`, ramp 2 m, blurred the same way) decoded as an energy model's
bundle says (seeds ≥ 0.75 grown by up to 2 m over ≥ 0.5), and the ratio of the two speeds. Prints buildings per
second and the machine. Run it on two commits to compare versions of the vectorizer.
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

from openfootprints.data.chips import building_ids, energy_target
from openfootprints.io.vector import read_polygons
from openfootprints.synth.scene import SceneSpec, write_scene
from openfootprints.vectorize.polygons import vectorize


def probability_raster(size: int, folder: Path, target: str = "eroded") -> Path:
    """A ``size`` px square probability raster at 0.5 m drawn from synthetic footprints (written once): the
    building mask, or with ``target="energy"`` the energy target with a ramp of 2 m."""
    out = folder / f"probabilities_{size}{'' if target == 'eroded' else '_' + target}.tif"
    if out.exists():
        return out
    image, labels = folder / f"scene_{size}.tif", folder / f"scene_{size}.geojson"
    write_scene(SceneSpec(width=size, height=size, seed=11), image, labels)
    with rasterio.open(image) as src:
        profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform, compress="deflate", tiled=True)
    footprints = read_polygons(labels).to_crs(profile["crs"])
    if target == "energy":
        ids = building_ids(footprints.geometry.to_numpy(), profile["transform"], (size, size))
        prob = ndimage.uniform_filter(energy_target(ids, ramp_px=4) * 240, size=3)
    else:
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
    print(f"machine: {machine()}")
    rates = {}
    for target, kw in (("eroded", dict(grow_m=1.0)), ("energy", dict(grow_m=2.0, seed_threshold=0.75))):
        raster = probability_raster(args.size, folder, target)
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            found = vectorize(str(raster), threshold=0.5, simplify_m=0.25, min_area_m2=5.0, **kw)
            seconds.append(time.perf_counter() - start)
        best = min(seconds)
        rates[target] = len(found.polygons) / best
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{target} decoding, {args.size}×{args.size} px ({args.size**2 * 0.25 / 1e6:.1f} km² at 0.5 m): "
              f"{len(found.polygons)} buildings in {best:.2f} s (best of {args.repeats}) = "
              f"{rates[target]:,.0f} buildings/s, {args.size**2 * 0.25 / 1e6 / best * 3600:,.0f} km²/h; "
              f"peak RSS {peak:.2f} GiB")
    print(f"energy / eroded, buildings per second: {rates['energy'] / rates['eroded']:.2f}")


if __name__ == "__main__":
    main()
