"""Decoding settings against places: would other thresholds than the bundle's find the buildings better, and
does a choice made on one place carry over to another?

    python bench/decoding.py --model runs/real/base-s0-80min/model.ofp [--data ../shared/data]

Runs the network once per held-out place of ``bench/real.py`` (the probability raster kept), then vectorizes it
over a grid of decoding settings — the seed level (energy bundles), the footprint threshold and the smallest
building kept (``detect.min_area_m2``) — and scores each at IoU 0.5 as ``bench/real.py`` does (true buildings
mostly off the imagery left out). Prints F1 per place for every setting, the bundle's own settings first, then
the transfer: the best setting of each place applied to the others. Choosing on the places that are scored is
tuning to the test; only the transfer rows say what a setting chosen elsewhere would bring.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware import machine  # noqa: E402
from real import CLI, DATA, HELD_OUT, ROOT  # noqa: E402

SEEDS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9)
THRESHOLDS = (0.4, 0.5, 0.6)
MIN_AREAS_M2 = (5.0, 20.0)


def probabilities(model: Path, scene: Path, out: Path) -> Path:
    """The model's probability (or energy) raster of ``scene`` (made once)."""
    if not out.exists():
        subprocess.run(CLI + ["detect", str(scene), "--model", str(model), "--out", str(out.with_suffix(".parquet")),
                              "--quiet", "tracking.energy=false", f"detect.probabilities={out}"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out


def f1_of(raster: Path, truth, setting: tuple[float | None, float, float], grow_m: float,
          simplify_m: float = 0.5, min_confidence: float = 0.0) -> tuple[float, int]:
    """F1 at IoU 0.5 and the number of buildings found with ``setting`` (seed level, threshold, min area m²), those
    under ``min_confidence`` dropped."""
    from openfootprints.evaluation.metrics import evaluate
    from openfootprints.export.buildings import buildings_table
    from openfootprints.vectorize.polygons import vectorize

    seed, threshold, min_area = setting
    found = vectorize(str(raster), threshold, grow_m, simplify_m, min_area, seed_threshold=seed,
                      min_confidence=min_confidence)
    table = buildings_table(found.polygons, found.confidence, found.crs, min_area_m2=min_area)
    return evaluate(table, truth).scores.f1, len(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "real" / "base-s0-80min" / "model.ofp")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default: %(default)s)")
    parser.add_argument("--work", type=Path, help="where the probability rasters go (default: beside the model)")
    args = parser.parse_args()
    from openfootprints.evaluation.run import on_imagery
    from openfootprints.io.raster import open_scene
    from openfootprints.io.vector import read_polygons
    from openfootprints.model.bundle import load_bundle
    from openfootprints.pipeline import bundle_cut

    bundle = load_bundle(args.model)
    work = args.work or args.model.parent / "decoding"
    work.mkdir(parents=True, exist_ok=True)
    energy = bundle.target == "energy"
    own = (bundle.seed_threshold, bundle.threshold, 5.0)
    grid = [own] + [s for s in itertools.product(SEEDS if energy else (None,), THRESHOLDS, MIN_AREAS_M2) if s != own]
    scores: dict[str, list[tuple[float, int]]] = {}
    for place, (image, labels) in HELD_OUT.items():
        scene = args.data / "oam" / image
        truth, _ = on_imagery(read_polygons(args.data / "oam" / labels, fix_invalid=True), open_scene(str(scene)), 0.5)
        raster = probabilities(args.model, scene, work / f"{place}.tif")
        # detect's own confidence cut wherever detect would apply it (at the bundle's threshold)
        scores[place] = [f1_of(raster, truth, s, bundle.label_erosion_m, min_confidence=bundle_cut(bundle, s[1]))
                         for s in grid]
    places = list(scores)
    print(f"{args.model} ({bundle.target} target, confidence cut {bundle.min_confidence:.3f} at threshold "
          f"{bundle.threshold:g}, as detect applies it), on {machine()}\n")
    print("| seed level | threshold | min area m² | " + " | ".join(f"{p} F1 (found)" for p in places) + " | mean F1 |")
    print("|---" * (4 + len(places)) + "|")
    for k, (seed, threshold, area) in enumerate(grid):
        cells = " | ".join(f"{scores[p][k][0]:.3f} ({scores[p][k][1]})" for p in places)
        mean = sum(scores[p][k][0] for p in places) / len(places)
        label = " (the bundle's)" if k == 0 else ""
        print(f"| {seed if seed is not None else '–'}{label} | {threshold:g} | {area:g} | {cells} | {mean:.3f} |")
    print("\nTransfer: the best setting of one place, applied to the others (against the bundle's own settings)\n")
    for chosen_on in places:
        best = max(range(len(grid)), key=lambda k: scores[chosen_on][k][0])
        others = ", ".join(f"{p} {scores[p][best][0]:.3f} (own settings {scores[p][0][0]:.3f})"
                           for p in places if p != chosen_on)
        print(f"- chosen on {chosen_on}: {grid[best]} (F1 there {scores[chosen_on][best][0]:.3f}) → {others}")


if __name__ == "__main__":
    main()
