"""Start-up: seconds from a fresh Python process to the first window's probabilities, per model file.

    python bench/startup.py --model demo_output/model.ofp [--runs 3]

For each way of giving the model — the bundle (``.ofp``: PyTorch is imported to read it, and the ONNX export comes
from the cache after the first use; with a usable INT8 file beside it, that file alone, without PyTorch), and its
ONNX export (``.onnx``: PyTorch is never imported) — a new process
imports the detection path, loads the model for the CPU as ``detect`` does, and runs one 512 px window. Printed:
the median over ``--runs`` of each step (imports, model load, first window) and whether torch was imported. The
first run of each also pays the operating system's file cache; the median does not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware import machine  # noqa: E402

CHILD = r"""
import json, sys, time
start = float(sys.argv[2])
from openfootprints.configuration import load_config
from openfootprints.pipeline import load_predictor
import numpy as np
imported = time.time()
cfg = load_config([])
predictor = load_predictor(cfg, sys.argv[1], sys.argv[3])
loaded = time.time()
n = len(predictor.bundle.bands)
predictor(np.zeros((1, n, 512, 512), np.float32))
first = time.time()
print(json.dumps({"imports_s": imported - start, "load_s": loaded - imported, "first_window_s": first - loaded,
                  "total_s": first - start, "torch_imported": "torch" in sys.modules}))
"""


def one_run(model: Path, workdir: str) -> dict:
    start = time.time()
    done = subprocess.run([sys.executable, "-c", CHILD, str(model), repr(start), workdir], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a model bundle (.ofp)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "model.onnx"
        subprocess.run([sys.executable, "-m", "openfootprints.cli", "export", str(args.model), "--out", str(onnx)],
                       check=True, capture_output=True)
        print(f"# start-up to the first 512 px window, median of {args.runs} runs; {machine()}")
        print("| model file | imports (s) | model load (s) | first window (s) | total (s) | torch imported |")
        print("|---|---|---|---|---|---|")
        from openfootprints.model.quantize import usable_int8

        bundle_label = ("bundle (.ofp) with its INT8 file beside it" if usable_int8(args.model)
                        else "bundle (.ofp), ONNX export cached")
        for label, model in ((bundle_label, args.model), ("ONNX export (.onnx)", onnx)):
            runs = [one_run(model, tmp) for _ in range(args.runs + 1)][1:]  # the first fills the caches
            med = {k: statistics.median(r[k] for r in runs) for k in ("imports_s", "load_s", "first_window_s",
                                                                      "total_s")}
            print(f"| {label} | {med['imports_s']:.2f} | {med['load_s']:.2f} | {med['first_window_s']:.2f} | "
                  f"{med['total_s']:.2f} | {'yes' if runs[0]['torch_imported'] else 'no'} |")


if __name__ == "__main__":
    main()
