"""The viewer's HTTP server: the page, its JavaScript bundle, the buildings, the truth and the imagery tiles.

:func:`prepare_viewer` turns the files into what the page loads (GeoJSON for small tables, a PMTiles archive
of vector tiles above ``view.pmtiles_above`` rows, imagery tiles read on demand); :func:`create_app` makes
the FastAPI application, which another application can mount under any prefix (every URL the page uses is
relative to it); :func:`serve` runs it until Ctrl-C and :func:`running` runs it in a thread.

Routes: ``/`` the page, ``/viewer.js`` and ``/viewer.css``, ``/config.json`` what the page shows,
``/data/<name>`` the vector files (byte ranges served, as PMTiles readers need), ``/imagery/{z}/{x}/{y}.png``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import geopandas as gpd
import uvicorn
from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from omegaconf import DictConfig

from openfootprints.errors import InputError
from openfootprints.io.vector import read_polygons, read_table, write_table
from openfootprints.view.imagery import ImageryTiles
from openfootprints.view.vector_tiles import write_pmtiles

STATIC_DIR = Path(__file__).parent / "static"
BUNDLE = ("viewer.js", "viewer.css")  # built from web/ by `make setup` (npm); index.html is in the repository
MEDIA_TYPES = {".geojson": "application/geo+json", ".pmtiles": "application/vnd.pmtiles"}
WORLD = (-180.0, -85.0, 180.0, 85.0)

log = logging.getLogger(__name__)


@dataclass
class VectorLayer:
    """One table as the page loads it: ``kind`` "geojson" or "pmtiles", written at ``path``."""

    kind: str
    path: Path
    count: int
    layer: str
    min_zoom: int = 0
    max_zoom: int = 0

    def page_config(self) -> dict:
        entry = {"kind": self.kind, "url": f"data/{self.path.name}", "count": self.count, "layer": self.layer}
        if self.kind == "pmtiles":
            entry.update(minzoom=self.min_zoom, maxzoom=self.max_zoom)
        return entry


@dataclass
class Viewer:
    """Everything the server serves. ``bounds`` (w, s, e, n) in degrees is where the map opens."""

    title: str
    bounds: tuple[float, float, float, float]
    buildings: VectorLayer
    truth: VectorLayer | None = None
    imagery: ImageryTiles | None = None
    workdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def files(self) -> dict[str, Path]:
        layers = [self.buildings] + ([self.truth] if self.truth else [])
        return {layer.path.name: layer.path for layer in layers}

    def page_config(self) -> dict:
        imagery = None
        if self.imagery is not None:
            imagery = {"tiles": "imagery/{z}/{x}/{y}.png", "tile_px": self.imagery.tile_px,
                       "minzoom": self.imagery.min_zoom, "maxzoom": self.imagery.max_zoom,
                       "bounds": list(self.imagery.bounds)}
        return {"title": self.title, "bounds": list(self.bounds), "buildings": self.buildings.page_config(),
                "truth": self.truth.page_config() if self.truth else None, "imagery": imagery}

    def close(self) -> None:
        if self.imagery is not None:
            self.imagery.close()
        if self.workdir is not None:
            self.workdir.cleanup()


def check_bundle() -> None:
    """Refuse to start without the built JavaScript bundle (it is built at setup, not kept in git)."""
    missing = [name for name in BUNDLE if not (STATIC_DIR / name).is_file()]
    if missing:
        raise InputError(f"{STATIC_DIR / missing[0]}: the viewer's JavaScript bundle is not built; run `make setup` "
                         "(needs Node.js and npm) or `cd web && npm ci --ignore-scripts && npm run build`")


def prepare_viewer(cfg: DictConfig, result: str | os.PathLike, imagery: str | os.PathLike | None = None,
                   truth: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None) -> Viewer:
    """Read the buildings table (and truth, imagery) and write what the page loads into ``workdir``
    (default: a temporary folder that :meth:`Viewer.close` removes). Settings: ``cfg.view``."""
    check_bundle()
    buildings = read_buildings(result, cfg.data.fix_invalid)
    truth_frame = None
    if truth is not None:
        truth_frame = read_polygons(truth, crs="EPSG:4326", fix_invalid=cfg.data.fix_invalid, allow_empty=True)
        truth_frame = truth_frame[[truth_frame.geometry.name]]
    tiles = ImageryTiles(imagery, cfg.data.bands, cfg.view.imagery_zoom_levels) if imagery is not None else None
    owned = None
    if workdir is None:
        owned = tempfile.TemporaryDirectory(prefix="openfootprints-view-")
        workdir = owned.name
    folder = Path(workdir)
    try:
        viewer = Viewer(
            title=Path(result).name,
            bounds=open_bounds(buildings, truth_frame, tiles),
            buildings=vector_layer(buildings, folder, "buildings", cfg.view),
            truth=vector_layer(truth_frame, folder, "truth", cfg.view) if truth_frame is not None else None,
            imagery=tiles, workdir=owned)
    except BaseException:
        if owned:
            owned.cleanup()
        raise
    log.info("viewer: %d buildings as %s%s", viewer.buildings.count, viewer.buildings.kind,
             f", {viewer.truth.count} truths as {viewer.truth.kind}" if viewer.truth else "")
    return viewer


def read_buildings(path: str | os.PathLike, fix_invalid: bool = False) -> gpd.GeoDataFrame:
    """A buildings table in EPSG:4326, rows numbered from 0; it must have a ``confidence`` column (unless empty)."""
    frame = read_table(path, fix_invalid=fix_invalid)
    if len(frame) and "confidence" not in frame.columns:
        raise InputError(f"{path}: no 'confidence' column; expected a buildings table written by detect")
    if frame.crs is not None and not frame.crs.equals("EPSG:4326"):
        frame = frame.to_crs("EPSG:4326")
    return frame.reset_index(drop=True)


def open_bounds(buildings: gpd.GeoDataFrame, truth: gpd.GeoDataFrame | None,
                imagery: ImageryTiles | None) -> tuple[float, float, float, float]:
    """Where the map opens: the buildings, else the truth, else the imagery, else the world; (w, s, e, n) degrees."""
    for frame in (buildings, truth):
        if frame is not None and len(frame):
            west, south, east, north = frame.total_bounds
            return float(west), float(south), float(east), float(north)
    return imagery.bounds if imagery is not None else WORLD


def vector_layer(frame: gpd.GeoDataFrame, folder: Path, name: str, view: DictConfig) -> VectorLayer:
    """Write ``frame`` for the page: GeoJSON up to ``view.pmtiles_above`` rows, a PMTiles archive above."""
    if len(frame) > view.pmtiles_above:
        tileset = write_pmtiles(frame, folder / f"{name}.pmtiles", name, view.tiles_min_zoom, view.tiles_max_zoom)
        return VectorLayer("pmtiles", tileset.path, len(frame), name, tileset.min_zoom, tileset.max_zoom)
    geojson = write_table(frame, folder / f"{name}.geojson", feature_ids=True)  # the map's feature state needs ids
    return VectorLayer("geojson", geojson, len(frame), name)


def create_app(viewer: Viewer) -> FastAPI:
    """The viewer as a FastAPI application (mountable: ``app.mount("/viewer", create_app(viewer))``)."""
    app = FastAPI(title="openfootprints viewer", docs_url=None, redoc_url=None, openapi_url=None)
    files = viewer.files()

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/config.json")
    def page_config() -> dict:
        return viewer.page_config()

    @app.get("/data/{name}")
    def data(name: str) -> FileResponse:
        if name not in files:
            raise HTTPException(404, f"no file {name}")
        return FileResponse(files[name], media_type=MEDIA_TYPES[files[name].suffix])

    @app.get("/imagery/{z}/{x}/{y}.png")
    def imagery_tile(z: int, x: int, y: int) -> Response:
        if viewer.imagery is None:
            raise HTTPException(404, "no imagery")
        if not (0 <= z <= 30 and 0 <= x < 2**z and 0 <= y < 2**z):
            raise HTTPException(404, f"no tile {z}/{x}/{y}")
        return Response(viewer.imagery.tile(z, x, y), media_type="image/png")

    app.mount("/", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0 = any free port), or a clear error when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except (OSError, OverflowError) as err:  # OverflowError: a port outside 0–65535
        reason = err.strerror if isinstance(err, OSError) else None
        raise InputError(f"cannot listen on {host}:{port} ({reason or err}); choose another --port") from err


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True) -> None:
    """Serve ``app`` until Ctrl-C (a normal end: it returns), printing its address (and opening it in a browser)."""
    sock = bind(host, port)
    url = url_of(sock)
    print(f"viewer at {url} (Ctrl-C stops it)", flush=True)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, [url]).start()
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then raises the signal again
        pass
    finally:
        sock.close()


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``app`` in a background thread for the duration of the block; yields its URL."""
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the viewer server did not start")
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
