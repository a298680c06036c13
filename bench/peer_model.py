"""Benchmark: the network other tools use (smp U-Net on ResNet-18) through our pipeline, beside our best model.

    python bench/peer_model.py --model runs/real/gap-s1-66ep/model.ofp [--size 8192]

On one synthetic 0.5 m scene of ``size``² px (``openfootprints synth``), each in a new process, timed with its peak
resident memory (``wait4``):

1. **a plain PyTorch window loop** with the peer network, as a script would write it: windows read with rasterio,
   normalized, run in batches of 4, the centre of each window written to a uint8 probability GeoTIFF;
2. **``detect`` with the peer network** on ONNX Runtime (the CPU default) and on PyTorch (``detect.engine=torch``);
3. **``detect`` with our model** (``--model``; beside its bundle, the INT8 file when its check passed).

The windows are the same in every run (512 px, ``detect``'s 32 m overlap), so the plain loop and ``detect`` differ
only in the pipeline. The peer network has random weights (speed does not depend on them) and is decoded at a
threshold of 0.99 so that nothing is vectorized: what its rows compare is reading, the network, blending and
writing, as the plain loop does. Our model's row is a whole detection, buildings included. Each row also gives
the network's model-only rate (batches already in memory, as ``detect`` runs them; the INT8 file's when that ran)
and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_memory import SCENE_M, model_only_rate, ran_int8, run_child, windows_of  # noqa: E402
from hardware import machine  # noqa: E402

PEER_DECODER = [256, 128, 64, 32, 16]  # smp's U-Net default decoder, which the peers use


def peer_bundle(path: Path) -> Path:
    """An smp U-Net ResNet-18 (random weights) as a bundle for 0.5 m RGB imagery, written to ``path`` once."""
    if path.exists():
        return path
    import torch

    from openfootprints.model.bundle import Bundle, save_bundle
    from openfootprints.model.network import Architecture, build_network

    torch.manual_seed(0)
    arch = Architecture(encoder="resnet18", decoder_channels=PEER_DECODER)
    net = build_network(arch)
    return save_bundle(Bundle(arch, [1, 2, 3], [120.0, 120.0, 120.0], [60.0, 60.0, 60.0], SCENE_M,
                              training={"note": "random weights, for speed only"}, state_dict=net.state_dict()), path)


def plain_loop(scene: str, model: str, out: str, batch: int = 4) -> None:
    """What a script without our pipeline does: windows on the same lattice, the network in PyTorch, the centre of
    each window (its stride) written as uint8 probabilities."""
    import rasterio
    import torch
    from rasterio.windows import Window

    from openfootprints.model.bundle import load_bundle

    bundle = load_bundle(model)
    net = bundle.network()
    halo = round(bundle.halo_m / bundle.resolution_m)
    size, stride = bundle.window, bundle.window - 2 * halo
    mean, std = np.array(bundle.mean, np.float32)[:, None, None], np.array(bundle.std, np.float32)[:, None, None]
    with rasterio.open(scene) as src, torch.inference_mode():
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform, compress="deflate", tiled=True)
        starts = [(r, c) for r in range(-halo, src.height - halo, stride) for c in range(-halo, src.width - halo, stride)]
        with rasterio.open(out, "w", **profile) as dst:
            for k in range(0, len(starts), batch):
                chunk = starts[k:k + batch]
                x = torch.from_numpy(np.stack([(padded(src, bundle.bands, r, c, size) - mean) / std for r, c in chunk]))
                probs = torch.sigmoid(net(x))[:, 0].numpy()
                for (r, c), p in zip(chunk, probs):
                    h, w = min(stride, src.height - r - halo), min(stride, src.width - c - halo)
                    dst.write(np.round(p[halo:halo + h, halo:halo + w] * 255).astype(np.uint8)[None],
                              window=Window(c + halo, r + halo, w, h))


def padded(src, bands: list[int], row: int, col: int, size: int) -> np.ndarray:
    """(bands, size, size) float32: the window at (row, col), zeros where it leaves the scene."""
    from rasterio.windows import Window

    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + size, src.height), min(col + size, src.width)
    image = src.read(bands, window=Window(c0, r0, c1 - c0, r1 - r0)).astype(np.float32)
    return np.pad(image, ((0, 0), (r0 - row, row + size - r1), (c0 - col, col + size - c1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="our model bundle (required but for --plain-loop)")
    parser.add_argument("--size", type=int, default=8192, help="scene side in pixels (0.5 m each)")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    parser.add_argument("--plain-loop", nargs=3, metavar=("SCENE", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        plain_loop(*args.plain_loop)
        return
    if not args.model:
        parser.error("--model is required")
    exe = str(Path(sys.executable).with_name("openfootprints"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    scene = args.workdir / f"scene_{args.size}.tif"
    if not scene.exists():
        run_child([exe, "synth", str(scene), f"synth.width={args.size}", f"synth.height={args.size}", "synth.seed=7"])
    peer = str(peer_bundle(args.workdir / "peer_unet_resnet18.ofp"))
    area = (args.size * SCENE_M) ** 2 / 1e6
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            ("U-Net ResNet-18, plain PyTorch loop", peer, "torch",
             [sys.executable, __file__, "--plain-loop", str(scene), peer, f"{tmp}/plain.tif"]),
            ("U-Net ResNet-18, detect (ONNX Runtime)", peer, "onnx",
             [exe, "detect", str(scene), "--model", peer, "--out", f"{tmp}/onnx.parquet", "--quiet",
              "detect.threshold=0.99", "tracking.energy=false"]),
            ("U-Net ResNet-18, detect (detect.engine=torch)", peer, "torch",
             [exe, "detect", str(scene), "--model", peer, "--out", f"{tmp}/torch.parquet", "--quiet",
              "detect.engine=torch", "detect.threshold=0.99", "tracking.energy=false"]),
            (f"our model ({Path(args.model).parent.name}), detect (default engine)", args.model, "onnx",
             [exe, "detect", str(scene), "--model", args.model, "--out", f"{tmp}/ours.parquet", "--quiet",
              "tracking.energy=false"]),
        ]
        # every run before any model-only rate: a child's peak RSS (wait4) starts from this process's at the fork
        done = [(run, *run_child(run[3])) for run in runs]
        for (name, model, engine, argv), wall, peak, stdout in done:
            summary = json.loads(stdout) if argv[1] == "detect" else {}
            int8 = ran_int8(model, summary)
            rate = model_only_rate(model, 4, 5, engine, int8)  # windows/s of the network that ran
            model_only = area / (windows_of(model, args.size) / rate) * 3600
            rows.append((name, wall, peak, summary.get("buildings", "–"), summary.get("engine", "torch (plain)"),
                         area / wall * 3600, model_only))
    print(f"machine: {machine()}")
    print(f"scene: {args.size}² px at {SCENE_M} m = {area:.1f} km²\n")
    print("| run | engine | wall | peak RSS | buildings | end to end | model only | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, wall, peak, n, engine, e2e, model_only in rows:
        print(f"| {name} | {engine} | {wall:.0f} s | {peak:.2f} GiB | {n} | {e2e:,.0f} km²/h | {model_only:,.0f} km²/h "
              f"| {e2e / model_only:.2f} |")


if __name__ == "__main__":
    main()
