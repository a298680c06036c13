"""The shipped base model's INT8 file: quantized, scored on the held-out places in the same run as its fp32 network,
and shipped beside the base model only when no place loses more than 1 point of F1 or of pixel IoU.

    python bench/ship_int8.py [--runs runs/real] [--doc docs/real.md] [--chips 32]

Quantizes ``src/openfootprints/model/base_model.ofp`` (``openfootprints export --int8``'s quantization, calibrated on
``--chips`` chips of the four training places), then detects and scores every held-out place of ``bench/real.py``
(Nairobi, Kampala, Nairobi at 0.5 m; Xiamen's block where it is here) twice: with the INT8 file and with the fp32
ONNX export of the same bundle (``detect.engine=onnx``). The comparison is the INT8 file's check
(``quantization.check``, ``on: held-out places``): ``detect`` runs ``base_model.int8.onnx`` in the base model's
place on the CPU (no PyTorch imported, less memory, faster) only when that check passed for these very bytes
(:func:`openfootprints.model.quantize.usable_int8`). Why not the validation chips, as ``export --int8`` checks a
user's bundle: the base model's validation split is 11 chips of 256 px, too few for a bar of 1 point; the held-out
places hold about 480 true buildings.

Both rows go to the tables of ``--doc``; when the check fails, nothing is shipped and the INT8 file stays in
``RUNS/champion-<sha8>-int8-<recipe>/``.

    python bench/ship_int8.py --qat-minutes 25 [--qat-lr 5e-05] [--seed 0]

Quantization-aware: first fine-tunes the base model's weights on its training places for ``--qat-minutes`` with
INT8 simulated in every forward pass (``train.qat=true``, :mod:`openfootprints.model.fake_quant`; from the base
model's weights, at a low learning rate), then quantizes the base model with those weights (its normalization,
decoding and record otherwise), and checks that file against the base model's own fp32 network exactly as above: the
INT8 file stands for the base model, so it is judged against it. Shipped, it would run on the CPU in the base model's
place with weights of its own (its record's ``quantization.weights_from``), as any INT8 file runs rounded ones: what
makes it stand in is the held-out check, not equal weights.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real  # noqa: E402

TOLERANCE = 0.01  # at most 1 point of F1 and of pixel IoU below fp32 on any held-out place (issue 16's bar)
CHIPS = 32  # calibration chips by default
QAT_LR = 5e-5  # quantization-aware fine-tuning's peak learning rate: a sixth of a continuation's, to stay near the model
RECIPE = "biascorrected"  # names the quantization in folder names: a file made another way is never reused


def held_out_check(fp32: dict, int8: dict, tolerance: float = TOLERANCE) -> dict:
    """The INT8 file's check from two ``bench/real.py`` results of the same model (fp32, INT8): each held-out OAM
    place's F1 and pixel IoU under both, and whether none is more than ``tolerance`` below fp32."""
    def scores(result: dict) -> dict[str, dict[str, float]]:
        return {p["place"]: {"f1": p["f1"], "pixel_iou": p["pixel_iou"]} for p in result["places"]
                if p["place"] != "xiamen_block"}  # its labels are incomplete: it judges nothing

    before, after = scores(fp32), scores(int8)
    if set(before) != set(after):
        raise ValueError(f"fp32 scored {sorted(before)} but INT8 {sorted(after)}")
    within = all(after[p][k] >= before[p][k] - tolerance for p in before for k in ("f1", "pixel_iou"))
    return {"on": "held-out places (bench/ship_int8.py)", "places": {p: {"fp32": before[p], "int8": after[p]}
                                                                     for p in before},
            "tolerance": tolerance, "within_tolerance": within}


def qat_weights(out: Path, minutes: float, lr: float, seed: int) -> Path:
    """The base model's weights fine-tuned quantization-aware on its training places into ``out/qat`` (once)."""
    from openfootprints.model.base import BASE_MODEL

    model = out / "qat" / "model.ofp"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        real.train(model.parent, [*real.VARIANTS["gap"][1], "train.qat=true", f"train.init={BASE_MODEL}",
                                  f"train.lr={lr:g}"], minutes, seed)
    return model


def quantized(out: Path, chips: int, qat: Path | None = None) -> Path:
    """The base model quantized to INT8 into ``out`` (once), calibrated on its training places; with ``qat``, a
    quantization-aware fine-tune of it (:func:`qat_weights`), its weights in the base model's place."""
    from dataclasses import replace

    from openfootprints.model.base import BASE_MODEL
    from openfootprints.model.bundle import file_sha256, load_bundle
    from openfootprints.model.quantize import int8_beside, quantize_int8

    path = int8_beside(out / BASE_MODEL.name)
    if not path.exists():
        bundle = load_bundle(BASE_MODEL)
        scenes = [str(real.DATA / image) for image, _ in bundle.training["scenes"]]  # paths relative to the data
        weights_from = None
        if qat is not None:
            tuned = load_bundle(qat)
            if tuned.architecture != bundle.architecture or tuned.training.get("parent", {}).get("path") != str(BASE_MODEL):
                raise SystemExit(f"{qat}: not a fine-tune of {BASE_MODEL}")
            bundle = replace(bundle, state_dict=tuned.state_dict)
            weights_from = {"kind": "quantization-aware fine-tune (train.qat)", "file": str(qat),
                            "sha256": file_sha256(qat), "steps": tuned.training.get("steps"),
                            "seconds": tuned.training.get("seconds"), "energy_kwh": tuned.training.get("energy_kwh"),
                            "lr": tuned.training["config"]["train"]["lr"]}
        quantize_int8(bundle, path, scenes, chips, source=BASE_MODEL, weights_from=weights_from)
    return path


def int8_result(out: Path, int8: Path, runs: Path, fp32: dict, chips: int = CHIPS, qat_steps: int | None = None
                ) -> dict:
    """The INT8 file scored on every held-out place into ``out``, as a result row beside the fp32 ``result``."""
    import json

    path = out / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    result = {**fp32, "run": out.name, "places": real.score_places(out, int8, runs, []),
              "label": f"{real.champion_tag()} (shipped), INT8 file, biases corrected"
                       + (f", weights fine-tuned quantization-aware ({qat_steps} steps)" if qat_steps else "")
                       + (f", calibrated on {chips} chips" if chips != CHIPS else "")}
    path.write_text(json.dumps(result, indent=2))
    return result


def describe(check: dict) -> str:
    return "; ".join(f"{place} F1 {s['fp32']['f1']:.3f} → {s['int8']['f1']:.3f}, pixel IoU {s['fp32']['pixel_iou']:.3f}"
                     f" → {s['int8']['pixel_iou']:.3f}" for place, s in check["places"].items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=real.ROOT / "runs" / "real")
    parser.add_argument("--doc", type=Path, default=real.ROOT / "docs" / "real.md")
    parser.add_argument("--data", type=Path, default=real.DATA, help="the shared data folder (default: %(default)s)")
    parser.add_argument("--chips", type=int, default=CHIPS, help="calibration chips of 256 px (default: %(default)s)")
    parser.add_argument("--qat-minutes", type=float, default=0, help="first fine-tune the weights quantization-aware "
                        "for this long (default: %(default)s, plain post-training quantization)")
    parser.add_argument("--qat-lr", type=float, default=QAT_LR, help="its peak learning rate (default: %(default)g)")
    parser.add_argument("--seed", type=int, default=0, help="its seed (default: %(default)s)")
    args = parser.parse_args()
    if args.qat_minutes < 0 or not 0 < args.qat_lr < 1:
        raise SystemExit("--qat-minutes must be ≥ 0 and --qat-lr in (0, 1)")
    real.DATA = args.data
    if not (real.DATA / "oam").exists():
        raise SystemExit(f"{real.DATA / 'oam'}: not found; the benchmark needs the open OAM data")
    from openfootprints.model.base import BASE_MODEL
    from openfootprints.model.bundle import load_bundle
    from openfootprints.model.quantize import int8_beside, record_check

    first = args.runs / f"{real.champion_tag()}-int8"  # the fp32 scores, whatever the quantization
    # this quantization (biases corrected since session 17; the folder without a suffix holds the file before),
    # another calibration: folders beside, the same fp32 scores
    out = first.with_name(f"{first.name}-{RECIPE}" + ("" if args.chips == CHIPS else f"-{args.chips}chips")
                          + (f"-qat{args.qat_minutes:g}min-lr{args.qat_lr:g}-s{args.seed}" if args.qat_minutes else ""))
    out.mkdir(parents=True, exist_ok=True)
    qat = qat_weights(out, args.qat_minutes, args.qat_lr, args.seed) if args.qat_minutes else None
    int8 = quantized(out, args.chips, qat)
    fp32 = real.champion_result(first / "fp32", args.runs, ["detect.tta=1", "detect.engine=onnx"])
    steps = load_bundle(qat).training.get("steps") if qat else None
    result = int8_result(out / "int8", int8, args.runs, fp32, args.chips, steps)
    check = held_out_check(fp32, result)
    record_check(int8, check)
    real.write_doc_rows(args.doc, [fp32, result])
    print(describe(check))
    if not check["within_tolerance"]:
        print(f"not shipped: a held-out place loses more than {TOLERANCE:g} (the INT8 file stays in {int8})")
        return
    shutil.copyfile(int8, int8_beside(BASE_MODEL))
    print(f"shipped {int8_beside(BASE_MODEL)} ({real.size_mib(int8_beside(BASE_MODEL))}): detect runs it by default "
          "on the CPU")


if __name__ == "__main__":
    main()
