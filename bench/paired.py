"""Two runs of ``bench/real.py`` on the same held-out places: the F1 difference on each place and its 95 % bootstrap
interval over 50 m squares of the place (:mod:`openfootprints.evaluation.compare`).

    python bench/paired.py FIRST SECOND [--runs runs/real]

FIRST and SECOND are folders holding the detected buildings of each held-out OAM place (``PLACE.parquet``): a
challenger's run folder, the champion's ``vs-champion-…`` folder inside it, an INT8 file's ``int8`` folder. Both are
scored again exactly as ``bench/real.py`` scores them (same truth, same buildings off the imagery left out), with
the grid of squares added; nothing is detected. Prints one row per place: F1 of each, the difference (second minus
first) and the interval. A difference whose interval holds 0 is one this place cannot tell from chance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real  # noqa: E402

from openfootprints.configuration import load_config  # noqa: E402
from openfootprints.evaluation.compare import (CELL_M, interval, mean_difference,  # noqa: E402
                                               resampled_differences, square_names)
from openfootprints.evaluation.run import evaluate_files  # noqa: E402


def place_files(runs: Path, data: Path) -> dict[str, tuple[str, str]]:
    """Each held-out OAM place of bench/real.py → (the imagery it was detected from, its true buildings), in the
    shared data folder ``data``."""
    files = {place: (str(data / "oam" / image), str(data / "oam" / labels))
             for place, (image, labels) in real.HELD_OUT.items()}
    if "nairobi_ke" in files:  # also detected from its imagery resampled (bench/real.py's score_places)
        files[f"nairobi_ke@{real.RESAMPLED_M}m"] = (str(runs / f"nairobi_ke_{real.RESAMPLED_M}m.tif"),
                                                    files["nairobi_ke"][1])
    return files


def squares(folder: Path, place: str, imagery: str, truth: str) -> tuple[float, list[dict]]:
    """F1 of ``folder``'s buildings of ``place`` and their counts per square of :data:`CELL_M` metres."""
    cfg = load_config(["data.fix_invalid=true", f"evaluate.grid_m={CELL_M:g}"])
    result = evaluate_files(cfg, str(folder / f"{place}.parquet"), truth, imagery=imagery)
    return result.scores.f1, result.by_region


def paired(first: Path, second: Path, runs: Path, data: Path) -> dict[str, dict]:
    """Per held-out place present in both folders: each F1 and the difference's interval
    (:func:`~openfootprints.evaluation.compare.resampled_differences`, each place resampled with its own seed); and,
    under ``"mean"``, the interval of the mean difference over the places the champion rule averages (bench/real.py's
    ``HELD_OUT``) when both have them."""
    rows, spreads = {}, {}
    for seed, (place, (imagery, truth)) in enumerate(place_files(runs, data).items()):
        if not ((first / f"{place}.parquet").exists() and (second / f"{place}.parquet").exists()):
            continue
        (f1_a, a), (f1_b, b) = squares(first, place, imagery, truth), squares(second, place, imagery, truth)
        spreads[place] = resampled_differences(a, b, seed=seed)
        rows[place] = {"first": f1_a, "second": f1_b, **interval(*spreads[place]),
                       "squares": len(square_names(a, b))}
    if all(place in spreads for place in real.HELD_OUT):
        rows["mean"] = {"first": sum(rows[p]["first"] for p in real.HELD_OUT) / len(real.HELD_OUT),
                        "second": sum(rows[p]["second"] for p in real.HELD_OUT) / len(real.HELD_OUT),
                        **mean_difference([spreads[p] for p in real.HELD_OUT]), "squares": None}
    return rows


def describe(rows: dict[str, dict]) -> str:
    def name(place: str) -> str:
        return f"mean of {' and '.join(real.HELD_OUT)}" if place == "mean" else place

    return "\n".join(f"{name(place)}: F1 {r['first']:.3f} → {r['second']:.3f}, {r['difference']:+.3f} "
                     f"({r['level']:.0%} interval {r['low']:+.3f} … {r['high']:+.3f}"
                     + (f", {r['squares']} squares)" if r["squares"] is not None else ")")
                     for place, r in rows.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--runs", type=Path, default=real.ROOT / "runs" / "real")
    parser.add_argument("--data", type=Path, default=real.DATA, help="the shared data folder (default: %(default)s)")
    args = parser.parse_args()
    rows = paired(args.first, args.second, args.runs, args.data)
    if not rows:
        raise SystemExit(f"{args.first} and {args.second}: no held-out place detected in both")
    print(describe(rows))


if __name__ == "__main__":
    main()
