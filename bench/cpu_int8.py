"""Benchmark: INT8 against fp32 ONNX Runtime on the CPU: speed and quality on places the model never saw.

    python bench/cpu_int8.py --model runs/real/base-s0-80min/model.ofp [--out runs/int8]

Exports the bundle to fp32 ONNX and to INT8 (``openfootprints export --int8``, calibrated on 32 chips of the
scenes it was trained on), then for each: model-only windows per second (a batch of 4 windows of 512 px already in
memory, ONNX Runtime on all cores) and, on the held-out places of ``bench/real.py`` (Nairobi, Kampala),
``detect`` then ``evaluate`` (F1 at IoU 0.5, pixel IoU) and the end-to-end detect time. Prints a Markdown table and
the machine, and what ``export --int8``'s own check on the bundle's validation chips said (whether ``detect`` would
run the INT8 file by default): the held-out places show whether that check is right. INT8 is worth using by
default only if F1 and pixel IoU stay within 1 point of fp32.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware import machine  # noqa: E402
from real import CLI, DATA, HELD_OUT  # noqa: E402

from openfootprints.model.bundle import load_bundle  # noqa: E402
from openfootprints.model.onnx import OnnxNetwork, export_onnx  # noqa: E402


def windows_per_second(path: Path, batch: np.ndarray, repeats: int = 5) -> float:
    net = OnnxNetwork(path)
    net(batch)
    start = time.monotonic()
    for _ in range(repeats):
        net(batch)
    return len(batch) * repeats / (time.monotonic() - start)


def held_out(model: Path, out: Path) -> dict:
    scores = {}
    for place, (image, labels) in HELD_OUT.items():
        table, metrics = out / f"{model.stem}-{place}.parquet", out / f"{model.stem}-{place}.json"
        start = time.monotonic()
        subprocess.run(CLI + ["detect", str(DATA / "oam" / image), "--model", str(model), "--out", str(table),
                              "--quiet", "tracking.energy=false"], check=True, capture_output=True)
        seconds = time.monotonic() - start
        subprocess.run(CLI + ["evaluate", str(table), str(DATA / "oam" / labels), "--json", str(metrics),
                              "--imagery", str(DATA / "oam" / image), "data.fix_invalid=true"],
                       check=True, capture_output=True)
        m = json.loads(metrics.read_text())
        scores[place] = {"f1": m["f1"], "pixel_iou": m["pixel_iou"], "detect_s": seconds}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/int8"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(args.model)
    fp32, int8 = args.out / "model.onnx", args.out / "model.int8.onnx"
    export_onnx(bundle, fp32)
    start = time.monotonic()
    said = subprocess.run(CLI + ["export", str(args.model), "--int8", "--out", str(int8)], check=True,
                          capture_output=True, text=True).stdout.strip()
    quantize_s = time.monotonic() - start  # with the check against fp32 on the bundle's validation chips
    batch = np.random.default_rng(0).normal(size=(4, len(bundle.bands), 512, 512)).astype(np.float32)
    rows = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        rows[name] = {"windows_per_s": windows_per_second(path, batch), "places": held_out(path, args.out)}
    print(f"machine: {machine()}; INT8 quantization and its check took {quantize_s:.0f} s; model {args.model}")
    print(f"export --int8 said: {said}")
    print("| engine | model-only windows/s (512 px) | " + " | ".join(
        f"{p} F1 | {p} pixel IoU | {p} detect s" for p in HELD_OUT) + " |")
    print("|---|---|" + "---|---|---|" * len(HELD_OUT))
    for name, row in rows.items():
        cells = " | ".join(f"{s['f1']:.3f} | {s['pixel_iou']:.3f} | {s['detect_s']:.1f}" for s in row["places"].values())
        print(f"| ONNX Runtime {name} | {row['windows_per_s']:.2f} | {cells} |")
    ratio = rows["int8"]["windows_per_s"] / rows["fp32"]["windows_per_s"]
    print(f"INT8 / fp32 model-only speed: {ratio:.2f}x")


if __name__ == "__main__":
    main()
