"""How clean the outlines are, and what cleaning them costs in accuracy: vertices per building against IoU.

    python bench/outlines.py --model src/openfootprints/model/base_model.ofp [--simplify 0,0.25,0.5,0.75,1.0]
                             [--regularize 0,1] [--out bench_output/outlines]

Detects each held-out OAM place once (keeping its probability raster), then vectorizes that raster with each
simplification tolerance (Douglas-Peucker, metres, on the pixel outline) and regularization setting, and scores
every variant against the true footprints at IoU 0.5: F1, mean IoU of matches, pixel IoU, and the median number
of vertices per building beside the truth's. Prints a table and the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware import machine  # noqa: E402

from openfootprints.configuration import load_config  # noqa: E402
from openfootprints.evaluation.metrics import evaluate  # noqa: E402
from openfootprints.export.buildings import buildings_table  # noqa: E402
from openfootprints.io.vector import read_polygons  # noqa: E402
from openfootprints.model.bundle import load_bundle  # noqa: E402
from openfootprints.pipeline import detect  # noqa: E402
from openfootprints.vectorize.polygons import vectorize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OAM = ROOT.parent / "shared" / "data" / "oam"
PLACES = ["nairobi_ke", "kampala_ug"]


def median_vertices(polygons) -> float:
    return float(np.median(shapely.get_num_coordinates(shapely.get_exterior_ring(np.asarray(polygons))) - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "src" / "openfootprints" / "model" / "base_model.ofp"))
    parser.add_argument("--simplify", default="0,0.25,0.5,0.75,1.0", help="tolerances in metres, comma-separated")
    parser.add_argument("--regularize", default="0,1", help="regularization tolerances in metres, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("bench_output/outlines"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(args.model)
    print(f"machine: {machine()}")
    print("| place | simplify m | regularize m | F1 | mean IoU of matches | pixel IoU | median vertices (truth) |")
    print("|---|---|---|---|---|---|---|")
    for place in PLACES:
        prob = args.out / f"{place}.prob.tif"
        cfg = load_config(["tracking.energy=false", f"detect.probabilities={prob}"])
        detect(cfg, str(OAM / place), args.model, str(args.out / f"{place}.parquet"), progress=False)
        truth = read_polygons(OAM / place / "labels.geojson", fix_invalid=True)
        for simplify in map(float, args.simplify.split(",")):
            for regularize in map(float, args.regularize.split(",")):
                found = vectorize(str(prob), bundle.threshold, bundle.label_erosion_m, simplify, min_area_m2=5.0,
                                  seed_threshold=bundle.seed_threshold, regularize_m=regularize)
                table = buildings_table(found.polygons, found.confidence, found.crs, min_area_m2=5.0)
                s = evaluate(table, truth).scores
                print(f"| {place} | {simplify:g} | {regularize:g} | {s.f1:.3f} | {s.mean_matched_iou:.3f} | "
                      f"{s.pixel_iou:.3f} | {median_vertices(table.geometry):.0f} "
                      f"({median_vertices(truth.geometry):.0f}) |", flush=True)


if __name__ == "__main__":
    main()
