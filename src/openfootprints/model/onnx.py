"""The bundle as ONNX: the network exported with its metadata, runnable by ONNX Runtime alone.

The ONNX file takes ``image`` (N, bands, H, W) float32, already normalized, and returns ``logits``
(N, 1, H, W); H and W are multiples of 32. The bundle's metadata (bands, normalization, resolution,
window, threshold, calibration, training record) is stored as JSON in the model's ``metadata_props``
under ``openfootprints_bundle``, so ``detect`` can use the ONNX file in place of the bundle.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from openfootprints.errors import InputError
from openfootprints.io.atomic import atomic_path
from openfootprints.model.bundle import FORMAT_VERSION, Bundle, file_sha256, load_bundle, upgraded
from openfootprints.model.architectures import Architecture

log = logging.getLogger(__name__)
METADATA_KEY = "openfootprints_bundle"
OPSET = 18
INPUT_ERROR_EXIT = 2  # the export's child process: the file is not a bundle it can read


def export_onnx(bundle: Bundle, path: str | os.PathLike) -> Path:
    """Write the bundle's network and metadata as one ONNX file (batch, height and width dynamic)."""
    import onnx
    import torch

    net = bundle.network()
    example = torch.zeros(1, bundle.architecture.in_channels, bundle.window, bundle.window)
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, opset_version=OPSET, dynamo=False)
        model = onnx.load(str(tmp))
        meta = model.metadata_props.add()
        meta.key = METADATA_KEY
        meta.value = json.dumps({"format_version": FORMAT_VERSION, **bundle.metadata()})
        onnx.save(model, str(tmp))
    return Path(path)


def cache_dir() -> Path:
    """Where exported models are kept between runs: ``$OPENFOOTPRINTS_CACHE``, else
    ``$XDG_CACHE_HOME/openfootprints``, else ``~/.cache/openfootprints``."""
    if os.environ.get("OPENFOOTPRINTS_CACHE"):
        return Path(os.environ["OPENFOOTPRINTS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "openfootprints"


def cached_onnx(model_path: str | os.PathLike, fallback_dir: str | os.PathLike) -> Path:
    """The ONNX export of the bundle at ``model_path``: from the cache (keyed by the file's SHA-256, the torch
    version and the opset), or exported now in a child process and kept there for the next run (into
    ``fallback_dir`` when the cache cannot be written). A child, because exporting leaves about 0.5 GiB in the
    exporting process that a long detection would carry to its end; and a cached export is found without importing
    PyTorch (about 0.4 GiB of a detection's peak)."""
    if not os.path.exists(model_path):
        raise InputError(f"{model_path}: no such model bundle")
    name = f"{file_sha256(model_path)[:16]}-torch{torch_version()}-opset{OPSET}.onnx".replace("+", "_")
    path = cache_dir() / "onnx" / name
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        log.warning("%s: cannot keep the ONNX export there (%s); exporting for this run only", path.parent, err)
        path = Path(fallback_dir) / name
    export_in_child(model_path, path)
    return path


def torch_version() -> str:
    """PyTorch's version as its package metadata gives it, without importing it (about 0.4 GiB); imported only
    where it was installed without metadata."""
    try:
        return version("torch")
    except PackageNotFoundError:
        import torch

        return torch.__version__


def export_in_child(model_path: str | os.PathLike, path: Path) -> None:
    """:func:`export_onnx` of the bundle at ``model_path`` to ``path``, in a child Python process; a file that is
    not a bundle is an :class:`InputError` here as it is there."""
    code = "import sys; from openfootprints.model.onnx import _export_file; _export_file(sys.argv[1], sys.argv[2])"
    done = subprocess.run([sys.executable, "-c", code, str(model_path), str(path)], capture_output=True, text=True)
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    if done.returncode == INPUT_ERROR_EXIT:
        raise InputError(last)
    if done.returncode != 0:
        raise RuntimeError(f"{model_path}: the ONNX export failed in its child process: {last}")


def _export_file(model_path: str, path: str) -> None:
    try:
        bundle = load_bundle(model_path)
    except InputError as err:
        print(err, file=sys.stderr)
        sys.exit(INPUT_ERROR_EXIT)
    export_onnx(bundle, path)


def read_onnx_metadata(path: str | os.PathLike) -> Bundle:
    """The bundle (without weights) described by an exported ONNX file."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable models
        raise InputError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0]})") from err
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise InputError(f"{path}: an ONNX model without openfootprints metadata; export it with `openfootprints export`")
    meta = upgraded(json.loads(raw), str(path))
    meta.pop("format_version")
    meta["architecture"] = Architecture(**meta["architecture"])
    return Bundle(**meta)


def load_model(path: str | os.PathLike) -> Bundle:
    """A bundle from ``.ofp`` (with weights) or from an exported ``.onnx`` (metadata only)."""
    if str(path).lower().endswith(".onnx"):
        if not os.path.exists(path):
            raise InputError(f"{path}: no such ONNX model")
        bundle = read_onnx_metadata(path)
        bundle.training = {**bundle.training, "onnx_path": str(path)}
        return bundle
    return load_bundle(path)


class OnnxNetwork:
    """Runs an ONNX model with ONNX Runtime on the CPU; called like the torch network on numpy batches."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)  # which file runs (an fp32 export or an INT8 one)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no block planned ahead for the whole graph: tensors are taken from the arena as they are needed, the
        # same speed at 0.7× the peak (Lite0 U-Net INT8, one 1024² window: 0.30 GiB, not 0.41; bench/RESULTS.md)
        options.enable_mem_pattern = False
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 normalized → (N, 1, H, W) float32 logits."""
        return self.session.run(["logits"], {"image": np.ascontiguousarray(batch, np.float32)})[0]
