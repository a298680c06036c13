"""The detect command, stage by stage: predict → vectorize → export (``evaluate`` and ``calibrate`` are in
:mod:`openfootprints.evaluation.run`).

Each function takes the resolved config and file paths, writes its outputs atomically and its resolved
config beside them, and returns what it wrote. geopandas (about 0.8 s to import) is imported only where
buildings are written, in the vectorizing thread: the first window does not wait for it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import shapely
from omegaconf import DictConfig
import rasterio
from rasterio.shutil import copy as rio_copy

from openfootprints.energy import energy_meter
from openfootprints.errors import InputError
from openfootprints.io.atomic import atomic_outputs, check_writable
from openfootprints.io.formats import FORMATS
from openfootprints.io.geo import degrees_to_crs, to_lonlat
from openfootprints.io.provenance import config_path_beside, write_resolved_config
from openfootprints.io.raster import Scene, open_scene
from openfootprints.model.base import adapt_hint, describe_model, is_base_model
from openfootprints.predict.adapt import scene_batches
from openfootprints.model.bundle import Bundle
from openfootprints.model.onnx import cached_onnx, load_model
from openfootprints.monitor.drift import Drift, Profile, compare, decoding_settings
from openfootprints.predict.blend import ValidPixels
from openfootprints.predict.probabilities import (WindowPredictor, predict_probabilities, region_from_bounds,
                                                  region_transform, select_device, select_engine)
from openfootprints.predict.windows import Region
from openfootprints.predict.engines import fewer_malloc_arenas, surely_cpu
from openfootprints.predict.stream import Cancelled, ProbabilityStream
from openfootprints.vectorize.polygons import Buildings, iter_buildings, rows_in_use

log = logging.getLogger(__name__)


def load_predictor(cfg: DictConfig, model_path: str, workdir: str | Path, threads: int | None = None) -> WindowPredictor:
    """The model at ``model_path`` ready to run many scenes (a service): loaded once, on the device and engine of
    ``cfg.detect``; a bundle that runs on ONNX Runtime is exported once and cached (:func:`cached_onnx`; into
    ``workdir`` when the cache cannot be written).

    ``threads`` caps ONNX Runtime's threads (default: all cores). A bundle that runs on ONNX Runtime on the CPU is
    described by the file that runs (its INT8 file or its cached fp32 export, both made from its very bytes): its
    weights, and so PyTorch (about 0.4 GiB), are not loaded.
    """
    from openfootprints.model.quantize import made_from

    fewer_malloc_arenas()  # before the runs' and readers' threads exist
    if cfg.detect.adapt_bn:  # the statistics change per scene: the bundle's network on PyTorch
        if str(model_path).lower().endswith(".onnx") or cfg.detect.engine not in ("auto", "torch"):
            raise InputError(f"{model_path}: detect.adapt_bn re-estimates the network's batch-norm statistics with "
                             "PyTorch: give a bundle (.ofp) and detect.engine=auto or torch")
        bundle = load_model(model_path)
        return WindowPredictor(bundle, select_device(cfg.detect.device, bundle), "torch", workdir, threads,
                               compile=cfg.detect.compile)
    int8 = None
    if surely_cpu(cfg.detect.device) and not str(model_path).lower().endswith(".onnx"):
        int8 = int8_file(cfg.detect.engine, model_path)
        # auto only picks an INT8 file made from this bundle; a forced one may be another bundle's
        if int8 is not None and (cfg.detect.engine == "auto" or made_from(int8, model_path)):
            return WindowPredictor(load_model(int8), "cpu", "onnx", workdir, threads)
        if int8 is None and cfg.detect.engine in ("auto", "onnx"):  # fp32 on ONNX Runtime: described by the export
            return WindowPredictor(load_model(cached_onnx(model_path, workdir)), "cpu", "onnx", workdir, threads)
    bundle = load_model(model_path)
    device = select_device(cfg.detect.device, bundle)
    engine = select_engine(cfg.detect.engine, device, bundle)
    exported = None
    if engine == "onnx" and not bundle.training.get("onnx_path"):
        exported = int8 or int8_file(cfg.detect.engine, model_path) or cached_onnx(model_path, workdir)
    return WindowPredictor(bundle, device, engine, workdir, threads, compile=cfg.detect.compile, onnx_file=exported)


def int8_file(requested: str, model_path: str) -> Path | None:
    """The INT8 file to run in place of the bundle at ``model_path``: with ``detect.engine=onnx-int8`` the one
    beside it, whatever its check said; with ``auto`` only one made from this bundle and within tolerance of fp32
    on its validation chips (:func:`~openfootprints.model.quantize.usable_int8`); else None."""
    from openfootprints.model.quantize import int8_beside, usable_int8

    if requested == "onnx-int8":
        path = int8_beside(model_path)
        if not path.exists():
            raise InputError(f"{path}: no INT8 file beside the model for detect.engine=onnx-int8; make it with "
                             f"`openfootprints export {model_path} --int8`")
        log.info("running %s (detect.engine=onnx-int8)", path)
        return path
    usable = usable_int8(model_path) if requested == "auto" else None
    if usable:
        log.info("running %s: INT8, checked within 1 point of fp32 (its quantization.check says where; "
                 "detect.engine=onnx runs fp32)", usable)
    return usable


def open_for_model(cfg: DictConfig, scene_path: str, bundle: Bundle) -> Scene:
    """Open a scene with the bands and at the ground resolution the model expects, refusing another pixel type."""
    bands = list(cfg.data.bands) if cfg.data.bands else bundle.bands
    scene = open_scene(scene_path, bands=bands, resolution_m=bundle.resolution_m)
    if bundle.dtype and scene.dtype != bundle.dtype and not cfg.detect.allow_other_dtype:
        raise InputError(f"{scene_path}: {scene.dtype} pixels, but the model was trained on {bundle.dtype}; "
                         "rescale the imagery, or set detect.allow_other_dtype=true if its values are comparable")
    return scene


def detect(cfg: DictConfig, scene_path: str, model_path: str, out: str, progress: bool = True,
           predictor: WindowPredictor | None = None, adapted: bool = False) -> dict:
    """Detect buildings in a scene and write the buildings table to ``out`` (format by extension).

    ``predictor``: the model already loaded by :func:`load_predictor` (``model_path`` is then unused);
    ``adapted``: its batch-norm statistics were re-estimated on this whole scene already (``scale`` does it once
    for all its cells, :func:`adapt_to_scene`), so neither ``detect.adapt_bn`` nor a reset applies.
    Returns a summary: counts, area in km², seconds per stage, energy and the output paths.
    """
    check_writable(out, FORMATS)  # before any work: a wrong name must not cost a whole run
    if cfg.detect.probabilities:
        check_writable(cfg.detect.probabilities, {".tif", ".tiff"})
    with contextlib.ExitStack() as stack:
        if predictor is None:  # loaded for this run (ONNX exported into a temporary folder when that engine runs)
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="openfootprints-model-"))
            predictor = load_predictor(cfg, model_path, workdir)
        return _detect_with(cfg, scene_path, predictor, Path(out), progress, adapted)


def adapt_to_scene(cfg: DictConfig, scene: Scene, region: Region, predictor: WindowPredictor) -> float:
    """AdaBN: ``predictor``'s batch-norm statistics re-estimated on ``detect.adapt_bn`` windows of ``region``
    (:mod:`openfootprints.predict.adapt`); returns the seconds it took."""
    start = time.monotonic()
    seen = predictor.adapt_to(scene_batches(scene, region, predictor.normalize, cfg.detect.adapt_bn))
    log.info("detect: batch-norm statistics re-estimated on %d window(s) of the scene", seen)
    return time.monotonic() - start


def _detect_with(cfg: DictConfig, scene_path: str, predictor: WindowPredictor, out: Path, progress: bool,
                 adapted: bool = False) -> dict:
    bundle = predictor.bundle
    scene = open_for_model(cfg, scene_path, bundle)
    region, context = detection_area(cfg, scene)
    timings: dict[str, float] = {}
    if cfg.detect.adapt_bn and not adapted:
        timings["adapt_bn_s"] = adapt_to_scene(cfg, scene, region, predictor)
    elif not adapted:  # a loaded model adapted by an earlier run is itself again
        predictor.unadapt()
    predictor.start_profile()
    valid = ValidPixels(region)
    with energy_meter(cfg.tracking.country, cfg.tracking.energy) as energy:
        n_buildings = _detect_into(cfg, scene, scene_path, bundle, context, out, timings, progress, predictor, valid)
    if predictor.seen is not None:  # the buildings were counted in the region: their area, each pixel once
        predictor.seen.area_m2 = valid.inside * scene.resolution_m**2
    summary = detect_summary(scene, region, n_buildings, timings, energy, out)
    summary["engine"] = predictor.described
    summary["model"] = describe_model(bundle)
    log.info("detect: %d buildings over %.3f km² in %.1f s", n_buildings, summary["area_km2"], summary["total_s"])
    warnings = []
    if not valid.predicted:
        warnings.append(f"{Path(scene_path).name}: no valid pixels in the area (all nodata, masked or outside "
                        "the imagery's tiles), so no building could be found")
    drift = drift_from_reference(bundle, predictor.seen, Path(scene_path).name)
    if drift is not None:
        summary["drift"] = drift.summary()
        if drift.warning:
            warnings.append(drift.warning)
            summary["hint"] = adapt_hint(scene_path, is_base_model(bundle))
    if warnings:
        summary["warning"] = "; ".join(warnings)
        for warning in warnings:
            log.warning(warning)
        if "hint" in summary:
            log.warning(summary["hint"])
    return summary


def drift_from_reference(bundle: Bundle, seen: Profile | None, scene_name: str) -> Drift | None:
    """How far what the model saw in this run is from its validation data (None: the bundle has no reference
    profile, or too little was seen)."""
    if bundle.profile is None or seen is None:
        return None
    return compare(Profile.from_dict(bundle.profile), seen, scene_name)


def detection_area(cfg: DictConfig, scene: Scene) -> tuple[Region, Region]:
    """(region, context) in the scene's grid: the rectangle of ``detect.bbox`` (the whole scene without one),
    and the one predicted and vectorized for it — grown by ``detect.max_building_m``, since a building whose
    centroid is in the box can reach out of it by up to its size (the windows' own context comes from the
    scene-wide window lattice)."""
    d = cfg.detect
    bounds = degrees_to_crs(d.bbox, scene.crs) if d.bbox else None
    region = region_from_bounds(scene, bounds)
    if bounds is None:
        return region, region
    return region, region.grown(math.ceil(d.max_building_m / scene.resolution_m), scene.height, scene.width)


def detect_summary(scene: Scene, region: Region, n_buildings: int, timings: dict, energy: dict, out: Path) -> dict:
    """What ``detect`` reports: buildings, km², seconds per stage, km²/h, energy and the output paths."""
    area_km2 = region.width * region.height * scene.resolution_m**2 / 1e6
    total = timings.get("total_s")
    return {"buildings": n_buildings, "area_km2": round(area_km2, 4), **{k: round(v, 2) for k, v in timings.items()},
            "km2_per_hour": round(area_km2 / total * 3600, 1) if total else None, **energy, "output": str(out),
            "config": str(config_path_beside(out))}


def centroids_in(polygons: np.ndarray, crs, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """(n,) bool: the polygon's centroid (in ``crs``, taken to degrees) is in ``bbox`` [west, south, east, north]
    in degrees, half-open ([west, east) × [south, north)), so boxes that tile an area give each building to
    exactly one of them."""
    if len(polygons) == 0:
        return np.zeros(0, bool)
    centroids = to_lonlat(shapely.centroid(polygons), crs)
    lon, lat = shapely.get_x(centroids), shapely.get_y(centroids)
    return (lon >= bbox[0]) & (lon < bbox[2]) & (lat >= bbox[1]) & (lat < bbox[3])


def _detect_into(cfg, scene, scene_path, bundle, context, out: Path, timings: dict, progress: bool,
                 predictor: WindowPredictor | None = None, valid: ValidPixels | None = None) -> int:
    """Predict over ``context``, vectorize, keep the buildings in ``detect.bbox`` (if any), write them to ``out``;
    the valid pixels predicted are counted in ``valid``.

    Vectorization runs in this thread beside prediction in another (rows handed over by a
    :class:`ProbabilityStream`), unless the probability raster is kept (``detect.probabilities``): then one
    after the other, through a GeoTIFF. Fills ``timings`` (``predict_s``; ``vectorize_s`` after prediction
    ended; ``total_s``) and returns the number of buildings written.
    """
    d = cfg.detect
    seen = predictor.seen if predictor is not None else None  # buildings counted beside the predicted pixels
    start = time.monotonic()
    with gdal_env(cfg), \
            tempfile.TemporaryDirectory(prefix="openfootprints-") as tmp:
        predict = functools.partial(predict_probabilities, scene, bundle, region=context, window=d.window_px,
                                    halo_m=d.halo_m, batch_size=d.batch_size, device=d.device, progress=progress,
                                    engine=d.engine, tta=d.tta, predictor=predictor, valid_pixels=valid)
        if d.probabilities:
            source = Path(tmp) / "probabilities.tif"
            predict(source)
            timings["predict_s"] = time.monotonic() - start
            parts, table, n_buildings = _vectorize_into_parts(cfg, bundle, scene, scene_path, str(source), Path(tmp),
                                                              seen)
        else:
            # a ring of rows: what vectorization reads between releases, and room for the next rows of windows
            rows = rows_in_use(scene.resolution_m, bundle.label_erosion_m, d.max_building_m) + \
                2 * (d.window_px or bundle.window)
            with ProbabilityStream(Path(tmp) / "probabilities.u8", context.width, context.height, scene.crs,
                                   region_transform(scene, context), capacity_rows=rows) as stream, \
                    ThreadPoolExecutor(1) as pool:
                producer = pool.submit(_predict_into_stream, predict, stream, Path(tmp), timings, start)
                try:
                    parts, table, n_buildings = _vectorize_into_parts(cfg, bundle, scene, scene_path, stream,
                                                                      Path(tmp), seen)
                except BaseException as err:
                    stream.fail(err)  # stop the predicting thread too
                    cause = producer.exception()  # (waits for it)
                    if isinstance(err, Cancelled) and cause is not None:
                        raise cause from None  # the prediction failed: that is the error to report
                    raise
                failed = producer.exception()
                if failed is not None:
                    raise failed
        vectorized = time.monotonic()
        write_outputs(cfg, out, parts, table, probabilities=source if d.probabilities else None)
    end = time.monotonic()
    timings["vectorize_s"] = vectorized - (start + timings["predict_s"])
    timings["write_s"] = end - vectorized
    timings["total_s"] = end - start
    return n_buildings


def gdal_env(cfg: DictConfig) -> rasterio.Env:
    """GDAL settings for reading a scene: its block cache defaults to 5 % of RAM and would grow with the scene, so
    it is bounded to ``detect.gdal_cache_mb``."""
    return rasterio.Env(GDAL_CACHEMAX=cfg.detect.gdal_cache_mb * 2**20)


def _predict_into_stream(predict, stream: ProbabilityStream, tmp: Path, timings: dict, start: float) -> None:
    try:
        predict(tmp / "unused.tif", sink=stream)
    except BaseException as err:
        stream.fail(err)  # wake the vectorizing thread
        raise
    finally:
        stream.finish()
        timings["predict_s"] = time.monotonic() - start


def write_outputs(cfg: DictConfig, out: Path, parts: list[Path], table, probabilities: Path | None = None) -> None:
    """Write the buildings table (from its GeoParquet ``parts``; ``table`` gives the schema when there is none),
    the resolved config beside it and, when given, the probability raster as a COG at ``detect.probabilities``:
    all of them or, on error, none."""
    from openfootprints.io.vector import write_table_parts

    finals = ([cfg.detect.probabilities] if probabilities else []) + [config_path_beside(out), out]
    with atomic_outputs(*finals) as tmps:
        if probabilities:
            rio_copy(probabilities, tmps[0], driver="COG", compress="deflate", overview_resampling="average")
        write_resolved_config(cfg, tmps[-2])
        write_table_parts(parts, tmps[-1], empty=table)


def vectorize_and_write(cfg: DictConfig, bundle: Bundle, scene: Scene, scene_path: str, source, out: Path,
                        seen: Profile | None = None) -> int:
    """The vectorize and write stages alone, from a probability ``source`` already predicted (a raster path or a
    raster-like object); returns the number of buildings written to ``out`` (counted in ``seen`` too, if given)."""
    with tempfile.TemporaryDirectory(prefix="openfootprints-") as tmp:
        parts, table, n_buildings = _vectorize_into_parts(cfg, bundle, scene, scene_path, source, Path(tmp), seen)
        write_outputs(cfg, out, parts, table)
    return n_buildings


def bundle_cut(bundle: Bundle, threshold: float) -> float:
    """The bundle's confidence cut, if detection decodes at the threshold it was chosen with (else 0: none)."""
    if bundle.min_confidence > 0 and threshold != bundle.threshold:
        log.info("detect.threshold=%g is not the model's %g, with which its confidence cut %.3f was chosen: every "
                 "building is kept (detect.min_confidence sets a cut)", threshold, bundle.threshold,
                 bundle.min_confidence)
        return 0.0
    return bundle.min_confidence


def _vectorize_into_parts(cfg, bundle, scene, scene_path, source, tmp: Path, seen: Profile | None = None):
    """Vectorize ``source`` (a raster path or a raster-like stream or array) tile by tile into GeoParquet parts in
    ``tmp``; the buildings' confidences (before calibration) are counted in ``seen`` when given.

    Returns (part paths, the last table (for the schema when there is no part), number of buildings).
    """
    from openfootprints.export.buildings import buildings_table
    from openfootprints.io.vector import write_geoparquet

    d = cfg.detect
    parts, n_buildings = [], 0
    table = buildings_table(np.array([], dtype=object), np.array([]), scene.crs)  # the schema, if none is found
    threshold = d.threshold if d.threshold is not None else bundle.threshold
    min_confidence = d.min_confidence if d.min_confidence is not None else bundle_cut(bundle, threshold)
    if seen is not None:
        seen.decoding = decoding_settings(threshold, d.min_area_m2, min_confidence)
    tiles = iter_buildings(source, threshold,
                            grow_m=bundle.label_erosion_m, simplify_m=d.simplify_m, min_area_m2=d.min_area_m2,
                            seed_threshold=bundle.seed_threshold,
                            margin_m=d.max_building_m, regularize_m=d.regularize_m, res_m=scene.resolution_m,
                            min_confidence=min_confidence)  # the bundle's cut (training.confidence_cut) or the user's
    for k, found in enumerate(tiles):  # one table part per tile: memory does not grow with the scene
        if d.bbox:  # the buildings whose centroid is in the box, seen with image context around it
            inside = centroids_in(found.polygons, found.crs, d.bbox)
            found = Buildings(found.polygons[inside], found.confidence[inside], found.crs)
        table = buildings_table(found.polygons, bundle.calibrate(found.confidence), found.crs,
                                model_version=bundle.version, source=Path(scene_path).name,
                                min_area_m2=d.min_area_m2, raw_confidence=found.confidence)
        if seen is not None:
            seen.add_buildings(table["raw_confidence"].to_numpy())
        if len(table):
            parts.append(tmp / f"part{k:06d}.parquet")
            write_geoparquet(table, parts[-1])
            n_buildings += len(table)
    return parts, table, n_buildings


__all__ = ["detect", "load_predictor", "open_for_model", "vectorize_and_write"]
