"""Benchmark: peak memory and speed of ``openfootprints detect`` on a large synthetic scene.

    python bench/detect_memory.py --size 20000 --model demo_output/model.ofp

Synthesizes a ``size``×``size`` px scene at 0.5 m (drawn tile by tile), then runs ``detect`` on it in a
child process and reports that process's peak resident memory (from ``wait4``), its wall time and the
rate in km²/h, beside the model-only rate (the same network on batches already in memory) measured in
the same run. The machine is named in the output. Needs a trained bundle (``make demo`` writes one).

    python bench/detect_memory.py --size 160000 --sparse-tile 2500 --model demo_output/model.ofp

With ``--sparse-tile T`` the scene is a VRT mosaic of ``size``×``size`` px holding copies of one synthetic
T×T tile along its diagonal and no data elsewhere: every window is read and every row is blended and
vectorized at the scene's full width, but only the windows with data run the model. It measures how memory
grows with the scene's size in minutes instead of the days a 2-core CPU needs to run the model over
25,600 km²; the rate it prints is over the area with data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import torch

from hardware import machine

from openfootprints.model.bundle import load_bundle
from openfootprints.model.onnx import OnnxNetwork, export_onnx
from openfootprints.predict.probabilities import windows_in_flight

SCENE_M = 0.5  # the synthetic scene's ground resolution (openfootprints synth)


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


def model_only_rate(bundle_path: str, batch: int, repeats: int, engine: str, onnx_file: str | None = None,
                    window: int | None = None) -> float:
    """Windows per second of the bundle's network (PyTorch or ONNX Runtime) on batches already in memory, of
    ``window`` px (default the bundle's); with ``onnx_file`` (e.g. the INT8 file detect ran), that file's instead
    of an fp32 export's."""
    bundle = load_bundle(bundle_path)
    side = window or bundle.window
    x = torch.randn(batch, bundle.architecture.in_channels, side, side)
    if engine == "onnx":  # the better of: one run on all cores, two runs at once on half each (as detect does)
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:
            path = onnx_file or export_onnx(bundle, Path(tmp) / "m.onnx")
            whole, half = OnnxNetwork(path), OnnxNetwork(path, max(1, (os.cpu_count() or 2) // 2))
            one = _rate(lambda: whole(x.numpy()), batch, repeats)
            two = _rate(lambda: list(pool.map(lambda _: half(x.numpy()), range(2))), 2 * batch, repeats)
            print(f"model only: {one:.2f} windows/s in one run on all cores, {two:.2f} in two at once")
            return max(one, two)
    net = bundle.network()
    with torch.inference_mode():
        return _rate(lambda: torch.sigmoid(net(x)), batch, repeats)


def windows_of(model: str, side_px: int, window: int | None = None, halo_m: float | None = None) -> int:
    """How many windows ``detect`` runs over a square 0.5 m scene of ``side_px`` (read at the model's resolution),
    of ``window`` px overlapping by ``halo_m`` (default: the bundle's)."""
    bundle = load_bundle(model)
    halo = round((bundle.halo_m if halo_m is None else halo_m) / bundle.resolution_m)
    side = side_px * SCENE_M / bundle.resolution_m
    return int(np.ceil((side - 2 * halo) / ((window or bundle.window) - 2 * halo))) ** 2


def ran_int8(model: str, summary: dict) -> str | None:
    """The INT8 file beside ``model`` when detect's ``summary`` says it ran it (``engine``), else None."""
    from openfootprints.model.quantize import int8_beside

    return str(int8_beside(model)) if "int8" in summary.get("engine", "") else None


def _rate(run, batch: int, repeats: int) -> float:
    run()
    start = time.monotonic()
    for _ in range(repeats):
        run()
    return batch * repeats / (time.monotonic() - start)


def diagonal_mosaic(tile: Path, size: int, folder: Path) -> Path:
    """A VRT mosaic ``size`` px square with copies of ``tile`` (georeferenced VRTs shifted along the diagonal)."""
    from openfootprints.io.mosaic import mosaic_vrt
    import rasterio

    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(tile) as src:
        t, n, crs, dtype, count = src.transform, src.width, src.crs.to_wkt(), src.dtypes[0], src.count
    gdal_type = {"uint8": "Byte", "uint16": "UInt16"}[dtype]
    bands = "".join(f'<VRTRasterBand dataType="{gdal_type}" band="{b}"><SimpleSource><SourceFilename '
                    f'relativeToVRT="0">{tile.resolve()}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource>'
                    f"</VRTRasterBand>" for b in range(1, count + 1))
    copies = []
    for k in range(size // n):
        x, y = t.c + k * n * t.a, t.f + k * n * t.e
        copies.append(folder / f"copy{k:04d}.vrt")
        copies[-1].write_text(f'<VRTDataset rasterXSize="{n}" rasterYSize="{n}"><SRS>{escape(crs)}</SRS>'
                              f"<GeoTransform>{x!r}, {t.a!r}, 0.0, {y!r}, 0.0, {t.e!r}</GeoTransform>{bands}"
                              "</VRTDataset>")
    mosaic = folder / "mosaic.vrt"
    mosaic.write_text(mosaic_vrt(copies))
    return mosaic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20000, help="scene side in pixels (0.5 m each)")
    parser.add_argument("--model", default="demo_output/model.ofp", help="trained model bundle")
    parser.add_argument("--workdir", default="bench_output", help="where the scene and results go")
    parser.add_argument("--batch", type=int, help="detect.batch_size (default: detect's, windows_in_flight)")
    parser.add_argument("--engine", default="auto", choices=["auto", "onnx", "onnx-int8", "torch"],
                        help="detect.engine: auto (the default: INT8 beside the bundle when its check passed, else fp32 "
                             "ONNX Runtime), onnx (fp32), onnx-int8 or torch")
    parser.add_argument("--window", type=int, help="detect.window_px (default: the bundle's)")
    parser.add_argument("--halo-m", type=float, help="detect.halo_m (default: the bundle's)")
    parser.add_argument("--detect", action="append", default=[], metavar="detect.KEY=VALUE",
                        help="another detect override (repeatable), e.g. detect.gdal_cache_mb=64")
    parser.add_argument("--sparse-tile", type=int, default=0,
                        help="data only in copies of one tile of this many px along the diagonal (see above)")
    args = parser.parse_args()
    if any(not o.startswith("detect.") or "=" not in o for o in args.detect):
        sys.exit(f"--detect takes detect.KEY=VALUE overrides, not {args.detect}")
    if not Path(args.model).exists():
        sys.exit(f"{args.model}: no such model bundle; run `make demo` first or pass --model")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("openfootprints"))
    scene = work / f"scene_{args.size}.tif"
    if args.sparse_tile and args.size % args.sparse_tile:
        sys.exit(f"--sparse-tile {args.sparse_tile} must divide --size {args.size}")
    if args.sparse_tile:
        tile = work / f"tile_{args.sparse_tile}.tif"
        if not tile.exists():
            run_child([exe, "synth", str(tile), f"synth.width={args.sparse_tile}", f"synth.height={args.sparse_tile}",
                       "synth.seed=7"])
        scene = diagonal_mosaic(tile, args.size, work / f"sparse_{args.size}_{args.sparse_tile}")
    elif not scene.exists():
        t, _, _ = run_child([exe, "synth", str(scene), f"synth.width={args.size}", f"synth.height={args.size}",
                             "synth.seed=7"])
        print(f"synthesized {scene} in {t:.0f} s")
    out = work / f"buildings_{args.size}.parquet"
    wall, peak_gib, stdout = run_child([exe, "detect", str(scene), "--model", args.model, "--out", str(out),
                                        "--quiet", f"detect.engine={args.engine}",
                                        *([f"detect.batch_size={args.batch}"] if args.batch else []),
                                        *([f"detect.window_px={args.window}"] if args.window else []),
                                        *([f"detect.halo_m={args.halo_m}"] if args.halo_m is not None else []),
                                        *args.detect])
    summary = json.loads(stdout)
    bundle = load_bundle(args.model)
    side = args.sparse_tile or args.size  # the data: one scene, or the tiles along the diagonal
    copies = args.size // args.sparse_tile if args.sparse_tile else 1
    windows = copies * windows_of(args.model, side, args.window, args.halo_m)
    int8 = ran_int8(args.model, summary)
    window = args.window or bundle.window
    repeats = max(2, round(5 * (512 / window) ** 2))  # about the same seconds whatever the window
    batch = args.batch or windows_in_flight(window, 2)
    rate = model_only_rate(args.model, batch, repeats, "torch" if args.engine == "torch" else "onnx", int8,
                           window)
    area = copies * (side * SCENE_M) ** 2 / 1e6
    if args.sparse_tile:
        print(f"sparse scene: {args.size}×{args.size} px ({summary['area_km2']:.0f} km²), data in {copies} tiles of "
              f"{side} px along the diagonal ({area:.1f} km²); windows with data counted approximately")
    model_only_km2h = area / (windows / rate) * 3600
    print(f"machine: {machine()}")
    print(f"scene: {args.size}×{args.size} px at {SCENE_M} m = {area:.1f} km², {windows} windows of {window} px "
          f"at the model's {bundle.resolution_m} m, halo {bundle.halo_m if args.halo_m is None else args.halo_m:g} m")
    print(f"detect ({summary.get('engine', args.engine)}{''.join(', ' + o for o in args.detect)}): {wall:.0f} s wall (predict {summary['predict_s']:.0f} s, then vectorize and write "
          f"{summary['vectorize_s']:.0f} s), {summary['buildings']} buildings, peak RSS {peak_gib:.2f} GiB")
    print(f"end to end: {area / wall * 3600:.0f} km²/h; model only ({'INT8' if int8 else 'fp32'}): "
          f"{model_only_km2h:.0f} km²/h "
          f"({rate:.2f} windows/s); ratio {area / wall * 3600 / model_only_km2h:.2f}")
    if summary.get("energy_kwh") is not None:  # CodeCarbon: RAPL where readable, else the CPU's TDP (an estimate)
        print(f"energy: {summary['energy_kwh'] / area * 1000:.3f} kWh per 1,000 km²")


if __name__ == "__main__":
    main()
