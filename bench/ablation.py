"""Ablation of the training recipe on real imagery: each technique on and off, same seed, same budget.

    python bench/ablation.py [--variants baseline,gap,mixup …] [--steps 240] [--runs /tmp/ablation]
                             [--table docs/ablation.md]

Trains the baseline and each variant on ``../shared/data/xiamen`` with the held-out block excluded
(``data.holdout_bounds``; the rest split into 256 m blocks, 20 % for validation), detects in the held-out
block and scores it at IoU 0.5. Every variant trains for the same number of optimizer steps (``--steps``
of ``train.batch_size`` chips; the time budget is set high enough not to bind), so the comparison holds
when the machine is shared; its wall time and energy are reported beside the scores. Each variant's
results are kept in ``RUNS/<variant>/`` and reused, so variants can be run in several sittings; the table
is written from whatever is there. The data is internal: runs stay outside the repository.
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
XIAMEN = ROOT.parent / "shared" / "data" / "xiamen"
HOLDOUT = "[118.0878,24.4659,118.1006,24.4737]"
CLI = [sys.executable, "-m", "openfootprints.cli"]

# name → (what it changes, overrides on top of the common ones)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("plain U-Net, BCE + Dice, flips/rotations, labels eroded 0.5 m", []),
    "erosion_1m": ("labels eroded 1.0 m (grown back 1.0 m at detection)", ["data.label_erosion_m=1.0"]),
    "gap": ("gap-weighted loss, w0 = 10, σ = 2.5 m", ["data.gap_weight_w0=10"]),
    "mixup": ("mixup on half of the batches, α = 0.4", ["train.mixup_prob=0.5"]),
    "mosaic": ("mosaic of four chips on half of the chips", ["augment.mosaic_prob=0.5"]),
    "copy_paste": ("copy-paste of up to 8 buildings into half of the chips", ["augment.copy_paste_prob=0.5"]),
    "jitter": ("photometric jitter (gain, bias, contrast)", ["augment.jitter=0.2"]),
    "rdrop": ("R-Drop, α = 1, decoder dropout 0.1 and drop path 0.1",
              ["train.rdrop_alpha=1.0", "model.dropout=0.1", "model.drop_path=0.1"]),
    "diet": ("EL2N data diet: keep the 50 % hardest chips (10 % hardest dropped)", ["diet.keep=0.5"]),
    "noisy_student": ("noisy student: the baseline as teacher, one round, soft pseudo-labels on the whole scene",
                      []),
    "recommended": ("erosion 1.0 m + gap weights + mixup (the parts that helped on their own)",
                    ["data.label_erosion_m=1.0", "data.gap_weight_w0=10", "train.mixup_prob=0.5"]),
}
NEEDS_TEACHER = {"noisy_student": "baseline"}


def common_overrides(steps: int, batch: int, seed: int) -> list[str]:
    samples = 80 * batch
    epochs = max(1, round(steps / 80))
    return [f"seed={seed}", f"data.holdout_bounds={HOLDOUT}", "data.fix_invalid=true",
            f"train.batch_size={batch}", f"data.samples_per_epoch={samples}", f"train.max_epochs={epochs}",
            "train.max_minutes=240", "tracking.uri=file:" + str(Path("/tmp/ablation-mlruns"))]


def run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def train_variant(name: str, out: Path, overrides: list[str], runs: Path) -> None:
    image, labels = str(XIAMEN / "xiamen_z18_mosaic.tif"), str(XIAMEN / "buildings.geojson")
    if name in NEEDS_TEACHER:
        teacher = runs / NEEDS_TEACHER[name] / "model.ofp"
        if not teacher.exists():
            raise SystemExit(f"{name} needs the {NEEDS_TEACHER[name]} variant first (its model is the teacher)")
        cmd = CLI + ["self-train", "--teacher", str(teacher), "--image", image, "--labels", labels,
                     "--unlabelled", image, "--out", str(out / "model.ofp")]
    else:
        cmd = CLI + ["train", "--image", image, "--labels", labels, "--out", str(out / "model.ofp")]
    run(cmd + overrides, out / "log.txt")


def score_variant(out: Path) -> dict:
    image, labels = str(XIAMEN / "xiamen_z18_mosaic.tif"), str(XIAMEN / "buildings.geojson")
    run(CLI + ["detect", image, "--model", str(out / "model.ofp"), "--out", str(out / "holdout.parquet"),
               "--quiet", f"detect.bbox={HOLDOUT}", "tracking.energy=false"], out / "log.txt")
    run(CLI + ["evaluate", str(out / "holdout.parquet"), labels, "--json", str(out / "metrics.json"),
               f"evaluate.bbox={HOLDOUT}", "data.fix_invalid=true"], out / "log.txt")
    return json.loads((out / "metrics.json").read_text())


def run_variant(name: str, runs: Path, steps: int, batch: int, seed: int) -> dict:
    out = runs / name
    result_path = out / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    train_variant(name, out, common_overrides(steps, batch, seed) + VARIANTS[name][1], runs)
    train_wall = time.monotonic() - start
    import torch

    training = torch.load(out / "model.ofp", map_location="cpu", weights_only=True)["training"]
    metrics = score_variant(out)
    overall = {**metrics, "ap50": metrics["ap"]}
    result = {"variant": name, "what": VARIANTS[name][0], "steps": training.get("steps"),
              "train_s": round(train_wall, 1), "energy_kwh": training.get("energy_kwh"),
              "f1": overall["f1"], "ap50": overall["ap50"], "precision": overall["precision"],
              "recall": overall["recall"], "pixel_iou": overall["pixel_iou"],
              "n_predicted": overall["n_predicted"], "n_true": overall["n_true"],
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")}
    result_path.write_text(json.dumps(result, indent=2))
    return result


def write_table(results: list[dict], path: Path, steps: int, batch: int, seed: int) -> None:
    base = next((r for r in results if r["variant"] == "baseline"), None)
    lines = ["| variant | what | F1 | AP50 | pixel IoU | AP50 vs baseline | steps | train time | kWh |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        delta = f"{r['ap50'] - base['ap50']:+.3f}" if base else "–"
        kwh = f"{r['energy_kwh']:.4f}" if r.get("energy_kwh") is not None else "–"
        lines.append(f"| {r['variant']} | {r['what']} | {r['f1']:.3f} | {r['ap50']:.3f} | {r['pixel_iou']:.3f} | "
                     f"{delta} | {r['steps']} | {r['train_s'] / 60:.1f} min | {kwh} |")
    block = "\n".join(lines)
    text = path.read_text() if path.exists() else ""
    begin, end = "<!-- ablation-table:begin -->", "<!-- ablation-table:end -->"
    header = (f"Measured on {machine()}, {datetime.date.today().isoformat()}; {steps} steps of {batch} chips "
              f"of 256 px per variant, seed {seed}, all on this CPU.")
    if begin in text and end in text:
        text = text[: text.index(begin)] + f"{begin}\n{header}\n\n{block}\n{end}" + text[text.index(end) + len(end):]
    else:
        text += f"\n{begin}\n{header}\n\n{block}\n{end}\n"
    path.write_text(text)


def main() -> None:
    global XIAMEN
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/ablation"))
    parser.add_argument("--table", type=Path, default=ROOT / "docs" / "ablation.md")
    parser.add_argument("--data", type=Path, default=XIAMEN, help="the Xiamen folder (default: %(default)s)")
    args = parser.parse_args()
    XIAMEN = args.data
    if not XIAMEN.exists():
        raise SystemExit(f"{XIAMEN}: not found; the ablation needs the internal Xiamen data")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    for name in names:
        result = run_variant(name, args.runs, args.steps, args.batch, args.seed)
        print(json.dumps(result), flush=True)
    done = [json.loads((args.runs / n / "result.json").read_text()) for n in VARIANTS
            if (args.runs / n / "result.json").exists()]
    write_table(done, args.table, args.steps, args.batch, args.seed)
    print(f"wrote {args.table}")


if __name__ == "__main__":
    main()
