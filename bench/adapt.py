"""The learning curve of adapting to a new place: how few labels does fine-tuning need?

    python bench/adapt.py --base runs/real/base-s0-80min/model.ofp [--place nairobi_ke] [--minutes 4]
                          [--counts 10 25 50] [--seed 0] [--orders random suggest] [--runs runs/adapt]
                          [--doc docs/adapt.md] [--variant default|frozen|lowlr|anchor|gap|gap_lowlr] [--kinds finetune scratch]

The place (one the base model never saw, not even for validation) is cut in two at the median longitude of its
buildings: the west half is the pool a mapper labels from, the east half is only scored. Labelling happens as a
mapper does it, chip by chip: ``openfootprints suggest`` cuts the place into ``suggest.chip_m`` chips and ranks
them; the pool's chips are taken in a random order (or in ``suggest``'s order), and every building in a chip is
labelled, until at least N buildings are. For each N the base model is fine-tuned on those labels (``finetune``,
the chips as the labelled area) and, for comparison, a model is trained from ImageNet weights on the same labels
for the same time (``train recipe=base``). Each model detects the east half; F1 at IoU 0.5 and pixel IoU are
written to ``--doc`` with the minutes each run took on this machine. N = 0 is the base model as it is; "all" is
every building of the pool, the pool as the area. Runs are kept in ``--runs``/PLACE and reused: what depends on
the base model under ``base-<its sha256>/``, training from scratch beside it (the same for any base). The doc's
table gathers every order and seed run so far with that base (``--seed`` draws another random order), and every
fine-tuning recipe (``--variant``: the encoder frozen, a lower learning rate, weights anchored to the base's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from openfootprints.model.bundle import file_sha256, load_bundle
from real import CLI, DATA, ROOT, machine, run  # noqa: I001  (bench/ is on sys.path when run as a script)

CHIP_M = 30  # labelling chips: the scattered tiles of the OAM places hold few whole larger ones
# fine-tuning recipes compared (--variant): name → overrides on top of ``finetune --model BASE recipe=base``
VARIANTS: dict[str, list[str]] = {
    "default": [],  # today the same as gap (recipe=base and finetune bring the parent's gap weights); the
    # "finetune" rows of docs/adapt.md were measured before session 10, without them
    "frozen": ["train.freeze_encoder=true"],  # the decoder learns, the encoder and its statistics stay the base's
    "lowlr": ["finetune.lr=0.0001"],  # a fifth of the default learning rate
    "anchor": ["train.anchor_decay=20"],  # L2-SP: about 1 % of the way back to the base's weights per step
    "gap": ["data.gap_weight_w0=10"],  # the parent's own loss: gap weights as in recipe=base since session 10
    "gap_lowlr": ["data.gap_weight_w0=10", "finetune.lr=0.0001"],
}
PLACES = {"kampala_ug": ("kampala_ug", "kampala_ug/labels.geojson"),
          "nairobi_ke": ("nairobi_ke", "nairobi_ke/labels.geojson")}


def split_place(labels: gpd.GeoDataFrame) -> tuple[float, list[float]]:
    """The median longitude of the buildings' centroids, and the scored east half's bbox in degrees."""
    centroids = labels.to_crs(4326).geometry.centroid
    middle = float(np.median(centroids.x))
    west, south, east, north = labels.to_crs(4326).total_bounds
    return middle, [middle, south - 1e-4, east + 1e-4, north + 1e-4]


def ranked_chips(base: Path, image: str, out: Path) -> gpd.GeoDataFrame:
    """Every chip of the place, ranked by ``suggest`` with the base model (EPSG:4326)."""
    chips = out / "chips.geojson"
    if not chips.exists():
        run(CLI + ["suggest", image, "--model", str(base), "--n", "100000", "--out", str(chips), "--quiet",
                   f"suggest.chip_m={CHIP_M}", "suggest.min_valid=0.3"], out / "log.txt")
    return gpd.read_file(chips)


def labelled_set(chips: gpd.GeoDataFrame, labels: gpd.GeoDataFrame, n: int | None
                 ) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Chips taken in their order until at least ``n`` buildings are labelled (``None``: all chips). A mapper
    traces every building a chip touches, whole, so the labelled area is the chips together with those buildings
    (an area that cut buildings would teach their outside parts as background). Returns (buildings, area)."""
    geometry = labels.geometry.to_numpy()
    taken, touched = [], np.zeros(len(labels), bool)
    for i, chip in enumerate(chips.geometry):
        if n is not None and touched.sum() >= n:
            break
        taken.append(i)
        touched |= shapely.intersects(geometry, chip)
    area = shapely.union_all(np.concatenate([chips.geometry.to_numpy()[taken], geometry[touched]]))
    return labels[touched], gpd.GeoDataFrame(geometry=[area], crs=chips.crs)


def random_order(chips: gpd.GeoDataFrame, seed: int) -> gpd.GeoDataFrame:
    """The chips shuffled by ``seed`` from their places on the ground, not from the base model's ranking: the same
    seed labels the same chips whatever the base, so training from scratch is run once for all bases."""
    corner = chips.geometry.bounds
    by_place = chips.iloc[np.lexsort((corner.minx.to_numpy(), corner.miny.to_numpy()))]
    return by_place.sample(frac=1.0, random_state=seed)


def chips_in(area: gpd.GeoDataFrame, chips: gpd.GeoDataFrame) -> int:
    """How many of the chips lie in the labelled area (for the table)."""
    return int(chips.geometry.representative_point().within(area.geometry.iloc[0]).sum())


def score(model: Path, image: str, truth: str, bbox: list[float], out: Path, name: str,
          also_cut: float | None = None) -> dict:
    """Detect the scored half (once, every building kept) and evaluate it (every time: cheap, and always with
    today's protocol) with the model's own confidence cut, as ``detect`` applies it by default; with
    ``also_cut``, also with that cut (``f1_also_cut``: a fine-tuned model scored with its parent's cut), and
    without any (``f1_uncut``)."""
    table = out / f"{name}.parquet"
    box = "[" + ",".join(f"{v:.7f}" for v in bbox) + "]"
    if not table.exists():
        run(CLI + ["detect", image, "--model", str(model), "--out", str(table), "--quiet", "tracking.energy=false",
                   f"detect.bbox={box}", "detect.min_confidence=0"], out / "log.txt")
    found = gpd.read_parquet(table)

    def evaluate(cut: float, suffix: str) -> dict:
        kept, metrics = out / f"{name}{suffix}.kept.parquet", out / f"{name}{suffix}.metrics.json"
        found[found["raw_confidence"] >= cut].to_parquet(kept)
        run(CLI + ["evaluate", str(kept), truth, "--json", str(metrics), f"evaluate.bbox={box}", "--imagery", image,
                   "data.fix_invalid=true"], out / "log.txt")
        return json.loads(metrics.read_text())

    own_cut = load_bundle(model).min_confidence
    m = evaluate(own_cut, "")
    result = {"f1": m["f1"], "pixel_iou": m["pixel_iou"], "precision": m["precision"], "recall": m["recall"],
              "cut": own_cut, "f1_uncut": evaluate(0.0, "-uncut")["f1"] if own_cut > 0 else m["f1"]}
    if also_cut is not None:
        result["f1_also_cut"] = evaluate(also_cut, "-also")["f1"] if also_cut != own_cut else m["f1"]
    return result


def adapt_run(kind: str, base: Path, image: str, subset: Path, area: Path, out: Path, minutes: float,
              variant: str = "default", epochs: int | None = None) -> float:
    """Fine-tune the base (with the ``variant``'s overrides), or train from ImageNet weights, on one labelled set,
    for ``minutes`` or (given) ``epochs`` of 32 steps with no time limit; returns minutes taken."""
    model = out / "model.ofp"
    start = time.monotonic()
    common = ["--image", image, "--labels", str(subset), "--area", str(area), "--out", str(model),
              "data.val_fraction=0", "tracking.energy=false", f"tracking.uri=file:{out.parent / 'mlruns'}"]
    budget = [f"train.max_epochs={epochs}", "train.max_minutes=0", "finetune.max_minutes=0"] if epochs else \
        [f"train.max_minutes={minutes}", f"finetune.max_minutes={minutes}"]
    if kind == "finetune":
        cmd = CLI + ["finetune", "--model", str(base), *common, "recipe=base", *budget, *VARIANTS[variant]]
    else:
        cmd = CLI + ["train", *common, "recipe=base", *budget]
    run(cmd, out / "log.txt")
    return (time.monotonic() - start) / 60


STANDARD_EPOCHS = 3  # the budget of every run in docs/adapt.md since session 10; runs of another get folders of their own


def budget_tag(args) -> str:
    """How the runs of another budget than the standard one are named apart: ``-8ep``, ``-4min`` (else nothing),
    so that a run is never reused for another budget."""
    if args.epochs == STANDARD_EPOCHS:
        return ""
    return f"-{args.epochs}ep" if args.epochs else f"-{args.minutes:g}min"


def base_folder(args, place: str | None = None) -> Path:
    """Where the runs that depend on the base model go: one folder per place and base (by content)."""
    return args.runs / (place or args.place) / f"base-{file_sha256(args.base)[:12]}"


def curve(args, order: str) -> list[dict]:
    """Fine-tune (and, in random order, train from scratch) on growing labelled sets; the rows are also kept in
    the base's folder (``rows-<order>.json``), so that the doc gathers every order and seed run so far."""
    image, truth = (str(DATA / "oam" / p) for p in PLACES[args.place])
    labels = gpd.read_file(truth)
    middle, test_box = split_place(labels)
    folder = args.runs / args.place
    with_base = base_folder(args)
    with_base.mkdir(parents=True, exist_ok=True)
    chips = ranked_chips(args.base, image, with_base)
    pool = chips[chips.geometry.centroid.x < middle]
    if order == "random":
        pool = random_order(pool, args.seed)
    pool_labels = labels[(labels.geometry.centroid.x < middle).to_numpy()]
    rows = [{"order": order, "n": 0, "kind": "base", "minutes": 0.0,
             **score(args.base, image, truth, test_box, with_base, "base")}] if order == "random" else []
    for n in [*args.counts, None] if order == "random" else args.counts:  # "all" is the same set in any order
        subset, area = labelled_set(pool, pool_labels, n)
        tag = f"{order}{args.seed if order == 'random' else ''}-{'all' if n is None else n}"
        for kind in (args.kinds if order == "random" else ("finetune",)):
            name = (kind if kind == "scratch" or args.variant == "default" else f"{kind}-{args.variant}") + budget_tag(args)
            out = (with_base if kind == "finetune" else folder) / f"{tag}-{name}"  # scratch: the same for any base
            trained = out / "result.json"  # what was trained, and how long it took
            if not trained.exists():
                out.mkdir(parents=True, exist_ok=True)
                subset.to_file(out / "labels.geojson")
                area.to_file(out / "area.geojson")
                took = adapt_run(kind, args.base, image, out / "labels.geojson", out / "area.geojson", out,
                                 args.minutes, args.variant, args.epochs)
                trained.write_text(json.dumps({"order": order, "n": len(subset), "kind": name,
                                               "minutes": round(took, 1), "chips": chips_in(area, pool)}))
            record = {k: v for k, v in json.loads(trained.read_text()).items()
                      if k in ("order", "n", "kind", "minutes", "chips")}
            parent_cut = load_bundle(args.base).min_confidence if kind == "finetune" else None
            rows.append({**record, **score(out / "model.ofp", image, truth, test_box, out, "test", parent_cut)})
    seed = args.seed if order == "random" else None
    budget = f"--epochs {args.epochs}" if args.epochs else f"--minutes {args.minutes:g}"
    rows = [{**r, "seed": seed, "budget": budget} for r in rows]
    variant = "" if args.variant == "default" else f"-{args.variant}"
    (with_base / f"rows-{order}{'' if seed is None else seed}{variant}{budget_tag(args)}.json").write_text(
        json.dumps(rows, indent=1))
    return rows


def place_table(args, place: str) -> str | None:
    """The table of every order and seed run so far with this base in ``place`` (None if none was)."""
    rows = [r for path in sorted(base_folder(args, place).glob("rows-*.json")) for r in json.loads(path.read_text())]
    if not rows:
        return None
    frame = pd.DataFrame(rows).drop_duplicates(["order", "seed", "n", "kind"])  # the base's row is in every file
    frame = frame.sort_values(["order", "seed", "n", "kind"], kind="stable")
    budgets = " / ".join(sorted({r["budget"] for r in rows}))
    lines = ["| chips chosen | seed | labelled buildings | model | F1 @ IoU 0.5 | pixel IoU | precision | recall | "
             "minutes | confidence cut | F1 without a cut | F1 with the base's cut |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in frame.itertuples():
        seed = "–" if pd.isna(r.seed) else f"{int(r.seed)}"
        lines.append(f"| {r.order} | {seed} | {r.n} | {r.kind} | {r.f1:.3f} | {r.pixel_iou:.3f} | {r.precision:.3f} | "
                     f"{r.recall:.3f} | {r.minutes:.1f} | {getattr(r, 'cut', 0):.3f} | {r.f1_uncut:.3f} | {also(r)} |")
    stamp = (f"**{place}**: base `{args.base}`, each run's budget `{budgets}` (`python bench/adapt.py --base "
             f"{args.base} --place {place} {budgets} --variant ...`).")
    return stamp + "\n\n" + "\n".join(lines)


def also(row) -> str:
    """A fine-tuned model's F1 with its parent's confidence cut, for the table ("–" where there is none)."""
    value = getattr(row, "f1_also_cut", float("nan"))
    return "–" if pd.isna(value) else f"{value:.3f}"


def write_doc(args) -> None:
    """One table per place run so far with this base, between the doc's adapt-table markers."""
    tables = [t for t in (place_table(args, place) for place in sorted(PLACES, key=lambda p: p != "nairobi_ke")) if t]
    text = args.doc.read_text() if args.doc.exists() else "<!-- adapt-table:begin -->\n<!-- adapt-table:end -->\n"
    head, rest = text.split("<!-- adapt-table:begin -->")
    _, tail = rest.split("<!-- adapt-table:end -->")
    block = f"Measured on {machine()}.\n\n" + "\n\n".join(tables)
    args.doc.write_text(f"{head}<!-- adapt-table:begin -->\n{block}\n<!-- adapt-table:end -->{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="a base model that never saw the place")
    parser.add_argument("--place", default="nairobi_ke", choices=sorted(PLACES))
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget of each run")
    parser.add_argument("--epochs", type=int, help="instead of --minutes: this many epochs of 32 steps per run, with no "
                                                   "time limit (equal steps when runs share the cores)")
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--seed", type=int, default=0, help="the random order of the chips")
    parser.add_argument("--orders", nargs="+", default=["random", "suggest"], choices=["random", "suggest"])
    parser.add_argument("--variant", default="default", choices=sorted(VARIANTS),
                        help="the fine-tuning recipe: " + "; ".join(f"{k}: {' '.join(v) or 'finetune.*'}"
                                                                    for k, v in VARIANTS.items()))
    parser.add_argument("--kinds", nargs="+", default=["finetune", "scratch"], choices=["finetune", "scratch"],
                        help="in random order, fine-tune and/or train from scratch (the same for any base)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "adapt")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "adapt.md")
    args = parser.parse_args()
    rows = []
    for order in args.orders:
        rows += curve(args, order)
        write_doc(args)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
