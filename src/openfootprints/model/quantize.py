"""INT8 for the CPU: ONNX Runtime static quantization of an exported bundle, calibrated on real chips.

Weights are quantized per output channel (signed 8 bit) and activations per tensor (unsigned 8 bit), as QDQ
pairs, with ranges measured on normalized chips of real imagery (by default the scenes the bundle was trained on,
from its training record): each activation's range spans the 0.005th to the 99.995th percentile of its values
rather than its extremes, and the first convolution (which sees the image) and the last one (the output head)
stay in fp32. Both choices are measured in bench/RESULTS.md: with plain min/max ranges on every layer INT8 lost
3–4 points of F1 on places the model never saw, with these at most 1 point. Then each quantized convolution's bias
is corrected, in graph order, so that its output's mean per channel on the calibration chips is fp32's
(:func:`correct_biases`): quantization noise that does not average out shifts the probabilities (session 17's
champion: 0.025 lower on average, its validation chips; 0.003 after the correction, with 0.019 mean difference
from fp32 instead of 0.032). The result is an ordinary ONNX model with the bundle's metadata, so ``detect --model
MODEL.int8.onnx`` runs it; its training record says how it was quantized. Whether INT8 keeps a model's quality is
measured, not assumed: on held-out places by ``bench/cpu_int8.py``, and for each export on the bundle's validation
chips (:mod:`openfootprints.training.int8_check`; the shipped base model's on the held-out places,
``bench/ship_int8.py``); ``detect`` runs ``MODEL.int8.onnx`` beside ``MODEL.ofp`` by default on the CPU when that
check passed for this very bundle (:func:`usable_int8`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from openfootprints.data.normalize import Normalization
from openfootprints.errors import InputError
from openfootprints.io.atomic import atomic_path
from openfootprints.io.raster import open_scene
from openfootprints.model.bundle import Bundle, file_sha256
from openfootprints.model.onnx import METADATA_KEY, export_onnx, read_onnx_metadata

CHIP_PX = 256  # calibration chips: ranges of activations, not the window's size, are what is measured
PERCENTILE = 99.99  # activation ranges: a few extreme values no longer stretch the 256 steps of a tensor


def calibration_chips(bundle: Bundle, scenes: list[str], n: int, seed: int = 0,
                      min_valid: float = 0.5) -> list[np.ndarray]:
    """``n`` normalized chips (1, C, 256, 256) float32 from random places of ``scenes`` (at the bundle's ground
    resolution and bands) with at least ``min_valid`` valid pixels, drawn in turn from each scene."""
    if not scenes:
        raise InputError("export --int8: no imagery to calibrate on; give --calibration SCENE (the bundle's "
                         "training record names none that exists here)")
    rng = np.random.default_rng(seed)
    normalize = Normalization(bundle.mean, bundle.std)
    opened = [open_scene(s, bands=bundle.bands, resolution_m=bundle.resolution_m) for s in scenes]
    chips: list[np.ndarray] = []
    tries = 0
    while len(chips) < n and tries < 50 * n:
        scene = opened[tries % len(opened)]
        tries += 1
        size = min(CHIP_PX, scene.width, scene.height) // 32 * 32
        if size < 32:
            continue
        col, row = int(rng.integers(0, scene.width - size + 1)), int(rng.integers(0, scene.height - size + 1))
        image, valid = scene.read(Window(col, row, size, size))
        if valid.mean() >= min_valid:
            chips.append(normalize(image, valid)[None])
    if len(chips) < n:
        raise InputError(f"export --int8: found {len(chips)} of {n} calibration chips with enough valid pixels in "
                         f"{', '.join(scenes)}")
    return chips


def training_scenes(bundle: Bundle) -> list[str]:
    """The imagery the bundle was trained on (its training record), where it still exists."""
    return [s[0] for s in bundle.training.get("scenes", []) if os.path.exists(s[0])]


def quantize_int8(bundle: Bundle, out: str | os.PathLike, scenes: list[str] | None = None, n_chips: int = 32,
                  seed: int = 0, source: str | os.PathLike | None = None, weights_from: dict | None = None) -> Path:
    """Export ``bundle`` to ONNX and write its INT8 (QDQ, per-channel) quantization to ``out``, calibrated on
    ``n_chips`` chips of ``scenes`` (default: the bundle's training scenes). ``source``: the bundle's file, whose
    SHA-256 the record keeps (so an INT8 file is used by default only beside the bundle it was made from).
    ``weights_from``: where ``bundle``'s weights come from when they are not ``source``'s own (a quantization-aware
    fine-tune of it, ``train.qat``), kept in the record as it is given."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    chips = calibration_chips(bundle, scenes or training_scenes(bundle), n_chips, seed)

    class Chips(CalibrationDataReader):
        def __init__(self):
            self.left = iter(chips)

        def get_next(self):
            chip = next(self.left, None)
            return None if chip is None else {"image": chip}

    with tempfile.TemporaryDirectory(prefix="openfootprints-int8-") as tmp:
        fp32, prepared = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        export_onnx(bundle, fp32)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        kept = fp32_nodes(onnx.load(str(prepared)))
        with atomic_path(out) as tmp_out, contextlib.redirect_stdout(io.StringIO()):  # ONNX Runtime prints progress
            quantize_static(str(prepared), str(tmp_out), Chips(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=kept,
                            extra_options={"CalibPercentile": PERCENTILE, "CalibTensorRangeSymmetric": False})
            model = onnx.load(str(tmp_out))
            corrected = correct_biases(model, onnx.load(str(prepared)), chips)
            meta = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}[METADATA_KEY]
            record = json.loads(meta)
            record["training"] = {**record.get("training", {}),
                                  "quantization": {"kind": f"int8 static, QDQ, per-channel weights, activation "
                                                           f"ranges over the central {PERCENTILE} % of values, "
                                                           "biases corrected to fp32's mean outputs",
                                                   "fp32_nodes": kept, "bias_corrected": len(corrected),
                                                   "calibration_chips": len(chips), "chip_px": CHIP_PX,
                                                   "calibration_scenes": scenes or training_scenes(bundle),
                                                   **({"source_sha256": file_sha256(source)} if source else {}),
                                                   **({"weights_from": weights_from} if weights_from else {})}}
            set_record(model, record)
            onnx.save(model, str(tmp_out))
    return Path(out)


def set_record(model, record: dict) -> None:
    """Replace an ONNX model's (``onnx.ModelProto``) openfootprints metadata with ``record``."""
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(record)


def record_check(path: str | os.PathLike, check: dict | None) -> None:
    """Store the fp32-against-INT8 ``check`` (or None: not checked) in the INT8 file at ``path``."""
    import onnx

    model = onnx.load(str(path))
    record = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    record["training"]["quantization"]["check"] = check
    set_record(model, record)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def int8_beside(model_path: str | os.PathLike) -> Path:
    """Where ``export --int8`` writes a bundle's INT8 file by default: ``MODEL.int8.onnx`` beside ``MODEL.ofp``."""
    return Path(model_path).with_suffix(".int8.onnx")


def usable_int8(model_path: str | os.PathLike) -> Path | None:
    """The INT8 file beside the bundle at ``model_path`` if detection may run it in its place: made from this
    very bundle (same SHA-256) and within tolerance of fp32 by its check (on the bundle's validation chips; the
    shipped base model's on the held-out places, ``bench/ship_int8.py``); else None."""
    path = int8_beside(model_path)
    if not path.exists():
        return None
    quantization = read_onnx_metadata(path).training.get("quantization", {})
    check = quantization.get("check") or {}
    if quantization.get("source_sha256") != file_sha256(model_path) or not check.get("within_tolerance"):
        return None
    return path


def made_from(int8_path: str | os.PathLike, model_path: str | os.PathLike) -> bool:
    """Whether the INT8 file was made from the very bytes of the bundle at ``model_path`` (its metadata, weights
    aside, is then that bundle's)."""
    quantization = read_onnx_metadata(int8_path).training.get("quantization", {})
    return quantization.get("source_sha256") == file_sha256(model_path)


def fp32_nodes(model) -> list[str]:
    """Names of the two convolutions that stay in fp32: the one that reads the image (the graph's input) and the
    last one before the output (the head; only shape and resize operators may follow it), for any architecture."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    first = [node for node in graph.node if node.op_type == "Conv" and node.input[0] == graph.input[0].name]
    last = producer.get(graph.output[0].name)
    while last is not None and last.op_type != "Conv":
        last = producer.get(last.input[0])
    if len(first) != 1 or last is None:
        raise RuntimeError("INT8: cannot find the network's first and last convolutions in the exported graph")
    return [first[0].name, last.name]


def correct_biases(quantized, reference, chips: list[np.ndarray], batch: int = 8) -> list[str]:
    """Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
    Correction", with data): for each quantized convolution of the QDQ model ``quantized`` (``onnx.ModelProto``,
    changed in place), in graph order, the mean of its output per channel over ``chips`` (each (1, C, H, W)
    float32, normalized; sizes may differ) is measured with the corrections made so far and moved onto the same
    convolution's in ``reference`` (the fp32 model it was quantized from) through its int32 bias. One at a time: a
    correction changes every output after it. Returns the output names of the convolutions corrected (fp32 ones,
    those whose bias is shared with another and those the reference does not name are left as they are)."""
    from onnx import numpy_helper

    producer = {out: node for node in quantized.graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in quantized.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    initializers = {init.name: init for init in quantized.graph.initializer}
    targets = {}  # quantized convolution → (its bias's DequantizeLinear node, the fp32 tensor it stands for)
    for conv in (node for node in quantized.graph.node if node.op_type == "Conv"):
        bias = producer.get(conv.input[2]) if len(conv.input) > 2 else None
        fp32 = pre_activation(reference, conv.output[0])
        if bias is not None and bias.op_type == "DequantizeLinear" and fp32 and consumers[conv.input[2]] == 1 \
                and bias.input[0] in initializers and bias.input[1] in initializers:
            targets[conv.output[0]] = (bias, fp32)
    wanted = [fp32 for _, fp32 in targets.values()]
    goals = dict(zip(wanted, channel_means(reference, wanted, chips, batch)))
    for name, (bias, fp32) in targets.items():
        (mean,) = channel_means(quantized, [name], chips, batch)
        values, scale = (numpy_helper.to_array(initializers[i]) for i in bias.input[:2])
        step = (goals[fp32] - mean) / np.where(scale > 0, scale, np.inf)  # a zero scale: nothing to move
        info = np.iinfo(values.dtype)
        fixed = np.clip(np.round(values + step), info.min, info.max).astype(values.dtype)
        initializers[bias.input[0]].CopyFrom(numpy_helper.from_array(fixed, bias.input[0]))
    return list(targets)


def pre_activation(reference, name: str) -> str | None:
    """The fp32 tensor a quantized convolution's output ``name`` stands for: the quantizer folds a Clip or ReLU
    after a convolution into the next tensor's range and gives the convolution that activation's output name;
    None where the reference has no such tensor."""
    node = next((n for n in reference.graph.node if name in n.output), None)
    if node is None:
        return None
    return node.input[0] if node.op_type in ("Clip", "Relu") else name


def channel_means(model, names: list[str], chips: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """The mean per channel, (C,) float64, of each tensor ``names`` of ``model`` (``onnx.ModelProto``) over
    ``chips`` (each (1, C, H, W), run in batches of one size): the model as written (no graph optimization, so
    QDQ pairs compute as stored)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    sums: list[np.ndarray] = [np.zeros(0)] * len(names)
    counts = [0] * len(names)
    for shape in sorted({chip.shape for chip in chips}):
        images = np.concatenate([chip for chip in chips if chip.shape == shape])
        for start in range(0, len(images), batch):
            for i, out in enumerate(session.run(names, {"image": images[start:start + batch]})):
                total = np.asarray(out, np.float64).sum(axis=(0, 2, 3))
                sums[i] = total if counts[i] == 0 else sums[i] + total
                counts[i] += out.shape[0] * out.shape[2] * out.shape[3]
    return [total / count for total, count in zip(sums, counts)]
