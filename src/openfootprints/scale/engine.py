"""``openfootprints scale``: detection over an area of interest, one quadkey cell at a time, resumable.

Each cell runs :func:`openfootprints.pipeline.detect` with ``detect.bbox`` set to the cell: the windows lie
on the scene's own lattice and a margin of ``detect.max_building_m`` is vectorized around the cell, and the
cell keeps the buildings whose centroid it holds, so a building that straddles a cell border comes out
once and whole, exactly as in a single run over the scene. A cell's table appears whole when it is complete
(``OUT/buildings/cell=<quadkey>/part-0.parquet``, a GeoParquet dataset partitioned by cell): renamed into place
in a local folder, put as one object in object storage (``OUT`` can be ``s3://bucket/prefix`` or
``gs://bucket/prefix``, see :class:`openfootprints.io.storage.Storage`). A re-run skips the cells already there.
A failing cell is retried ``scale.retries`` times, then reported in the summary and the exit status, never
dropped silently.

Engines: ``local`` (this process, the model loaded once) or ``ray`` (:mod:`openfootprints.scale.ray_engine`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING

import shapely
from omegaconf import DictConfig

from openfootprints.errors import InputError
from openfootprints.io.provenance import write_resolved_config
from openfootprints.io.atomic import check_writable
from openfootprints.io.storage import Storage, is_url
from openfootprints.model.bundle import file_sha256
from openfootprints.model.onnx import load_model
from openfootprints import pipeline
from openfootprints.pipeline import open_for_model
from openfootprints.predict.windows import Region
from openfootprints.scale.cells import (Cell, CellResult, area_km2, area_of_interest, cell_config, cell_key,
                                        cell_summary, cells_covering, manifest_json, parse_manifest)

if TYPE_CHECKING:
    from openfootprints.predict.probabilities import WindowPredictor

log = logging.getLogger(__name__)


def run_identity(cfg: DictConfig, scene_path: str, model_path: str) -> dict:
    """What a run's cells depend on: the scene, the model file's content, the zoom and the area."""
    aoi = cfg.scale.aoi
    return {"scene": str(scene_path), "model": str(model_path), "model_sha256": file_sha256(model_path)[:16],
            "zoom": cfg.scale.zoom, "aoi": aoi if aoi is None or isinstance(aoi, str) else list(aoi)}


def plan(cfg: DictConfig, scene_path: str, model_path: str, out: Storage | str | os.PathLike
         ) -> tuple[list[Cell], shapely.Geometry]:
    """The cells of the run and the area they cover (degrees); the cells are written to ``OUT/manifest.json``.

    Resuming (the manifest is there) needs the same model; a changed area or zoom plans again, keeping the
    cells already written that are still wanted.
    """
    out = out if isinstance(out, Storage) else Storage(out)
    identity = run_identity(cfg, scene_path, model_path)
    if out.exists("manifest.json"):
        before = parse_manifest(out.read_text("manifest.json"))
        if before.get("model_sha256") != identity["model_sha256"] or before.get("scene") != identity["scene"]:
            raise InputError(f"{out.root}: holds a run of another model or scene ({before.get('model')} on "
                             f"{before.get('scene')}); write this one to a new --out folder")
    scene = open_for_model(cfg, scene_path, load_model(model_path))
    aoi = identity["aoi"]
    area = area_of_interest(scene, aoi)
    cells = cells_covering(area, cfg.scale.zoom)
    out.write_text("manifest.json", manifest_json(cells, identity))
    return cells, area


def detect_cell(cfg: DictConfig, scene_path: str, model_path: str, cell: Cell, out: Storage,
                predictor: WindowPredictor | None = None, adapted: bool = False) -> dict:
    """Detect one cell (all stages in this process) with the model at ``model_path``, or ``predictor`` when it is
    loaded already (:func:`openfootprints.pipeline.load_predictor`; ``adapted``: to the whole scene, AdaBN), and
    put its table in place, whole; returns ``detect``'s summary for the cell (:func:`cell_summary`)."""
    with out.staged(cell_key(cell)) as staged:
        summary = pipeline.detect(cell_config(cfg, cell), scene_path, model_path, str(staged), progress=False,
                                  predictor=predictor, adapted=adapted)
    return cell_summary(summary, cell, out)


def run_local(cfg: DictConfig, scene_path: str, model_path: str, cells: list[Cell], out: Storage) -> list[CellResult]:
    """Every cell in this process, the model loaded once; each retried up to ``scale.retries`` times."""
    with tempfile.TemporaryDirectory(prefix="openfootprints-model-") as workdir:
        predictor = pipeline.load_predictor(cfg, model_path, workdir)
        adapted = bool(cfg.detect.adapt_bn and cells)
        if adapted:  # once for the whole scene, not per cell: every cell sees the same network (no seams)
            scene = open_for_model(cfg, scene_path, predictor.bundle)
            pipeline.adapt_to_scene(cfg, scene, Region(0, scene.height, 0, scene.width), predictor)
        results = []
        for k, cell in enumerate(cells):
            results.append(with_retries(lambda c=cell: detect_cell(cfg, scene_path, model_path, c, out, predictor,
                                                                   adapted), cell, cfg.scale.retries))
            log.info("cell %s (%d/%d): %s", cell.quadkey, k + 1, len(cells),
                     results[-1].error or f"{results[-1].summary.get('buildings')} buildings")
    return results


def with_retries(job, cell: Cell, retries: int) -> CellResult:
    """Run ``job()`` up to ``1 + retries`` times; the last error is kept when every attempt fails."""
    error = None
    for attempt in range(1, retries + 2):
        try:
            return CellResult(cell.quadkey, attempt, summary=job())
        except Exception as err:  # noqa: BLE001 — any failure of a cell is retried, then reported
            error = f"{type(err).__name__}: {err}"
            log.warning("cell %s, attempt %d: %s", cell.quadkey, attempt, error)
    return CellResult(cell.quadkey, retries + 1, error=error)


def stage_seconds(results: list[CellResult]) -> dict:
    """Seconds spent per stage (``read_s``, ``predict_s``, ``vectorize_s``, …) summed over the cells, on
    whichever workers ran them."""
    totals: dict = {}
    for result in results:
        for key, value in result.summary.items():
            if key.endswith("_s") and key != "total_s":
                totals[key] = round(totals.get(key, 0.0) + value, 2)
    return totals


def scale(cfg: DictConfig, scene_path: str, model_path: str, out_dir: str | os.PathLike) -> dict:
    """Run (or resume) detection over the area of interest; returns and writes ``OUT/summary.json``.

    ``scene_path`` and ``out_dir`` can be local paths or ``s3://`` / ``gs://`` URLs."""
    if not is_url(str(out_dir)):
        check_writable(out_dir, folder=True)
    out = Storage(out_dir)
    start = time.monotonic()
    cells, area_of_run = plan(cfg, scene_path, model_path, out)  # bad imagery or model: stops here, nothing written
    with out.staged("config.yaml") as tmp:
        write_resolved_config(cfg, tmp)
    written = out.files("buildings")  # one listing, not a request per cell
    pending = [c for c in cells if cell_key(c) not in written]
    out.remove_staging("buildings/cell=*/.*")  # what an interrupted run left (local folders only)
    log.info("scale: %d cells at zoom %d, %d to do", len(cells), cfg.scale.zoom, len(pending))
    if cfg.scale.engine == "ray":
        from openfootprints.scale.ray_engine import run_ray

        if cfg.detect.adapt_bn:
            raise InputError("scale.engine=ray: detect.adapt_bn is not supported on Ray yet (its actors predict "
                             "windows, not whole scenes); use scale.engine=local, or detect.adapt_bn=0")

        results = run_ray(cfg, scene_path, model_path, pending, out)
    else:
        results = run_local(cfg, scene_path, model_path, pending, out)
    seconds = time.monotonic() - start
    done = [r for r in results if r.error is None]
    failed = [{"quadkey": r.quadkey, "attempts": r.attempts, "error": r.error} for r in results if r.error]
    done_cells = {r.quadkey for r in done}
    area = sum(area_km2(shapely.box(*c.bbox).intersection(area_of_run)) for c in cells if c.quadkey in done_cells)
    drifted = sorted(r.quadkey for r in done if (r.summary.get("drift") or {}).get("major"))
    if drifted:
        log.warning("scale: %d cell(s) with imagery or predictions unlike the model's validation data (their "
                    "summaries say how): %s", len(drifted), ", ".join(drifted[:10]))
    summary = {"cells": len(cells), "cells_done_now": len(done), "cells_skipped": len(cells) - len(pending),
               "cells_failed": len(failed), "failures": failed, "cells_drifted": drifted,
               "buildings_now": sum(r.summary.get("buildings", 0) for r in done),
               "area_km2_now": round(area, 4), "seconds": round(seconds, 1),
               "km2_per_hour": round(area / seconds * 3600, 1) if seconds and area else None,
               "seconds_by_stage": stage_seconds(done),
               "energy_kwh": round(sum(r.summary.get("energy_kwh") or 0.0 for r in done), 6),
               "emissions_kg_co2e": round(sum(r.summary.get("emissions_kg_co2e") or 0.0 for r in done), 6),
               "engine": cfg.scale.engine, "output": out.uri("buildings")}
    out.write_text("summary.json", json.dumps(summary, indent=2))
    return summary
