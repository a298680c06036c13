"""Benchmark: peak memory and speed of ``openfootprints detect`` on a large synthetic scene.

    python bench/detect_memory.py --size 20000 --model demo_output/model.ofp

Synthesizes a ``size``×``size`` px scene at 0.5 m (drawn tile by tile), then runs ``detect`` on it in a
child process and reports that process's peak resident memory (from ``wait4``), its wall time and the
rate in km²/h, beside the model-only rate (the same network on batches already in memory) measured in
the same run. The machine is named in the output. Needs a trained bundle (``make demo`` writes one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hardware import machine

from openfootprints.model.bundle import load_bundle
from openfootprints.model.onnx import OnnxNetwork, export_onnx


def run_child(argv: list[str]) -> tuple[float, float, str]:
    """Run a command; return (wall seconds, peak RSS in GiB of that process, stdout)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed with status {proc.returncode}")
    return time.monotonic() - start, usage.ru_maxrss / 2**20, out


def model_only_rate(bundle_path: str, batch: int, repeats: int, engine: str) -> float:
    """Windows per second of the bundle's network (PyTorch or ONNX Runtime) on batches already in memory."""
    bundle = load_bundle(bundle_path)
    x = torch.randn(batch, bundle.architecture.in_channels, bundle.window, bundle.window)
    if engine == "onnx":
        with tempfile.TemporaryDirectory() as tmp:
            net = OnnxNetwork(export_onnx(bundle, Path(tmp) / "m.onnx"))
            run = lambda: net(x.numpy())  # noqa: E731
            return _rate(run, batch, repeats)
    net = bundle.network()
    with torch.inference_mode():
        return _rate(lambda: torch.sigmoid(net(x)), batch, repeats)


def _rate(run, batch: int, repeats: int) -> float:
    run()
    start = time.monotonic()
    for _ in range(repeats):
        run()
    return batch * repeats / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20000, help="scene side in pixels (0.5 m each)")
    parser.add_argument("--model", default="demo_output/model.ofp", help="trained model bundle")
    parser.add_argument("--workdir", default="bench_output", help="where the scene and results go")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--engine", default="onnx", choices=["onnx", "torch"], help="detection engine on the CPU")
    args = parser.parse_args()
    if not Path(args.model).exists():
        sys.exit(f"{args.model}: no such model bundle; run `make demo` first or pass --model")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("openfootprints"))
    scene = work / f"scene_{args.size}.tif"
    if not scene.exists():
        t, _, _ = run_child([exe, "synth", str(scene), f"synth.width={args.size}", f"synth.height={args.size}",
                             "synth.seed=7"])
        print(f"synthesized {scene} in {t:.0f} s")
    out = work / f"buildings_{args.size}.parquet"
    wall, peak_gib, stdout = run_child([exe, "detect", str(scene), "--model", args.model, "--out", str(out),
                                        "--quiet", f"detect.batch_size={args.batch}", f"detect.engine={args.engine}"])
    summary = json.loads(stdout)
    bundle = load_bundle(args.model)
    halo_px = round(bundle.halo_m / bundle.resolution_m)
    windows = int(np.ceil((args.size - 2 * halo_px) / (bundle.window - 2 * halo_px))) ** 2
    rate = model_only_rate(args.model, args.batch, 5, args.engine)
    area = summary["area_km2"]
    model_only_km2h = area / (windows / rate) * 3600
    print(f"machine: {machine()}")
    print(f"scene: {args.size}×{args.size} px at 0.5 m = {area:.1f} km², {windows} windows of {bundle.window} px")
    print(f"detect ({args.engine}): {wall:.0f} s wall (predict {summary['predict_s']:.0f} s, then vectorize and write "
          f"{summary['vectorize_s']:.0f} s), {summary['buildings']} buildings, peak RSS {peak_gib:.2f} GiB")
    print(f"end to end: {area / wall * 3600:.0f} km²/h; model only: {model_only_km2h:.0f} km²/h "
          f"({rate:.2f} windows/s); ratio {area / wall * 3600 / model_only_km2h:.2f}")


if __name__ == "__main__":
    main()
