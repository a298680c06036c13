"""Benchmark: PyTorch against ONNX Runtime on the CPU, model-only and end to end, in one run.

    python bench/cpu_engines.py --model demo_output/model.ofp [--size 4096]

Model only: the bundle's network on one batch of windows already in memory, for each engine, and the
largest absolute difference between their probabilities; also, model only, PyTorch in bfloat16 (autocast,
channels-last) where the CPU has bf16 instructions (AVX-512 BF16 or AMX), and the INT8 file beside the bundle
(``export --int8``) when there is one. End to end: ``openfootprints detect`` on a
synthetic ``size``×``size`` px scene at 0.5 m with each engine (read, infer, blend, vectorize, write),
in km²/h, and the ratio to the model-only rate of the same engine. The machine is named in the output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware import machine  # noqa: E402

from openfootprints.model.bundle import load_bundle  # noqa: E402
from openfootprints.model.onnx import OnnxNetwork, export_onnx  # noqa: E402
from openfootprints.model.quantize import usable_int8  # noqa: E402


def windows_per_second(run, batch: np.ndarray, repeats: int) -> float:
    run(batch)
    start = time.monotonic()
    for _ in range(repeats):
        run(batch)
    return len(batch) * repeats / (time.monotonic() - start)


def cpu_has_bf16() -> bool:
    """Whether the CPU has bfloat16 instructions (AVX-512 BF16 or AMX), where PyTorch's bf16 kernels are fast."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_runner(net: torch.nn.Module):
    """The network run in bfloat16 (autocast, channels-last) on float32 batches (N, C, H, W) → float32 logits."""
    net = net.to(memory_format=torch.channels_last)

    def run(b: np.ndarray) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(torch.from_numpy(b).contiguous(memory_format=torch.channels_last)).float().numpy()
    return run


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo_output/model.ofp")
    parser.add_argument("--size", type=int, default=4096, help="scene side in pixels for the end-to-end runs")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", default="bench_output")
    args = parser.parse_args()
    if not Path(args.model).exists():
        sys.exit(f"{args.model}: no such model bundle; run `make demo` first or pass --model")
    bundle = load_bundle(args.model)
    net = bundle.network()
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((args.batch, bundle.architecture.in_channels, bundle.window, bundle.window),
                                dtype=np.float32)
    other_precisions = {}  # name → (windows/s, max |p - p_fp32|)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = OnnxNetwork(export_onnx(bundle, Path(tmp) / "m.onnx"))
        with torch.inference_mode():
            torch_run = lambda b: net(torch.from_numpy(b)).numpy()  # noqa: E731
            reference = sigmoid(torch_run(batch))
            diff = np.abs(reference - sigmoid(onnx(batch))).max()
            rates = {"torch": windows_per_second(torch_run, batch, args.repeats),
                     "onnx": windows_per_second(onnx, batch, args.repeats)}
            if cpu_has_bf16():
                bf16 = bf16_runner(bundle.network())
                other_precisions["PyTorch bf16 (autocast, channels-last)"] = (
                    windows_per_second(bf16, batch, args.repeats), np.abs(sigmoid(bf16(batch)) - reference).max())
        int8 = usable_int8(args.model)
        if int8 is not None:
            int8_net = OnnxNetwork(int8)
            other_precisions["ONNX Runtime INT8"] = (windows_per_second(int8_net, batch, args.repeats),
                                                     np.abs(sigmoid(int8_net(batch)) - reference).max())
    km2_per_window = (bundle.window - 2 * bundle.halo_m / bundle.resolution_m) ** 2 * bundle.resolution_m**2 / 1e6

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("openfootprints"))
    scene = work / f"scene_{args.size}.tif"
    if not scene.exists():
        subprocess.run([exe, "synth", str(scene), f"synth.width={args.size}", f"synth.height={args.size}",
                        "synth.seed=7"], check=True, capture_output=True)
    end_to_end = {}
    for engine in ("torch", "onnx"):
        start = time.monotonic()
        out = subprocess.run([exe, "detect", str(scene), "--model", args.model, "--out",
                              str(work / f"b_{engine}.parquet"), "--quiet", f"detect.engine={engine}",
                              f"detect.batch_size={args.batch}"], check=True, capture_output=True, text=True).stdout
        summary = json.loads(out)
        end_to_end[engine] = (summary, time.monotonic() - start)

    print(f"machine: {machine()}")
    print(f"model: {bundle.architecture.encoder}, window {bundle.window} px, batch {args.batch}")
    print(f"max |p_torch - p_onnx| = {diff:.2e}")
    for engine in ("torch", "onnx"):
        summary, wall = end_to_end[engine]
        model_km2h = rates[engine] * km2_per_window * 3600
        e2e = summary["km2_per_hour"]  # read, infer, blend, vectorize, write (process start-up excluded)
        print(f"{engine:>5}: model only {rates[engine]:.2f} windows/s = {model_km2h:.0f} km²/h; "
              f"end to end {e2e:.0f} km²/h ({summary['total_s']:.0f} s in the "
              f"stages, {wall:.0f} s with start-up; {summary['buildings']} buildings), {e2e / model_km2h:.2f} of model only")
    for name, (rate, d) in other_precisions.items():
        print(f"{name}: model only {rate:.2f} windows/s = {rate * km2_per_window * 3600:.0f} km²/h "
              f"({rate / rates['onnx']:.2f}× ONNX Runtime fp32), max |p - p_fp32| = {d:.3f}")
    ratio_e2e = end_to_end["onnx"][0]["km2_per_hour"] / end_to_end["torch"][0]["km2_per_hour"]
    print(f"ONNX Runtime / PyTorch: model only {rates['onnx'] / rates['torch']:.2f}×, end to end {ratio_e2e:.2f}×")


if __name__ == "__main__":
    main()
