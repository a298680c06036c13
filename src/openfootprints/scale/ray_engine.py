"""The Ray engine of ``openfootprints scale``: each cell's stages on the workers that suit them.

A cell goes through three Ray calls chained by their object references, so the pixels never pass through
the driver:

1. :func:`read_cell`, a task on a CPU worker: the cell's windows read from the imagery;
2. :meth:`CellPredictor.predict`, on one of a pool of model actors (each holds the model once, on a GPU
   when the cluster has them): the blended probabilities of the cell;
3. :func:`vectorize_cell`, a task on a CPU worker: the buildings whose centroid is in the cell, written
   and put in place whole (renamed into a local folder, or one object put into ``s3://`` / ``gs://``, by the
   worker itself).

They are the stage functions of ``detect`` (:mod:`openfootprints.pipeline`,
:mod:`openfootprints.predict.probabilities`), on the same windows, so the output is the local engine's,
building for building. Ray's own fault tolerance does what it is meant to: a task whose worker dies is run
again (``max_retries``), an actor whose process dies is restarted (``max_restarts``) and its call resubmitted
(``max_task_retries``). A cell whose stage raises is started again up to ``scale.retries`` times, then
reported. At most two cells per model actor are in flight, which bounds the object store's use.
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, OmegaConf

from openfootprints.energy import energy_meter
from openfootprints.errors import InputError
from openfootprints.io.raster import Scene
from openfootprints.io.storage import Storage
from openfootprints.model.bundle import Bundle
from openfootprints.monitor.drift import Profile
from openfootprints.predict.blend import ValidPixels
from openfootprints.predict.probabilities import predict_probabilities, read_tiles, region_transform, window_grid
from openfootprints.predict.windows import Region
from openfootprints.predict.stream import ProbabilityArray
from openfootprints.scale.cells import Cell, CellResult, cell_config, cell_key, cell_summary

log = logging.getLogger(__name__)


@dataclass
class CellTiles:
    """A cell's windows as read: images (N, bands, window, window) and valid masks (N, window, window)."""

    scene: Scene
    region: Region  # the cell, in the scene's grid
    context: Region  # what is predicted and vectorized for it
    images: np.ndarray
    valid: np.ndarray
    timings: dict
    energy_kwh: float


@dataclass
class CellProbabilities:
    """A cell's probability raster over its context, with what came before it."""

    scene: Scene
    region: Region
    probabilities: ProbabilityArray
    timings: dict
    energy_kwh: float
    seen: Profile | None = None  # what the model saw of the cell (openfootprints.monitor.drift)
    valid: ValidPixels | None = None  # the valid pixels predicted (``inside``: the cell's own)


def read_cell(cfg: dict, scene_path: str, bundle: Bundle, cell: Cell) -> CellTiles:
    """Stage 1 (CPU worker): read the windows that predict the cell's context."""
    from openfootprints.pipeline import detection_area, gdal_env, open_for_model

    one = cell_config(OmegaConf.create(cfg), cell)
    start = time.monotonic()
    with energy_meter(one.tracking.country, one.tracking.energy) as energy, \
            gdal_env(one):
        scene = open_for_model(one, scene_path, bundle)
        region, context = detection_area(one, scene)
        images, valid = read_tiles(scene, window_grid(scene, bundle, context, one.detect.window_px, one.detect.halo_m))
    return CellTiles(scene, region, context, images, valid, {"read_s": time.monotonic() - start},
                     energy.get("energy_kwh", 0.0))


class CellPredictor:
    """Stage 2, a Ray actor holding the model: the probabilities of a cell's context from its windows."""

    def __init__(self, cfg: dict, model_path: str, threads: int | None):
        from openfootprints.pipeline import load_predictor

        self.cfg = OmegaConf.create(cfg)
        self.workdir = tempfile.mkdtemp(prefix="openfootprints-actor-")
        self.predictor = load_predictor(self.cfg, model_path, self.workdir, threads)

    def pid(self) -> int:
        return os.getpid()

    def predict(self, tiles: CellTiles) -> CellProbabilities:
        d, scene, context = self.cfg.detect, tiles.scene, tiles.context
        start = time.monotonic()
        sink = ProbabilityArray(f"{scene.path} (cell)", context.width, context.height, scene.crs,
                                region_transform(scene, context))
        self.predictor.start_profile()
        valid = ValidPixels(tiles.region)
        with energy_meter(self.cfg.tracking.country, self.cfg.tracking.energy) as energy:
            predict_probabilities(scene, self.predictor.bundle, "unused.tif", region=context, window=d.window_px,
                                  halo_m=d.halo_m, batch_size=d.batch_size, progress=False, tta=d.tta,
                                  predictor=self.predictor, sink=sink, tiles=(tiles.images, tiles.valid),
                                  valid_pixels=valid)
        return CellProbabilities(scene, tiles.region, sink, {**tiles.timings, "predict_s": time.monotonic() - start},
                                 tiles.energy_kwh + energy.get("energy_kwh", 0.0), self.predictor.seen, valid)


def vectorize_cell(cfg: dict, scene_path: str, bundle: Bundle, cell: Cell, predicted: CellProbabilities,
                   out_dir: str) -> dict:
    """Stage 3 (CPU worker): vectorize, keep the buildings whose centroid is in the cell, write the cell's table
    and put it in place whole, from this worker (``out_dir``: a path or an ``s3://`` / ``gs://`` URL); returns the
    cell's summary (as ``detect``'s, see :func:`openfootprints.scale.cells.cell_summary`)."""
    from openfootprints.pipeline import detect_summary, drift_from_reference, vectorize_and_write

    out = Storage(out_dir)
    one = cell_config(OmegaConf.create(cfg), cell)
    start = time.monotonic()
    with energy_meter(one.tracking.country, one.tracking.energy) as energy, out.staged(cell_key(cell)) as staged:
        n_buildings = vectorize_and_write(one, bundle, predicted.scene, scene_path, predicted.probabilities, staged,
                                          predicted.seen)
    timings = {**predicted.timings, "vectorize_s": time.monotonic() - start}
    timings["total_s"] = sum(timings.values())
    kwh = predicted.energy_kwh + energy.get("energy_kwh", 0.0)
    summary = detect_summary(predicted.scene, predicted.region, n_buildings, timings,
                             {"energy_kwh": kwh} if one.tracking.energy else {}, staged)
    if predicted.seen is not None and predicted.valid is not None:  # the cell's buildings: its area, not its context's
        predicted.seen.area_m2 = predicted.valid.inside * predicted.scene.resolution_m**2
    drift = drift_from_reference(bundle, predicted.seen, f"cell {cell.quadkey}")
    if drift is not None:
        summary["drift"] = drift.summary()
        if drift.warning:
            summary["warning"] = drift.warning
    return cell_summary(summary, cell, out)


def start_ray(cfg: DictConfig):
    """Connect to ``scale.ray_address``, or start a local Ray instance; returns the ``ray`` module."""
    try:
        import ray
    except ImportError as err:
        raise InputError("scale.engine=ray needs Ray: pip install 'openfootprints[ray]'") from err
    if not ray.is_initialized():
        address = cfg.scale.ray_address
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def actor_count(cfg: DictConfig, resources: dict) -> tuple[int, dict]:
    """How many model actors, and the resources of each: one per GPU (with one CPU to feed it); without GPUs,
    half the cluster's CPUs in actors of 2 (the other half reads and vectorizes). Always at least one CPU is
    left to the reading and vectorizing tasks, and never more actors than the cluster can place (an actor that
    cannot be placed would wait for ever)."""
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if gpus:
        n = min(cfg.scale.ray_actors or gpus, gpus, max(1, cpus - 1))
        return n, {"num_gpus": 1, "num_cpus": 1}
    budget = max(1, min(cpus // 2, cpus - 1))
    n = min(cfg.scale.ray_actors or max(1, budget // 2), budget)
    return n, {"num_cpus": max(1, budget // n)}


def run_ray(cfg: DictConfig, scene_path: str, model_path: str, cells: list[Cell], out: Storage,
            on_start=None) -> list[CellResult]:
    """Detect ``cells`` on Ray, their tables written to ``out`` by the workers; ``on_start(actors)`` is called once
    the actors exist (tests use it)."""
    if not cells:
        return []
    from openfootprints.model.onnx import load_model

    ray = start_ray(cfg)
    n, resources = actor_count(cfg, ray.cluster_resources())
    ray_retries = max(1, cfg.scale.retries)
    remote_actor = ray.remote(max_restarts=ray_retries, max_task_retries=ray_retries, **resources)(CellPredictor)
    read = ray.remote(num_cpus=1, max_retries=ray_retries)(read_cell)
    vectorize = ray.remote(num_cpus=1, max_retries=ray_retries)(vectorize_cell)
    plain = OmegaConf.to_container(cfg, resolve=True)
    bundle = ray.put(load_model(model_path))
    actors = [remote_actor.remote(plain, str(model_path), resources["num_cpus"]) for _ in range(min(n, len(cells)))]
    if on_start:
        on_start(actors)
    todo = collections.deque(cells)
    attempts: collections.Counter[str] = collections.Counter()
    busy = {actor: 0 for actor in actors}  # cells in flight per live actor
    running, results = {}, []

    def submit(cell: Cell) -> None:
        actor = min(busy, key=busy.__getitem__)
        attempts[cell.quadkey] += 1
        tiles = read.remote(plain, str(scene_path), bundle, cell)
        done = vectorize.remote(plain, str(scene_path), bundle, cell, actor.predict.remote(tiles), out.root)
        running[done] = (cell, actor)
        busy[actor] += 1

    try:
        while todo or running:
            while todo and busy and len(running) < 2 * len(busy):
                submit(todo.popleft())
            if not running:  # every actor retired
                results += [CellResult(c.quadkey, attempts[c.quadkey], error="no model actor left") for c in todo]
                break
            ready, _ = ray.wait(list(running), num_returns=1)
            cell, actor = running.pop(ready[0])
            if actor in busy:
                busy[actor] -= 1
            try:
                results.append(CellResult(cell.quadkey, attempts[cell.quadkey], summary=ray.get(ready[0])))
            except ray.exceptions.RayError as err:  # a stage raised, or an actor is past its restarts
                if isinstance(err, ray.exceptions.RayActorError):
                    busy.pop(actor, None)  # a dead actor is retired
                cause = getattr(err, "cause", None) or err  # a stage's own exception, not Ray's wrapper
                error = f"{type(cause).__name__}: {cause}"
                log.warning("cell %s, attempt %d: %s", cell.quadkey, attempts[cell.quadkey], error)
                if attempts[cell.quadkey] <= cfg.scale.retries:
                    todo.append(cell)
                    continue
                results.append(CellResult(cell.quadkey, attempts[cell.quadkey], error=error))
            log.info("cell %s: %s", cell.quadkey,
                     results[-1].error or f"{results[-1].summary.get('buildings')} buildings")
    finally:
        for actor in actors:
            ray.kill(actor)
    return results
