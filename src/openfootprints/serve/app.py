"""The HTTP API: POST a GeoTIFF to ``/detect``, get its buildings as GeoJSON or GeoParquet.

Detection is :func:`openfootprints.pipeline.detect`, run by worker processes that load the model once at
startup (:mod:`openfootprints.serve.workers`). Before a worker is used, each upload is checked here:
its size while it streams in, then that it is a GeoTIFF the model can read and how many pixels it has.
Every refusal is a 4xx or 503/504 with a one-line ``detail``; a 500 means a bug.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import anyio
import rasterio
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from omegaconf import DictConfig, OmegaConf
from prometheus_client import CONTENT_TYPE_LATEST as METRICS_TYPE
from pydantic import BaseModel, Field
from rasterio.errors import RasterioError
from starlette.background import BackgroundTask
from starlette.types import ASGIApp

from openfootprints import __version__
from openfootprints.errors import InputError
from openfootprints.model.bundle import Bundle
from openfootprints.model.onnx import load_model
from openfootprints.io.provenance import json_safe
from openfootprints.pipeline import bundle_cut, open_for_model
from openfootprints.serve.metrics import MetricsMiddleware, ServiceMetrics
from openfootprints.predict.probabilities import select_device, select_engine
from openfootprints.serve.workers import (SUMMARY, DetectionTimeout, Job, NoWorker, PoolBusy, WorkerFailed,
                                          WorkerPool)

GEOJSON = "application/geo+json"
PARQUET = "application/vnd.apache.parquet"
WARNING_HEADER = "X-Openfootprints-Warning"  # set when the result is empty for a reason the client should hear


@dataclass(frozen=True)
class Limits:
    """Per-request limits of ``/detect``, from the ``serve`` section of the config."""

    max_upload_mb: float  # request body, MiB
    max_pixels: int  # width × height at the model's ground resolution
    max_seconds: float  # detection time on a worker
    max_concurrent: int  # worker processes
    max_queued: int  # requests waiting for a worker
    upload_seconds: float = 120.0  # to receive a request body

    @classmethod
    def from_config(cls, serve: DictConfig) -> Limits:
        return cls(max_upload_mb=float(serve.max_upload_mb), max_pixels=int(serve.max_megapixels * 1e6),
                   max_seconds=float(serve.max_seconds), max_concurrent=serve.max_concurrent,
                   max_queued=serve.max_queued, upload_seconds=float(serve.upload_seconds))


# -- response documents (OpenAPI) -----------------------------------------------------------------

class Problem(BaseModel):
    """Why a request was refused."""

    detail: str = Field(description="one line: what is wrong and what to do")


class BuildingProperties(BaseModel):
    latitude: float = Field(description="centroid latitude, degrees (EPSG:4326)")
    longitude: float = Field(description="centroid longitude, degrees (EPSG:4326)")
    area_in_meters: float = Field(description="geodesic area on the WGS84 ellipsoid, m²")
    confidence: float = Field(description="probability of a true building (calibrated when the model is), 0–1")
    full_plus_code: str = Field(description="Plus Code of the centroid")
    raw_confidence: float = Field(description="mean building probability inside the polygon, 0–1")
    model_version: str
    source: str = Field(description="name of the uploaded file")


class Geometry(BaseModel):
    type: Literal["Polygon", "MultiPolygon"]
    coordinates: list[Any] = Field(description="longitude, latitude in degrees (EPSG:4326)")


class Feature(BaseModel):
    type: Literal["Feature"]
    properties: BuildingProperties
    geometry: Geometry


class FeatureCollection(BaseModel):
    """The buildings table as GeoJSON (RFC 7946, EPSG:4326)."""

    type: Literal["FeatureCollection"]
    features: list[Feature]


class Health(BaseModel):
    status: Literal["ok", "starting", "degraded"] = Field(
        description="ok: every worker has the model; starting: none has it yet; degraded: fewer than configured")
    model_loaded: bool = Field(description="at least one worker has loaded the model and can take a detection")
    workers: int = Field(description="worker processes running or starting")
    idle: int = Field(description="workers free for a detection")
    busy: int = Field(description="detections running")
    queued: int = Field(description="requests waiting for a worker")


class ModelInfo(BaseModel):
    version: str = Field(description="openfootprints version that made the bundle")
    architecture: dict[str, Any]
    bands: list[int] = Field(description="1-based band indexes read from the imagery")
    resolution_m: float = Field(description="ground resolution the model was trained at, metres per pixel")
    window: int = Field(description="detection window, pixels")
    halo_m: float = Field(description="overlap between windows, metres")
    threshold: float = Field(description="building probability threshold the service uses")
    min_confidence: float = Field(description="buildings of lower (raw) confidence are dropped; 0: none is")
    dtype: str = Field(description="pixel type of the training imagery (uploads must match); empty if unknown")
    calibrated: bool = Field(description="whether the confidence is calibrated")
    training: dict[str, Any] = Field(description="the bundle's training record (config, metrics, energy, run id)")
    data_fingerprint: str = Field(description="fingerprint of the training files")


class OutputFormat(str, Enum):
    geojson = "geojson"
    parquet = "parquet"


class GeoJSONResponse(JSONResponse):
    media_type = GEOJSON


def problem(status: int, *more: int) -> dict:
    return {code: {"model": Problem} for code in (status, *more)}


# -- checks ---------------------------------------------------------------------------------------

class BodyLimit:
    """ASGI middleware: a request body over ``max_mb`` MiB gets 413, by its Content-Length or while it streams;
    one not received within ``seconds`` gets 408 (a slow or stalled client must not hold the server)."""

    def __init__(self, app, max_mb: float, seconds: float = 120.0):
        self.app, self.max_mb, self.max_bytes, self.seconds = app, max_mb, int(max_mb * 2**20), seconds

    def refusal(self, why: str = "size") -> JSONResponse:
        if why == "time":
            return JSONResponse({"detail": f"upload not received within serve.upload_seconds={self.seconds:g} s; "
                                           "send it faster or raise the limit"}, status_code=408)
        return JSONResponse({"detail": f"upload larger than serve.max_upload_mb={self.max_mb:g} MiB; "
                                       "send a smaller scene"}, status_code=413)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self.refusal()(scope, receive, send)
        received, exceeded, started = 0, None, False
        deadline = anyio.current_time() + self.seconds

        async def counting_receive():
            nonlocal received, exceeded
            try:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    message = await receive()
            except TimeoutError:
                exceeded = "time"
                raise BodyTooLarge from None
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                exceeded = "size"
                raise BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:  # the app's answer to a cut body (a parse error) is replaced by the 413
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self.refusal(exceeded)(scope, receive, send)


class BodyTooLarge(Exception):
    """The request body broke a limit (size or time)."""


def safe_name(filename: str | None) -> str:
    """The uploaded file's base name reduced to safe characters (it becomes the table's ``source``)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename or "").name).lstrip(".")[:100]
    return name or "upload.tif"


def check_upload(cfg: DictConfig, path: Path, bundle: Bundle, max_pixels: int) -> None:
    """Refuse, before a worker is used, what detection cannot or may not take: not a GeoTIFF (415), a raster the
    model cannot read (no CRS, too few bands, another pixel type: :class:`InputError`, 422), too many pixels (413)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rasterio warns about rasters without georeferencing; checked below
        try:
            with rasterio.open(path, driver="GTiff"):  # GeoTIFF only: a VRT could read files on the server
                pass
        except RasterioError:
            raise HTTPException(415, f"{path.name}: not a GeoTIFF (GDAL cannot read it as one); "
                                     "upload a GeoTIFF or COG") from None
        scene = open_for_model(cfg, str(path), bundle)
    scene.dataset.close()
    if scene.width * scene.height > max_pixels:
        raise HTTPException(413, f"{path.name}: {scene.width} × {scene.height} px at the model's "
                                 f"{bundle.resolution_m:g} m is over serve.max_megapixels={max_pixels / 1e6:g}; "
                                 "send a smaller area")


def choose_format(fmt: OutputFormat | None, accept: str) -> OutputFormat:
    """The ``format`` query parameter, else GeoParquet if the Accept header asks for it, else GeoJSON."""
    if fmt is not None:
        return fmt
    return OutputFormat.parquet if PARQUET in accept else OutputFormat.geojson


def one_line(errors: Sequence[dict]) -> str:
    """FastAPI's validation errors as one line: ``query.format: Input should be 'geojson' or 'parquet'``."""
    return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors)


# -- the app --------------------------------------------------------------------------------------

def model_info(bundle: Bundle, cfg: DictConfig) -> ModelInfo:
    threshold = cfg.detect.threshold if cfg.detect.threshold is not None else bundle.threshold
    return ModelInfo(version=bundle.version, architecture=json_safe(bundle.metadata()["architecture"]),
                     bands=bundle.bands, resolution_m=bundle.resolution_m, window=bundle.window,
                     halo_m=bundle.halo_m, threshold=threshold, dtype=bundle.dtype,
                     min_confidence=(cfg.detect.min_confidence if cfg.detect.min_confidence is not None
                                     else bundle_cut(bundle, threshold)),
                     calibrated=bool(bundle.calibration), training=json_safe(bundle.training),
                     data_fingerprint=bundle.data_fingerprint)


def create_app(cfg: DictConfig, model_path: str | Path, viewer: ASGIApp | None = None) -> FastAPI:
    """The service for the model at ``model_path`` (``.ofp`` or ``.onnx``) with the settings of ``cfg``
    (``detect`` for detection, ``serve`` for limits).

    ``viewer``, an ASGI app mounted at ``/viewer``: the hook for the web map viewer, e.g.
    ``openfootprints.view.create_app(prepare_viewer(cfg, result, imagery))``.

    The model's metadata is read now (a bad model is an :class:`InputError` here); the workers start with the
    app's lifespan (uvicorn, or ``with TestClient(app)``) and stop with it.
    """
    bundle = load_model(model_path)
    bundle.state_dict = {}  # this process only checks uploads against the metadata; the workers hold the weights
    select_engine(cfg.detect.engine, select_device(cfg.detect.device, bundle), bundle)  # refuse a bad device/engine now
    limits = Limits.from_config(cfg.serve)
    worker_cfg = cast(dict, OmegaConf.to_container(cfg, resolve=True))  # a DictConfig's container is a dict
    worker_cfg["detect"]["probabilities"] = None  # one fixed path for every request's raster: not in a service
    pool = WorkerPool(worker_cfg, str(Path(model_path).resolve()), limits.max_concurrent, limits.max_queued)
    info = model_info(bundle, cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await anyio.to_thread.run_sync(pool.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(pool.close)

    app = FastAPI(title="openfootprints", version=__version__, lifespan=lifespan,
                  description="Building footprints from a GeoTIFF: POST it to /detect, get the buildings table "
                              "(Open Buildings schema, EPSG:4326) as GeoJSON or GeoParquet.")
    metrics = ServiceMetrics(pool.status)
    app.state.pool, app.state.limits, app.state.metrics = pool, limits, metrics
    app.add_middleware(BodyLimit, max_mb=limits.max_upload_mb, seconds=limits.upload_seconds)
    app.add_middleware(MetricsMiddleware, metrics=metrics,  # outermost: it sees BodyLimit's refusals too
                       endpoints={"/detect", "/health", "/model", "/metrics", "/docs", "/openapi.json"},
                       prefixes=("/viewer",) if viewer is not None else ())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": one_line(err.errors())}, status_code=422)

    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.get("/health", response_model=Health, responses=problem(503),
             summary="Whether the workers have loaded the model (503 until one has)")
    async def health() -> JSONResponse:
        status = pool.status()
        ready = status["idle"] + status["busy"]
        state: Literal["ok", "starting", "degraded"]
        state = "ok" if ready >= limits.max_concurrent else ("degraded" if ready else "starting")
        body = Health(status=state, model_loaded=ready > 0, **status)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get("/model", response_model=ModelInfo, summary="The model bundle's metadata")
    async def model() -> ModelInfo:
        return info

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics: requests, errors by cause, "
             "latency, km² and buildings processed, confidence, workers",
             responses={200: {"content": {METRICS_TYPE: {"schema": {"type": "string"}}}}})
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=METRICS_TYPE)

    async def detect_upload(file: UploadFile, scene: Path, fmt: OutputFormat) -> Path:
        """Save, check and detect one upload; the result file, beside the scene. Errors become HTTP errors."""
        try:
            await run_in_threadpool(save_upload, file, scene)
            await run_in_threadpool(check_upload, cfg, scene, bundle, limits.max_pixels)
            with pool.admit() as ticket:
                return await pool.detect(ticket, Job(str(scene), str(scene.parent), fmt.value), limits.max_seconds)
        except InputError as err:  # the server's folder is no business of the client's
            raise InputError(str(err).replace(f"{scene.parent}/", "")) from None
        except (PoolBusy, NoWorker) as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "10"}) from None
        except DetectionTimeout as err:
            raise HTTPException(504, str(err)) from None
        except WorkerFailed as err:
            raise HTTPException(500, str(err)) from None

    @app.post(
        "/detect", response_class=GeoJSONResponse, summary="Find the buildings in a GeoTIFF",
        description="Returns the buildings table (EPSG:4326): GeoJSON by default, GeoParquet with "
                    f"`?format=parquet` or `Accept: {PARQUET}`. Limits: `serve.max_upload_mb` (413), "
                    "`serve.max_megapixels` at the model's resolution (413), `serve.max_seconds` (504), "
                    "`serve.max_concurrent` + `serve.max_queued` (503).",
        responses={200: {"model": FeatureCollection, "description": "the buildings",
                         "content": {PARQUET: {"schema": {"type": "string", "format": "binary"}}}},
                   **problem(413, 415, 422, 503, 504)},
    )
    async def detect_buildings(
        request: Request,
        file: Annotated[UploadFile, File(description="the scene: a georeferenced GeoTIFF (or COG) with the "
                                                     "model's bands")],
        fmt: Annotated[OutputFormat | None, Query(alias="format", description="geojson (default) or parquet")] = None,
    ) -> FileResponse:
        fmt = choose_format(fmt, request.headers.get("accept", ""))
        name = safe_name(file.filename)
        job_dir = Path(tempfile.mkdtemp(prefix="openfootprints-job-"))
        try:
            result = await detect_upload(file, job_dir / name, fmt)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        stem = Path(name).stem
        summary = json.loads((job_dir / SUMMARY).read_text())
        await run_in_threadpool(record_detection, metrics, summary, job_dir / "buildings.parquet")
        warning = summary.get("warning")
        headers = {WARNING_HEADER: warning.encode("latin-1", "replace").decode("latin-1")} if warning else None
        if fmt is OutputFormat.parquet:
            return FileResponse(result, media_type=PARQUET, filename=f"{stem}_buildings.parquet", headers=headers,
                                background=BackgroundTask(shutil.rmtree, job_dir, ignore_errors=True))
        return FileResponse(result, media_type=GEOJSON, filename=f"{stem}_buildings.geojson", headers=headers,
                            background=BackgroundTask(shutil.rmtree, job_dir, ignore_errors=True))

    if viewer is not None:
        app.mount("/viewer", viewer, name="viewer")
    return app


def record_detection(metrics: ServiceMetrics, summary: dict, table: Path) -> None:
    """Count one detection's km² and the confidence of its buildings (``table``: the job's GeoParquet)."""
    import pyarrow.parquet as pq

    confidence = pq.read_table(table, columns=["confidence"]).column("confidence").to_numpy()
    metrics.record_detection(float(summary.get("area_km2") or 0.0), confidence,
                             drifted=bool((summary.get("drift") or {}).get("major")))


def save_upload(upload: UploadFile, path: Path) -> None:
    """Copy the uploaded file (spooled by the multipart parser) to ``path``."""
    upload.file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
