"""The model bundle: one file with the weights and everything needed to use them.

Prediction needs the bundle and the imagery, nothing else. The file is a ``torch.save`` of plain Python
types and tensors (loadable with ``weights_only=True``), so reading it runs no code from the file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from openfootprints import __version__
from openfootprints.errors import InputError
from openfootprints.io.atomic import atomic_path
from openfootprints.model.architectures import Architecture

if TYPE_CHECKING:  # torch is imported where weights are used: an exported ONNX model needs none of it
    import torch

FORMAT = "openfootprints-model-bundle"
FORMAT_VERSION = 2


def _v1_to_v2(payload: dict) -> dict:
    """v2 added ``min_confidence`` (the confidence cut chosen on validation): v1 bundles keep every building."""
    return {**payload, "min_confidence": 0.0}


# format version → the function that turns a payload of that version into the next one
UPGRADERS = {1: _v1_to_v2}


@dataclass
class Bundle:
    """A trained model and its contract with the imagery.

    ``mean``/``std`` normalize each input band (in the file's units); ``resolution_m`` is the ground
    resolution it was trained at (metres per pixel); ``window``/``halo_m`` the detection window in pixels
    and its overlap in metres. ``target`` is what the network learned (see :mod:`openfootprints.data.chips`):
    ``eroded`` masks, whose instances are the components of output ≥ ``threshold`` grown back by
    ``label_erosion_m``; or ``energy``, whose instances are seeded where the output is ≥ ``seed_threshold`` and
    grown by up to ``label_erosion_m`` over the footprint (output ≥ ``threshold``). Detection drops buildings
    whose raw confidence is below ``min_confidence`` (chosen on the validation chips when training; 0: none).
    """

    architecture: Architecture
    bands: list[int]
    mean: list[float]
    std: list[float]
    resolution_m: float
    window: int = 1024  # 1024 px with a 16 m halo: 0.6× the pixels through the network of 512 px with 32 m, as good
    halo_m: float = 16.0  # held out (bench/RESULTS.md, session 12); bundles written before keep their 512 / 32
    threshold: float = 0.5
    label_erosion_m: float = 0.0
    target: str = "eroded"
    seed_threshold: float | None = None
    min_confidence: float = 0.0
    dtype: str = ""  # pixel type of the training imagery (uint8, uint16, …); empty if unknown
    calibration: dict | None = None
    profile: dict | None = None  # pixels and outputs of the validation data (openfootprints.monitor.drift.Profile)
    training: dict = field(default_factory=dict)
    data_fingerprint: str = ""
    version: str = __version__
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def network(self) -> torch.nn.Module:
        """The network with the bundle's weights, in eval mode."""
        from openfootprints.model.network import build_network

        net = build_network(self.architecture, pretrained=False)
        net.load_state_dict(self.state_dict)
        return net.eval()

    def calibrate(self, confidence: np.ndarray) -> np.ndarray:
        """Raw confidence → calibrated probability of a true building (unchanged without calibration)."""
        confidence = np.asarray(confidence, np.float64)
        if not self.calibration:
            return confidence
        return np.interp(confidence, self.calibration["x"], self.calibration["y"])

    def metadata(self) -> dict:
        """Everything but the weights, as plain types (for logs, MLflow and the service)."""
        meta = asdict(self)
        meta.pop("state_dict")
        return meta


def save_bundle(bundle: Bundle, path: str | os.PathLike) -> Path:
    """Write the bundle atomically to ``path``."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **bundle.metadata(),
               "state_dict": {k: v.detach().cpu() for k, v in bundle.state_dict.items()}}
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read a bundle, refusing files that are not bundles or come from an incompatible format version."""
    path = str(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such model bundle")
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a zip / pickle error means "not a bundle"
        raise InputError(f"{path}: not an openfootprints model bundle ({type(err).__name__})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not an openfootprints model bundle")
    payload = upgraded(payload, path)
    fields = {k: v for k, v in payload.items() if k not in ("format", "format_version")}
    fields["architecture"] = Architecture(**fields["architecture"])
    return Bundle(**fields)


def upgraded(payload: dict, path: str) -> dict:
    """A bundle payload of any earlier format version brought to :data:`FORMAT_VERSION`, one version at a time
    (:data:`UPGRADERS`); a newer or unknown version is refused."""
    version = payload.get("format_version")
    while version in UPGRADERS:
        payload = {**UPGRADERS[version](payload), "format_version": version + 1}
        version += 1
    if version != FORMAT_VERSION:
        raise InputError(f"{path}: bundle format v{version} (openfootprints {payload.get('version')}); this "
                         f"openfootprints ({__version__}) reads v1 to v{FORMAT_VERSION}")
    return payload


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_files(paths: list[str | os.PathLike]) -> str:
    """A short SHA-256 over the training files: name, size and the first and last MiB of each."""
    digest = hashlib.sha256()
    for p in sorted(str(x) for x in paths):
        if os.path.isdir(p):
            files = sorted(q for q in Path(p).rglob("*") if q.is_file())
        else:
            files = [Path(p)]
        for f in files:
            size = f.stat().st_size
            digest.update(f"{f.name}:{size}".encode())
            with open(f, "rb") as fh:
                digest.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    digest.update(fh.read())
    return digest.hexdigest()[:16]
