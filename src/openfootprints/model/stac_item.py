"""A model bundle as a STAC Item with the Machine Learning Model (MLM) extension: the metadata EO model catalogues
(HOT's fAIr among them) read — inputs, bands, normalization, ground resolution, output, architecture, scores,
licence and attribution — built and validated with ``pystac`` and ``stac-model`` (offline: no schema download).

``openfootprints export MODEL.ofp --stac`` writes ``MODEL.stac.json`` beside the bundle; the item's assets point at
the bundle and, when they are there, its ONNX and INT8 exports (relative links, so the folder can move).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
from pathlib import Path

import pystac
from stac_model.base import ProcessingExpression
from stac_model.input import InputStructure, ModelInput
from stac_model.output import MLMClassification, ModelOutput, ModelResult
from stac_model.schema import MLModelExtension, MLModelProperties

from openfootprints.io.atomic import atomic_path
from openfootprints.model.bundle import Bundle

ARCH_NAMES = {"unet": "U-Net", "unet++": "U-Net++", "fpn": "FPN", "deeplabv3+": "DeepLabV3+",
              "segformer": "SegFormer", "manet": "MA-Net", "linknet": "LinkNet", "pan": "PAN", "upernet": "UPerNet"}
OUTPUTS = {"eroded": "building interior probability (footprints shrunk by label_erosion_m)",
           "energy": "building energy: 0 background, 0.5 at a footprint's outline, 1 in its core"}
WORLD = [-180.0, -90.0, 180.0, 90.0]


def mlm_properties(bundle: Bundle, file_size: int | None = None) -> MLModelProperties:
    """The MLM fields of ``bundle`` (validated by ``stac-model``'s schema)."""
    arch, n = bundle.architecture, len(bundle.bands)
    model_input = ModelInput(
        name="imagery", bands=[f"band {b}" for b in bundle.bands],
        input=InputStructure(shape=[-1, n, bundle.window, bundle.window],
                             dim_order=["batch", "bands", "height", "width"], data_type="float32"),
        value_scaling=[{"type": "z-score", "mean": m, "stddev": s} for m, s in zip(bundle.mean, bundle.std)],
        resize_type=None,
        pre_processing_function=ProcessingExpression(
            format="python", expression="openfootprints.data.normalize:Normalization",
            description=f"imagery resampled to {bundle.resolution_m:g} m/px; nodata pixels set to 0 after scaling"))
    output = ModelOutput(
        name=bundle.target, tasks={"semantic-segmentation"},
        result=ModelResult(shape=[-1, 1, bundle.window, bundle.window],
                           dim_order=["batch", "channel", "height", "width"], data_type="float32"),
        classes=[MLMClassification(value=1, name="building", description=OUTPUTS.get(bundle.target, bundle.target))],
        post_processing_function=ProcessingExpression(
            format="python", expression="openfootprints.vectorize.polygons:iter_buildings",
            description="sigmoid, then instances as polygons (threshold "
                        f"{bundle.threshold:g}{'' if bundle.seed_threshold is None else f', seeds {bundle.seed_threshold:g}'}"
                        f"{f'; buildings of confidence under {bundle.min_confidence:.3f} dropped' if bundle.min_confidence else ''})"))
    return MLModelProperties(
        name=f"openfootprints {ARCH_NAMES.get(arch.arch, arch.arch)} {arch.encoder}",
        architecture=f"{ARCH_NAMES.get(arch.arch, arch.arch)} ({arch.encoder} encoder)",
        tasks={"semantic-segmentation", "instance-segmentation"}, input=[model_input], output=[output],
        framework="pytorch", framework_version=_version("torch"), accelerator="amd64", accelerator_constrained=False,
        file_size=file_size, total_parameters=sum(int(t.numel()) for t in bundle.state_dict.values()) or None,
        pretrained=True, pretrained_source="ImageNet (timm / segmentation_models_pytorch encoder weights)")


def model_item(bundle: Bundle, path: str | os.PathLike, licence: str = "other",
               attribution: str | None = None) -> pystac.Item:
    """The STAC Item of the bundle at ``path``: MLM fields, ``gsd`` (its ground resolution, m), its training record's
    scores, data fingerprint and parent, ``license`` (an SPDX id, or ``other``) and ``attribution``."""
    path = Path(path)
    made = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    training = bundle.training
    properties = {
        "description": f"Building footprints from {bundle.resolution_m:g} m imagery, bands {bundle.bands}",
        "gsd": bundle.resolution_m, "license": licence,
        "openfootprints:version": bundle.version, "openfootprints:target": bundle.target,
        "openfootprints:threshold": bundle.threshold, "openfootprints:min_confidence": bundle.min_confidence,
        "openfootprints:window_px": bundle.window,
        "openfootprints:halo_m": bundle.halo_m, "openfootprints:data_fingerprint": bundle.data_fingerprint,
        "openfootprints:metrics": {k: float(v) for k, v in training.get("metrics", {}).items()},
        "openfootprints:training": {k: training[k] for k in ("steps", "seconds", "energy_kwh", "scenes", "parent")
                                   if k in training},
        "openfootprints:calibrated": bool(bundle.calibration),
    }
    if attribution:
        properties["attribution"] = attribution
    item = pystac.Item(id=path.stem, geometry=_box(WORLD), bbox=WORLD, datetime=made, properties=properties)
    item.add_asset("model", _asset(path, "application/octet-stream; application=pytorch", "torch.save",
                                   "the model bundle: weights and metadata (openfootprints detect --model)"))
    for suffix, artifact, title in ((".onnx", "onnx", "ONNX export (ONNX Runtime, no PyTorch needed)"),
                                    (".int8.onnx", "onnx", "INT8 ONNX export for CPUs")):
        export = path.with_suffix(suffix)
        if export.exists():
            item.add_asset(suffix.strip(".").replace(".", "-"), _asset(export, "application/octet-stream; "
                                                                      "framework=onnx; profile=onnx", artifact, title))
    MLModelExtension.ext(item, add_if_missing=True).apply(mlm_properties(bundle, path.stat().st_size))
    return item


def write_model_item(bundle: Bundle, path: str | os.PathLike, out: str | os.PathLike, **kwargs) -> Path:
    """Write :func:`model_item` as JSON to ``out`` (asset links relative to it)."""
    item = model_item(bundle, path, **kwargs)
    item.set_self_href(str(Path(out).resolve()))
    item.make_asset_hrefs_relative()
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(item.to_dict(include_self_link=False), indent=2) + "\n")
    return Path(out)


def _asset(path: Path, media_type: str, artifact: str, title: str) -> pystac.Asset:
    return pystac.Asset(href=str(path.resolve()), media_type=media_type, title=title,
                        roles=["mlm:model", "mlm:weights", "data"] if artifact == "torch.save" else ["mlm:model"],
                        extra_fields={"mlm:artifact_type": artifact})


def _box(bounds: list[float]) -> dict:
    w, s, e, n = bounds
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
