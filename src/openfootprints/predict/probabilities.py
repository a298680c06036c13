"""Imagery in, probability raster out: overlapping windows through the model, blended, streamed.

The scene is processed one row of windows at a time. Blended rows are written to the probability raster
as soon as no later window can touch them (:mod:`openfootprints.predict.blend`), so memory holds one strip of
``window`` rows and never the scene. The raster is a uint8 GeoTIFF aligned with the (possibly resampled) scene
grid: value/255 is the building probability.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window
from tqdm import tqdm

from openfootprints.data.normalize import Normalization
from openfootprints.errors import InputError
from openfootprints.io.raster import Scene
from openfootprints.model.bundle import Bundle
from openfootprints.model.onnx import export_onnx
from openfootprints.monitor.drift import Profile, window_profile
from openfootprints.predict.stream import ProbabilitySink
from openfootprints.predict.engines import Engine, OnnxEngine, TorchEngine, on_cuda, onnx_threads
from openfootprints.predict.blend import BlendStrip, ValidPixels
from openfootprints.predict.windows import Region, blend_ramp, blend_weights, lattice_starts

log = logging.getLogger(__name__)


def region_from_bounds(scene: Scene, bounds: tuple[float, float, float, float] | None) -> Region:
    """The grid rectangle covering ``bounds`` (in the scene's CRS), clipped to the scene; all of it when None."""
    if bounds is None:
        return Region(0, scene.height, 0, scene.width)
    inv = ~scene.transform
    cols, rows = zip(*(inv @ (x, y) for x in bounds[::2] for y in bounds[1::2]))
    eps = 1e-6  # bounds on pixel edges must not gain a pixel from rounding noise
    region = Region(max(0, math.floor(min(rows) + eps)), min(scene.height, math.ceil(max(rows) - eps)),
                    max(0, math.floor(min(cols) + eps)), min(scene.width, math.ceil(max(cols) - eps)))
    if region.height <= 0 or region.width <= 0:
        raise InputError(f"{scene.path}: detect.bbox does not overlap the imagery")
    return region


def select_device(name: str, bundle: Bundle | None = None) -> str:
    """The device to run on, as torch names it (``cpu``, ``cuda``, ``cuda:1``): ``auto`` picks CUDA when present,
    else the CPU. An exported ONNX model (``bundle``) runs on the CPU, and PyTorch is not even imported for it."""
    if bundle is not None and bundle.training.get("onnx_path") and name in ("auto", "cpu"):
        return "cpu"
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"detect.device={name}, but no CUDA device is available")
    return str(torch.device(name))


TTA_TRANSFORMS = [(0, False), (0, True), (2, False), (2, True), (1, False), (3, False), (1, True), (3, True)]
PIXELS_IN_FLIGHT = 4 * 512 * 512  # a batch's pixels by default (windows_in_flight)


class WindowPredictor:
    """Runs the model on batches of normalized windows; returns probabilities (N, H, W) float32.

    ``engine`` picks ``network``, the :class:`~openfootprints.predict.engines.Engine` that runs the batches:
    ``torch`` (:class:`~openfootprints.predict.engines.TorchEngine`, the bundle's network on ``device``) or ``onnx``
    (:class:`~openfootprints.predict.engines.OnnxEngine`, ONNX Runtime on the CPU, from the bundle's exported ONNX
    file, ``onnx_file``, or one exported now into ``workdir``); ``threads`` caps ONNX Runtime's threads (default:
    all cores); ``compile`` wraps the PyTorch network in ``torch.compile``. Built once, it runs any number of scenes.
    After :meth:`start_profile`, ``seen`` counts the inputs and outputs of every window run since
    (:mod:`openfootprints.monitor.drift`).
    """

    def __init__(self, bundle: Bundle, device: str, engine: str = "torch", workdir: str | Path | None = None,
                 threads: int | None = None, compile: bool = False, onnx_file: str | Path | None = None):
        self.bundle, self.device, self.engine = bundle, str(device), engine
        self.runs = 1  # batches run at once (from as many threads)
        self.normalize = Normalization(bundle.mean, bundle.std)  # (C, H, W) file units → network input, 0 on nodata
        self.seen: Profile | None = None
        self.network: Engine
        onnx_path = bundle.training.get("onnx_path")
        self.onnx_file: Path | None = None  # the ONNX file that runs (an fp32 export or an INT8 file)
        if engine == "onnx":
            if onnx_path is None:
                onnx_path = onnx_file or export_onnx(bundle, Path(workdir or tempfile.gettempdir()) / "model.onnx")
            self.runs, per_run = onnx_threads(threads)
            self.network = OnnxEngine(onnx_path, per_run)
            self.onnx_file = Path(onnx_path)
        elif onnx_path is not None:
            raise InputError(f"{onnx_path}: an ONNX model runs with detect.engine=onnx (or auto on the CPU)")
        else:
            self.network = TorchEngine(bundle, self.device, compile)

    @property
    def described(self) -> str:
        """What runs the network: ``torch``, or ``onnx (FILE)`` naming the ONNX file (an INT8 file when one runs)."""
        return self.engine if self.onnx_file is None else f"onnx ({self.onnx_file.name})"

    def adapt_to(self, batches: Iterator[np.ndarray]) -> int:
        """Re-estimate the network's batch-norm statistics on ``batches`` of normalized windows (B, C, H, W) of a
        scene (AdaBN, :mod:`openfootprints.predict.adapt`); PyTorch only. Returns the windows seen."""
        if not isinstance(self.network, TorchEngine):
            raise InputError("detect.adapt_bn re-estimates the network's batch-norm statistics with PyTorch: give a "
                             "bundle (.ofp) and detect.engine=auto or torch")
        return self.network.adapt(batches)

    def unadapt(self) -> None:
        """The bundle's own batch-norm statistics again (a run without ``detect.adapt_bn`` after one with it)."""
        if isinstance(self.network, TorchEngine):
            self.network.restore()

    def start_profile(self) -> None:
        """Count what the windows run from now on look like (``seen``), e.g. for one scene."""
        self.seen = Profile.empty(len(self.bundle.bands))

    def __call__(self, batch: np.ndarray, tta: int = 1) -> np.ndarray:
        """Probabilities for a normalized batch (N, C, H, W) → (N, H, W); with ``tta`` > 1 the mean over the
        first ``tta`` of the 8 flips / 90° rotations (1, 2, 4 or 8), each undone on its output."""
        if tta == 1:
            return self.probabilities(batch)
        total = np.zeros((batch.shape[0], *batch.shape[2:]), np.float32)
        for k, flip in TTA_TRANSFORMS[:tta]:
            view = np.rot90(batch, k, axes=(2, 3))
            view = np.ascontiguousarray(view[..., ::-1] if flip else view)
            prob = self.probabilities(view)
            prob = prob[..., ::-1] if flip else prob
            total += np.rot90(prob, -k, axes=(1, 2))
        return total / tta

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass: (N, C, H, W) normalized → (N, H, W) probabilities."""
        return self.network(batch)


def select_engine(name: str, device: str, bundle: Bundle) -> str:
    """``torch`` or ``onnx`` for the ``detect.engine`` setting ``name``. ``auto``: ONNX Runtime on the CPU (faster
    there), PyTorch on CUDA; ``onnx-int8`` is ONNX Runtime too (from the INT8 file); an ONNX model always runs on
    ONNX Runtime."""
    if bundle.training.get("onnx_path"):
        return "onnx"
    if name == "auto":
        return "torch" if on_cuda(device) else "onnx"
    if name in ("onnx", "onnx-int8") and on_cuda(device):
        raise InputError(f"detect.engine={name} runs on the CPU; use detect.device=cpu or detect.engine=torch")
    return "onnx" if name == "onnx-int8" else name


def read_padded(scene: Scene, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``size`` square window at (row, col); parts outside the scene come back as invalid zeros."""
    r1, c1 = min(row + size, scene.height), min(col + size, scene.width)
    image, valid = scene.read(Window(col, row, c1 - col, r1 - row), dtype=None)  # file type: 4× less than float
    if image.shape[1:] == (size, size):
        return image, valid
    pad = ((0, size - image.shape[1]), (0, size - image.shape[2]))
    return np.pad(image, ((0, 0), *pad)), np.pad(valid, pad)


def predict_probabilities(scene: Scene, bundle: Bundle, out_path: str | Path, region: Region | None = None,
                          window: int | None = None, halo_m: float | None = None, batch_size: int | None = None,
                          device: str = "auto", progress: bool = True, engine: str = "torch", tta: int = 1,
                          predictor: WindowPredictor | None = None, sink: ProbabilitySink | None = None,
                          tiles: tuple[np.ndarray, np.ndarray] | None = None,
                          valid_pixels: ValidPixels | None = None) -> Path:
    """Write the building probability raster of ``region`` of ``scene`` to ``out_path`` (uint8 GeoTIFF).

    ``batch_size`` is the number of windows in flight at once (split between the predictor's concurrent runs;
    default :func:`windows_in_flight`);
    ``window`` is the model window in pixels (a multiple of 32), ``halo_m`` the overlap between
    neighbouring windows in metres on the ground; ``engine`` torch, onnx or auto (see :func:`select_engine`);
    ``tta`` 1, 2, 4 or 8 test-time flips / rotations averaged; ``predictor``, a model already loaded for
    ``bundle`` (``device`` and ``engine`` are then unused), else one is built for this call; ``sink``, a
    :class:`~openfootprints.predict.stream.ProbabilityStream` (or ``ProbabilityArray``) to write the rows to
    instead of ``out_path``; ``tiles``, the windows already read by :func:`read_tiles` (else they are read here);
    ``valid_pixels``, where to count the region's valid pixels as its rows are written.
    Windows lie on one lattice over the whole scene, whatever the region, so a region's probabilities equal
    the same pixels of a whole-scene run (what makes ``detect.bbox`` and partitioned runs seamless).
    Memory: about 1 byte per pixel of a strip of ``window`` rows of the region, 5 where rows of windows overlap
    (:mod:`openfootprints.predict.blend`), a few windows read ahead.
    """
    if tta not in (1, 2, 4, 8):
        raise InputError(f"detect.tta={tta}: must be 1, 2, 4 or 8")
    region = region or Region(0, scene.height, 0, scene.width)
    grid = window_grid(scene, bundle, region, window, halo_m)
    window, row_starts, col_starts = grid.window, grid.row_starts, grid.col_starts
    if predictor is None:
        dev = select_device(device, bundle)
        predictor = WindowPredictor(bundle, dev, select_engine(engine, dev, bundle), Path(out_path).parent)
    batch_size = batch_size or windows_in_flight(window, predictor.runs)
    weights = blend_weights(window, grid.halo)
    profile = dict(driver="GTiff", width=region.width, height=region.height, count=1, dtype="uint8",
                   crs=scene.crs, transform=region_transform(scene, region), compress="deflate", tiled=False,
                   blockysize=16)
    reads: Iterator[tuple[np.ndarray, np.ndarray]]  # (image, valid) of each window, in the order of the grid
    if tiles is None:
        reads = read_windows(scene, grid.starts(), window, depth=max(4, 2 * batch_size))
    else:
        reads = zip(*tiles)
    destination = contextlib.nullcontext(sink) if sink is not None else probability_file(out_path, profile, bundle)
    per_run = max(1, batch_size // predictor.runs)  # batch_size windows in flight, split between the runs
    left = col_starts[0]  # scene column of the strip's first column (≤ region.col0)
    with destination as dst:
        strip = BlendStrip(blend_ramp(window, grid.halo), row_starts, col_starts, region, dst, valid_pixels)
        with BatchRunner(predictor, strip, weights, tta) as runner:
            bar = tqdm(total=len(row_starts) * len(col_starts), desc="detect", unit="win", disable=not progress)
            for _ in row_starts:
                strip.start_row()
                batch = []
                for col in col_starts:
                    image, valid = next(reads)
                    if valid.any():  # windows with no valid pixel are not run
                        batch.append((col - left, image, valid))
                    if len(batch) == per_run or (col == col_starts[-1] and batch):
                        runner.submit(batch)
                        batch = []
                runner.drain()
                strip.finish_row()
                bar.update(len(col_starts))
            bar.close()
    return Path(out_path)


def windows_in_flight(window: int, runs: int = 1) -> int:
    """How many ``window`` px windows to have in flight at once by default: as many as hold ``PIXELS_IN_FLIGHT``
    (4 windows of 512 px), and at least one for each of the predictor's ``runs``. The network's memory grows with
    the pixels of a batch (ONNX Runtime, Lite0 U-Net INT8: about 0.23 GiB for one 1024² window), so a larger
    window runs in smaller batches, at the same speed per pixel."""
    return max(runs, round(PIXELS_IN_FLIGHT / window**2))


def probability_file(path: str | Path, profile: dict[str, Any], bundle: Bundle) -> Any:
    """The uint8 probability GeoTIFF opened for writing, with scale 1/255 and a band description, so that GIS
    software shows what the values mean (QGIS, ``gdalinfo``: value × scale = probability or energy)."""
    dst = rasterio.open(path, "w", **profile)
    dst.scales, dst.offsets = (1 / 255,), (0.0,)
    dst.set_band_description(1, "building energy (0 background, 0.5 footprint outline, 1 core)"
                             if bundle.target == "energy" else "building probability")
    return dst


@dataclass
class WindowGrid:
    """The model windows over a region: their size and overlap (``halo``) in pixels, and the starts (scene
    rows and columns) of the windows of the scene-wide lattice that touch the region."""

    window: int
    halo: int
    row_starts: list[int]
    col_starts: list[int]

    def starts(self) -> list[tuple[int, int]]:
        """(row, col) of every window, row by row."""
        return [(row, col) for row in self.row_starts for col in self.col_starts]


def window_grid(scene: Scene, bundle: Bundle, region: Region, window: int | None = None,
                halo_m: float | None = None) -> WindowGrid:
    """The windows that predict ``region``: ``window`` px (default the bundle's, a multiple of 32) overlapping
    by ``halo_m`` metres on the ground (default the bundle's), on one lattice over the whole scene, so a
    region's probabilities equal the same pixels of a whole-scene run. A scene that fits in one window gets one
    window no larger than it (to the next multiple of 32): padding it to the window would only cost time."""
    if len(scene.bands) != bundle.architecture.in_channels:
        raise InputError(f"{scene.path}: {len(scene.bands)} band(s) selected, but the model expects "
                         f"{bundle.architecture.in_channels} (bands {bundle.bands})")
    window = window or bundle.window
    if window % 32:
        raise InputError(f"detect.window_px={window}: must be a multiple of 32")
    halo = int(round((bundle.halo_m if halo_m is None else halo_m) / scene.resolution_m))
    longest = max(scene.height, scene.width)
    window = min(window, -(-longest // 32) * 32)
    stride = window - 2 * halo
    if stride <= 0 and longest > window:
        raise InputError(f"detect.halo_m: an overlap of {halo} px per side leaves no stride in a {window} px window")
    return WindowGrid(window, halo, lattice_starts(scene.height, window, stride, region.row0, region.row1),
                      lattice_starts(scene.width, window, stride, region.col0, region.col1))


def read_tiles(scene: Scene, grid: WindowGrid) -> tuple[np.ndarray, np.ndarray]:
    """Every window of ``grid``, in order: images (N, bands, window, window) in the file's pixel type and
    valid masks (N, window, window) bool — the reading stage on its own, for engines that read on other
    workers than the model's."""
    tiles = [read_padded(scene, row, col, grid.window) for row, col in grid.starts()]
    return np.stack([image for image, _ in tiles]), np.stack([valid for _, valid in tiles])


def read_windows(scene: Scene, starts: list[tuple[int, int]], size: int, depth: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``read_padded`` of each (row, col) of ``starts`` in order, read up to ``depth`` windows ahead in a
    background thread (memory: ``depth`` windows, whatever the scene's width)."""
    with ThreadPoolExecutor(1) as reader:
        todo = iter(starts)
        ahead = collections.deque(reader.submit(read_padded, scene, row, col, size)
                                  for row, col in itertools.islice(todo, depth))
        while ahead:
            tile = ahead.popleft().result()
            following = next(todo, None)
            if following is not None:
                ahead.append(reader.submit(read_padded, scene, *following, size))
            yield tile


def region_transform(scene: Scene, region: Region) -> Affine:
    """The geotransform of the probability raster of ``region``."""
    return scene.transform @ Affine.translation(region.col0, region.row0)


Batch = list[tuple[int, np.ndarray, np.ndarray]]  # (strip column, image, valid) of each window
Probabilities = tuple[np.ndarray, Profile | None]  # (N, H, W) probabilities, and their profile when profiling


class BatchRunner:
    """Runs batches of (strip column, image, valid) windows, up to ``predictor.runs`` at once in threads, and adds
    their weighted probabilities to the :class:`~openfootprints.predict.blend.BlendStrip` in the order they were
    submitted: the same sums, to the bit, as one batch after the other."""

    def __init__(self, predictor: WindowPredictor, strip: BlendStrip, weights: np.ndarray, tta: int = 1):
        self.predictor, self.strip, self.weights, self.tta = predictor, strip, weights, tta
        self.pool = ThreadPoolExecutor(predictor.runs) if predictor.runs > 1 else None
        self.pending: collections.deque[tuple[Batch, Future[Probabilities]]] = collections.deque()

    def submit(self, batch: Batch) -> None:
        if self.pool is None:
            self._add(batch, self._probabilities(batch))
            return
        self.pending.append((batch, self.pool.submit(self._probabilities, batch)))
        while len(self.pending) > self.predictor.runs:
            self._add_oldest()

    def drain(self) -> None:
        """Wait for every batch submitted and add it: the strip is then complete for them."""
        while self.pending:
            self._add_oldest()

    def _add_oldest(self) -> None:
        batch, future = self.pending.popleft()
        self._add(batch, future.result())

    def _probabilities(self, batch: Batch) -> Probabilities:
        """The batch's probabilities and, when the predictor is profiling, the batch's profile."""
        images = np.stack([self.predictor.normalize(image, valid) for _, image, valid in batch])
        probs = self.predictor(images, self.tta)
        if self.predictor.seen is None:
            return probs, None
        return probs, window_profile(images, np.stack([valid for _, _, valid in batch]), probs)

    def _add(self, batch: Batch, result: Probabilities) -> None:
        probs, profile = result
        if profile is not None and self.predictor.seen is not None:
            self.predictor.seen.add_pixels(profile)
        for (c, _, valid), prob in zip(batch, probs):
            self.strip.add(c, prob * self.weights, valid)

    def __enter__(self) -> BatchRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
