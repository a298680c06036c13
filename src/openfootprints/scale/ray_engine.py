"""The Ray engine of ``openfootprints scale``: the same cell function, run by a pool of model actors.

Each actor loads the model once (on a GPU when the cluster has them) and detects whole cells with
:func:`openfootprints.scale.engine.detect_cell`, so the output is the local engine's, cell for cell.
Ray's own fault tolerance is used as it is meant to be: an actor whose process dies is restarted
(``max_restarts``) and the cell it was working on is resubmitted to it (``max_task_retries``); an error
raised by the cell itself is retried inside the actor (``scale.retries``). A cell whose retries run out
comes back as a failure, to be reported. Cells are handed out as actors finish, so a slow cell does not
hold up the others.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from openfootprints.errors import InputError
from openfootprints.scale.cells import Cell
from openfootprints.scale.engine import CellResult

log = logging.getLogger(__name__)


class CellDetector:
    """A Ray actor holding the model; ``detect`` runs one cell (with retries) and returns a :class:`CellResult`."""

    def __init__(self, cfg: dict, model_path: str, threads: int | None):
        import tempfile

        from openfootprints.pipeline import load_predictor

        self.cfg, self.model_path = OmegaConf.create(cfg), model_path
        self.workdir = tempfile.mkdtemp(prefix="openfootprints-actor-")
        self.predictor = load_predictor(self.cfg, model_path, self.workdir, threads)

    def pid(self) -> int:
        return os.getpid()

    def detect(self, scene_path: str, cell: Cell, out_dir: str) -> CellResult:
        from openfootprints.scale import engine

        return engine.with_retries(lambda: engine.detect_cell(self.cfg, scene_path, self.model_path, cell,
                                                              Path(out_dir), self.predictor),
                                   cell, self.cfg.scale.retries)


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
    """How many model actors, and the resources of each: one per GPU, else one per 2 CPU cores (at least one),
    never more than the cluster can place (an actor that cannot be placed would wait for ever)."""
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if gpus:
        n = min(cfg.scale.ray_actors or gpus, gpus)
        return n, {"num_gpus": 1, "num_cpus": max(1, cpus // n)}
    n = min(cfg.scale.ray_actors or max(1, cpus // 2), cpus)
    return n, {"num_cpus": max(1, cpus // n)}


def run_ray(cfg: DictConfig, scene_path: str, model_path: str, cells: list[Cell], out_dir: Path,
            on_start=None) -> list[CellResult]:
    """Detect ``cells`` on Ray; ``on_start(actors)`` is called once the actors exist (tests use it)."""
    if not cells:
        return []
    ray = start_ray(cfg)
    n, resources = actor_count(cfg, ray.cluster_resources())
    retries = max(1, cfg.scale.retries)
    remote = ray.remote(max_restarts=retries, max_task_retries=retries, **resources)(CellDetector)
    plain = OmegaConf.to_container(cfg, resolve=True)
    actors = [remote.remote(plain, str(model_path), resources["num_cpus"]) for _ in range(min(n, len(cells)))]
    if on_start:
        on_start(actors)
    todo, running, results = list(cells), {}, []

    def submit(actor) -> None:
        cell = todo.pop(0)
        running[actor.detect.remote(str(scene_path), cell, str(out_dir))] = (actor, cell)

    try:
        for actor in actors:  # one cell per actor to start; the next goes to whichever finishes first
            if todo:
                submit(actor)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, cell = running.pop(ready[0])
            alive = True
            try:
                results.append(ray.get(ready[0]))
            except ray.exceptions.RayError as err:  # lost object, out of memory, or an actor past its restarts
                alive = not isinstance(err, ray.exceptions.RayActorError)  # a dead actor is retired
                results.append(CellResult(cell.quadkey, retries + 1, error=f"{type(err).__name__}: {err}"))
            log.info("cell %s: %s", cell.quadkey,
                     results[-1].error or f"{results[-1].summary.get('buildings')} buildings")
            if todo and alive:
                submit(actor)
            if todo and not running:  # every actor retired
                results += [CellResult(c.quadkey, 0, error="no model actor left") for c in todo]
                todo.clear()
    finally:
        for actor in actors:
            ray.kill(actor)
    return results
