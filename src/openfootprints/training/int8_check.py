"""Whether a bundle's INT8 quantization keeps its quality, measured on the bundle's own validation chips.

``export --int8`` quantizes a bundle (:mod:`openfootprints.model.quantize`); this module runs the bundle's fp32
network and the INT8 file side by side on the validation chips the bundle was trained with, decodes both as
detection would (the bundle's threshold, growth, minimum area and confidence cut) and compares F1 at IoU 0.5 and
pixel IoU against the chips' true buildings. The result goes into the INT8 file's training record; ``detect``
runs the INT8 file by default on the CPU only when neither score is more than :data:`TOLERANCE` below fp32's.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from openfootprints.data.chips import ChipDataset
from openfootprints.model.bundle import Bundle
from openfootprints.predict.engines import Engine, OnnxEngine, TorchEngine
from openfootprints.training.confidence_cut import f1_at_cut
from openfootprints.training.run import ChipDecoding, bundle_validation_chips, validation_matches

TOLERANCE = 0.01  # at most 1 point of F1 and of pixel IoU below fp32 (issue 16's bar)


@dataclass(frozen=True)
class Scores:
    """One engine's scores on the validation chips: F1 at IoU 0.5 with the bundle's cut, pixel IoU of the
    footprints (output ≥ the bundle's threshold) against the true ones."""

    f1: float
    pixel_iou: float


def engine_scores(engine: Engine, chips: ChipDataset, decoding: ChipDecoding, batch_size: int) -> Scores:
    """``engine``'s scores on ``chips`` (validation chips, their labelled area as valid pixels)."""
    outputs: list[tuple[np.ndarray, np.ndarray]] = []
    windows = chips.windows or []
    inter = union = 0
    for start in range(0, len(chips), batch_size):
        items = [chips[i] for i in range(start, min(start + batch_size, len(chips)))]
        images = np.stack([image.numpy() for image, _, _ in items]).astype(np.float32)
        for output, (_, _, weight), window in zip(engine(images), items, windows[start:start + batch_size]):
            valid = weight[0].numpy() > 0
            truth = (chips.raw_chip(*window).ids > 0) & valid
            found = (output >= decoding.threshold) & valid
            inter += int((truth & found).sum())
            union += int((truth | found).sum())
            outputs.append((output, valid))
    f1 = f1_at_cut(*validation_matches(outputs, chips, decoding), decoding.min_confidence)
    return Scores(f1=f1, pixel_iou=inter / max(union, 1))


def compare_engines(reference: Engine, quantized: Engine, chips: ChipDataset, decoding: ChipDecoding,
                    batch_size: int = 8) -> dict:
    """fp32 (``reference``) against INT8 (``quantized``) on ``chips``: the record stored in the INT8 file
    (``quantization.check``)."""
    fp32 = engine_scores(reference, chips, decoding, batch_size)
    int8 = engine_scores(quantized, chips, decoding, batch_size)
    within = int8.f1 >= fp32.f1 - TOLERANCE and int8.pixel_iou >= fp32.pixel_iou - TOLERANCE
    return {"chips": len(chips), "fp32": asdict(fp32), "int8": asdict(int8), "tolerance": TOLERANCE,
            "within_tolerance": bool(within)}


def check_int8(bundle: Bundle, int8_path: str | os.PathLike) -> dict:
    """:func:`compare_engines` of the bundle's fp32 network and the INT8 file on the bundle's own validation chips, rebuilt from its training record
    (raises :class:`~openfootprints.errors.InputError` when they cannot be)."""
    chips, decoding, batch_size = bundle_validation_chips(bundle)
    return compare_engines(TorchEngine(bundle, "cpu"), OnnxEngine(int8_path), chips, decoding, batch_size)
