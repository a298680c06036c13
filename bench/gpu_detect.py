"""Benchmark: detection on a GPU, model-only ceiling against end to end, in one run.

    python bench/gpu_detect.py [--model demo_output/model.ofp] [--size 16384] [--batch 32] [--compile]
    python bench/gpu_detect.py --device cpu --size 1024 --batch 2 --repeats 2    # a dry run without a GPU

Model only: the bundle's network on batches already in device memory, in fp32, then bf16 autocast with
channels-last (and torch.compile with ``--compile``): windows/s and km²/h at the bundle's resolution
(each window adds its stride² of new ground). End to end: ``detect`` with the PyTorch engine on that
device and the same settings (read in a thread, pinned copies, infer, blend, vectorize beside inference,
write), in km²/h, and its ratio to the model-only figure of the same settings. Without ``--model`` an
untrained bundle of the default architecture is used (speed does not depend on the weights). Peak GPU
memory and the machine are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware import machine  # noqa: E402

from openfootprints.configuration import load_config  # noqa: E402
from openfootprints.model.bundle import Bundle, load_bundle, save_bundle  # noqa: E402
from openfootprints.model.network import Architecture, build_network  # noqa: E402
from openfootprints.pipeline import detect  # noqa: E402
from openfootprints.synth.scene import SceneSpec, write_scene  # noqa: E402


def default_bundle(path: Path) -> Path:
    net = build_network(Architecture(), pretrained=False)
    return save_bundle(Bundle(architecture=Architecture(), bands=[1, 2, 3], mean=[120.0] * 3, std=[40.0] * 3,
                              resolution_m=0.5, state_dict=net.state_dict()), path)


def windows_per_second(net, batch: torch.Tensor, repeats: int, bf16: bool) -> float:
    device = batch.device
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for _ in range(3):  # warm-up (and compilation)
            net(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.monotonic()
        for _ in range(repeats):
            net(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(batch) * repeats / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--size", type=int, default=16384, help="scene side in pixels for the end-to-end run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workdir", default="bench_output")
    args = parser.parse_args()
    device = torch.device(args.device)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else default_bundle(work / "untrained.ofp")
    bundle = load_bundle(model)
    km2_per_window = (bundle.window - 2 * bundle.halo_m / bundle.resolution_m) ** 2 * bundle.resolution_m**2 / 1e6

    net = bundle.network().to(device)
    batch = torch.randn(args.batch, bundle.architecture.in_channels, bundle.window, bundle.window, device=device)
    rates = {"fp32": windows_per_second(net, batch, args.repeats, bf16=False)}
    fast_net = net.to(memory_format=torch.channels_last)
    fast_batch = batch.contiguous(memory_format=torch.channels_last)
    bf16 = device.type == "cuda"
    label = ("bf16 + " if bf16 else "") + "channels_last" + (" + compile" if args.compile else "")
    if args.compile:
        fast_net = torch.compile(fast_net)
    rates[label] = windows_per_second(fast_net, fast_batch, args.repeats, bf16=bf16)
    del fast_net, net, batch, fast_batch

    scene = work / f"scene_{args.size}.tif"
    if not scene.exists():
        write_scene(SceneSpec(width=args.size, height=args.size, seed=7), scene, work / f"scene_{args.size}.geojson")
    cfg = load_config(["detect.engine=torch", f"detect.device={args.device}", f"detect.batch_size={args.batch}",
                       f"detect.compile={str(args.compile).lower()}", "tracking.energy=false"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        summary = detect(cfg, str(scene), str(model), str(Path(tmp) / "b.parquet"), progress=False)

    print(f"machine: {machine()}")
    print(f"model: {bundle.architecture.encoder} U-Net, window {bundle.window} px, halo {bundle.halo_m} m, "
          f"batch {args.batch}, {bundle.resolution_m} m/px")
    for name, rate in rates.items():
        print(f"model only, {name}: {rate:.1f} windows/s = {rate * km2_per_window * 3600:.0f} km²/h "
              f"({rate * km2_per_window:.2f} km²/s)")
    ceiling = rates[label] * km2_per_window * 3600
    print(f"end to end ({label}): {summary['km2_per_hour']:.0f} km²/h over {summary['area_km2']:.1f} km² "
          f"({summary['buildings']} buildings, {summary['total_s']:.1f} s; prediction {summary['predict_s']:.1f} s), "
          f"{summary['km2_per_hour'] / ceiling:.2f} of model only")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(json.dumps({"rates_windows_per_s": rates, "end_to_end": summary}, default=str))


if __name__ == "__main__":
    main()
