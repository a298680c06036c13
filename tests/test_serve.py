"""The HTTP service: /detect against the detect command's own output, /health, /model, /metrics, every limit, bad uploads,
and a bounded schemathesis run over the OpenAPI document."""

from __future__ import annotations

import io
import tempfile
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import schemathesis
from schemathesis import GenerationMode
import torch
from affine import Affine
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.staticfiles import StaticFiles

from openfootprints.cli import main
from openfootprints.configuration import load_config
from openfootprints.errors import InputError
from openfootprints.export.buildings import COLUMNS
from openfootprints.pipeline import detect
from openfootprints.serve import create_app
from openfootprints.serve.app import PARQUET

PROPERTIES = [c for c in COLUMNS if c != "geometry"]
SETTINGS = ["detect.threshold=0.45", "tracking.energy=false"]  # the untrained tiny model finds buildings at 0.45


def service_config(*overrides: str):
    return load_config([*SETTINGS, *overrides])


def upload(path: Path, name: str | None = None) -> dict:
    return {"file": (name or path.name, path.read_bytes(), "image/tiff")}


def write_raster(path: Path, count: int = 3, dtype: str = "uint8", crs: str | None = "EPSG:32630") -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=count, dtype=dtype, crs=crs,
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 700000)) as dst:
        dst.write(np.full((count, 64, 64), 100, dtype))
    return path


@pytest.fixture(scope="module")
def client(tiny_bundle):
    """The service with one worker and room for one request in the queue, started (workers up) and stopped."""
    app = create_app(service_config("serve.max_concurrent=1", "serve.max_queued=1"), tiny_bundle)
    with TestClient(app) as c:
        yield c


@pytest.fixture()
def unstarted(tiny_bundle):
    """A service without its workers (no lifespan): everything refused before detection can be tested on it."""
    def make(*overrides: str, model=tiny_bundle) -> TestClient:
        return TestClient(create_app(service_config(*overrides), model))
    return make


@pytest.fixture(scope="module")
def geojson(client, tiny_scene) -> dict:
    response = client.post("/detect", files=upload(tiny_scene[0]))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/geo+json"
    return response.json()


def test_health_says_the_model_is_loaded(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model_loaded": True, "workers": 1, "idle": 1, "busy": 0, "queued": 0}


def test_model_describes_the_bundle(client):
    info = client.get("/model").json()
    assert info["bands"] == [1, 2, 3] and info["resolution_m"] == 0.5 and info["window"] == 128
    assert info["threshold"] == 0.45  # the service's detect.threshold, not the bundle's 0.5
    assert info["min_confidence"] == 0.0  # the tiny bundle has no confidence cut
    assert info["dtype"] == "" and info["calibrated"] is False and info["data_fingerprint"] == ""
    assert info["architecture"]["encoder"] == "efficientnet_lite0" and info["training"] == {}


def test_detect_returns_what_the_detect_command_writes(geojson, tiny_scene, tiny_bundle, tmp_path):
    assert geojson["type"] == "FeatureCollection" and len(geojson["features"]) > 0
    assert all(list(f["properties"]) == PROPERTIES for f in geojson["features"])
    assert {f["properties"]["source"] for f in geojson["features"]} == {"scene.tif"}
    served = gpd.GeoDataFrame.from_features(geojson["features"], crs="EPSG:4326")
    detect(service_config(), str(tiny_scene[0]), str(tiny_bundle), str(tmp_path / "b.parquet"), progress=False)
    written = gpd.read_parquet(tmp_path / "b.parquet")
    assert len(served) == len(written)
    assert np.allclose(np.sort(served.area_in_meters), np.sort(written.area_in_meters))
    assert np.allclose(np.sort(served.confidence), np.sort(written.confidence))


@pytest.mark.parametrize("how", [{"params": {"format": "parquet"}}, {"headers": {"Accept": PARQUET}}])
def test_detect_returns_geoparquet_when_asked(client, tiny_scene, geojson, how):
    response = client.post("/detect", files=upload(tiny_scene[0]), **how)
    assert response.status_code == 200 and response.headers["content-type"] == PARQUET
    table = gpd.read_parquet(io.BytesIO(response.content))
    assert table.crs.to_epsg() == 4326 and list(table.columns) == COLUMNS
    assert len(table) == len(geojson["features"])


def test_concurrent_requests_wait_their_turn_and_get_the_same_answer(client, tiny_scene):
    responses = [None, None]

    def post(k):
        responses[k] = client.post("/detect", files=upload(tiny_scene[0]))

    threads = [threading.Thread(target=post, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in responses] == [200, 200]  # one ran, the other queued (max_queued=1)
    assert responses[0].json() == responses[1].json()


def test_a_full_queue_is_503(client, tiny_scene):
    pool = client.app.state.pool
    with pool.admit(), pool.admit():  # one running and one queued: capacity 1 + 1
        response = client.post("/detect", files=upload(tiny_scene[0]))
        assert client.get("/health").json()["queued"] == 2
    assert response.status_code == 503 and response.headers["retry-after"]
    assert "serve.max_concurrent" in response.json()["detail"]


def test_non_raster_upload_is_415(client):
    response = client.post("/detect", files={"file": ("notes.txt", b"not an image", "text/plain")})
    assert response.status_code == 415
    assert response.json()["detail"] == "notes.txt: not a GeoTIFF (GDAL cannot read it as one); upload a GeoTIFF or COG"


def test_raster_without_crs_is_422(client, tmp_path):
    response = client.post("/detect", files=upload(write_raster(tmp_path / "nocrs.tif", crs=None)))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("nocrs.tif: the raster has no CRS") and tempfile.gettempdir() not in detail


def test_wrong_band_count_is_422(client, tmp_path):
    response = client.post("/detect", files=upload(write_raster(tmp_path / "two.tif", count=2)))
    assert response.status_code == 422
    assert response.json()["detail"].startswith("two.tif: 2 band(s), but band(s) [3] are asked for (bands [1, 2, 3]")


def test_unreadable_pixels_found_by_the_worker_are_422(client, tmp_path):
    whole = write_raster(tmp_path / "whole.tif").read_bytes()
    response = client.post("/detect", files={"file": ("cut.tif", whole[: len(whole) // 2], "image/tiff")})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("cut.tif: cannot read pixels")


def test_unknown_format_and_missing_file_are_one_line_422(client, tiny_scene):
    response = client.post("/detect", params={"format": "xml"}, files=upload(tiny_scene[0]))
    assert response.status_code == 422
    assert response.json()["detail"] == "query.format: Input should be 'geojson' or 'parquet'"
    assert client.post("/detect").json()["detail"] == "body.file: Field required"


def test_wrong_pixel_type_is_422(unstarted, tiny_bundle, tmp_path):
    payload = torch.load(tiny_bundle, weights_only=True)
    payload["dtype"] = "uint8"
    torch.save(payload, tmp_path / "u8.ofp")
    response = unstarted(model=tmp_path / "u8.ofp").post(
        "/detect", files=upload(write_raster(tmp_path / "u16.tif", dtype="uint16")))
    assert response.status_code == 422
    assert response.json()["detail"].startswith("u16.tif: uint16 pixels, but the model was trained on uint8")


def test_upload_over_the_size_limit_is_413(unstarted, tiny_scene):
    client = unstarted("serve.max_upload_mb=0.01")
    message = "upload larger than serve.max_upload_mb=0.01 MiB; send a smaller scene"
    response = client.post("/detect", files=upload(tiny_scene[0]))  # refused by its Content-Length
    assert response.status_code == 413 and response.json()["detail"] == message
    body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.tif\"\r\n\r\n" \
           + tiny_scene[0].read_bytes() + b"\r\n--b--\r\n"
    chunks = (body[k : k + 4096] for k in range(0, len(body), 4096))  # no Content-Length: counted as it streams
    response = client.post("/detect", content=chunks, headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and response.json()["detail"] == message


def test_an_upload_slower_than_its_time_limit_is_408():
    import anyio

    from openfootprints.serve.app import BodyLimit

    async def app(scope, receive, send):  # reads the whole body, then answers 200
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def answer(seconds_per_chunk: float) -> list[dict]:
        sent, chunks = [], iter([b"a" * 100] * 4)

        async def receive():
            await anyio.sleep(seconds_per_chunk)
            body = next(chunks, b"")
            return {"type": "http.request", "body": body, "more_body": bool(body)}

        async def send(message):
            sent.append(message)

        await BodyLimit(app, max_mb=1, seconds=0.3)({"type": "http", "headers": []}, receive, send)
        return sent

    slow, fast = anyio.run(answer, 0.2), anyio.run(answer, 0.0)
    assert slow[0]["status"] == 408 and b"serve.upload_seconds=0.3 s" in slow[1]["body"]
    assert fast[0]["status"] == 200


def test_scene_over_the_pixel_limit_is_413(unstarted, tiny_scene):
    response = unstarted("serve.max_megapixels=0.05").post("/detect", files=upload(tiny_scene[0]))
    assert response.status_code == 413
    assert response.json()["detail"] == ("scene.tif: 256 × 256 px at the model's 0.5 m is over "
                                         "serve.max_megapixels=0.05; send a smaller area")


def test_requests_before_the_workers_are_up_are_503(unstarted, tiny_scene):
    client = unstarted()
    assert client.get("/health").status_code == 503
    assert client.get("/health").json()["status"] == "starting"
    response = client.post("/detect", files=upload(tiny_scene[0]))
    assert response.status_code == 503 and "no detection worker is running" in response.json()["detail"]


def test_detection_over_the_time_limit_is_504_and_its_worker_replaced(tiny_bundle, tiny_scene):
    app = create_app(service_config("serve.max_seconds=0.001"), tiny_bundle)
    jobs_before = set(Path(tempfile.gettempdir()).glob("openfootprints-job-*"))
    with TestClient(app) as client:
        first = app.state.pool.status()
        response = client.post("/detect", files=upload(tiny_scene[0]))
        assert response.status_code == 504
        assert response.json()["detail"] == ("detection took longer than serve.max_seconds=0.001 s and was stopped; "
                                             "send a smaller scene")
        deadline = time.monotonic() + 120
        while client.get("/health").status_code != 200:  # the replacement loads the model
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.2)
        assert first["workers"] == app.state.pool.status()["workers"] == 1
    assert set(Path(tempfile.gettempdir()).glob("openfootprints-job-*")) <= jobs_before  # the job's folder is gone


def test_a_worker_that_died_is_replaced_before_the_next_job(client, tiny_scene, geojson):
    pool = client.app.state.pool
    worker = next(iter(pool._workers))
    worker.process.kill()  # as the out-of-memory killer would
    worker.process.join()
    response = client.post("/detect", files=upload(tiny_scene[0]))
    assert response.status_code == 200 and response.json() == geojson
    assert pool.status()["workers"] == 1 and worker not in pool._workers


def test_openapi_documents_the_formats_and_refusals(client):
    doc = client.get("/openapi.json").json()
    responses = doc["paths"]["/detect"]["post"]["responses"]
    assert set(responses["200"]["content"]) == {"application/geo+json", PARQUET}
    assert {"413", "415", "422", "503", "504"} <= set(responses)
    assert {"/health", "/model"} <= set(doc["paths"])


def test_viewer_is_mounted_when_given(tiny_bundle, tmp_path):
    (tmp_path / "index.html").write_text("<title>viewer</title>")
    client = TestClient(create_app(service_config(), tiny_bundle, viewer=StaticFiles(directory=tmp_path, html=True)))
    assert client.get("/viewer/").text == "<title>viewer</title>"


@pytest.mark.parametrize("override, message", [
    ("serve.max_concurrent=0", "serve.max_concurrent=0 must be a whole number, 1 or more"),
    ("serve.max_seconds=0", "serve.max_seconds=0 must be positive"),
    ("serve.max_queued=-1", "serve.max_queued=-1 must be a whole number, 0 or more"),
])
def test_bad_limits_are_named(override, message):
    with pytest.raises(InputError, match=message):
        load_config([override])


def test_serve_command_has_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0 and "--model" in (out := capsys.readouterr().out) and "key=value" in out


def test_serve_command_refuses_a_missing_model(capsys, tmp_path):
    assert main(["serve", "--model", str(tmp_path / "nope.ofp")]) == 2
    assert capsys.readouterr().err.strip() == f"openfootprints: error: {tmp_path / 'nope.ofp'}: no such model bundle"


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(tiny_bundle):
    """Generated requests against every operation of the OpenAPI document: none may get a 5xx."""
    app = create_app(service_config("serve.max_seconds=60"), tiny_bundle)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, statuses = [], []
    try:
        for result in schema.get_all_operations():
            operation = result.ok()

            @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                      derandomize=True)
            @given(st.one_of(*(operation.as_strategy(mode) for mode in GenerationMode)))  # fitting the schema or not
            def check(case):
                response = case.call()
                statuses.append((case.path, response.status_code))
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.path}: {response.status_code} {response.text[:200]}")

            check()
    finally:
        from schemathesis.python.asgi import shutdown_lifespans

        shutdown_lifespans()
    assert not failures, failures
    assert {path for path, _ in statuses} == {"/detect", "/health", "/metrics", "/model"}
    assert sum(path == "/detect" for path, _ in statuses) >= 30


def test_serve_mounts_the_web_map_of_a_result(tiny_bundle, tiny_scene, tmp_path):
    from openfootprints import view
    from openfootprints.export.buildings import buildings_table
    from openfootprints.io.vector import read_polygons, write_table

    if not (view.STATIC_DIR / "viewer.js").is_file():
        pytest.skip("the viewer's JavaScript bundle is not built (make setup, with npm)")
    truth = read_polygons(tiny_scene[1], crs="EPSG:32630")
    result = tmp_path / "buildings.parquet"
    write_table(buildings_table(truth.geometry.to_numpy(), np.full(len(truth), 0.8), "EPSG:32630"), result)
    viewer = view.prepare_viewer(service_config(), result, tiny_scene[0])
    try:
        client = TestClient(create_app(service_config(), tiny_bundle, viewer=view.create_app(viewer)))
        page = client.get("/viewer/")
        assert page.status_code == 200 and "viewer.js" in page.text
        assert client.get("/viewer/config.json").json()["buildings"]["count"] == len(truth)
        assert client.get("/viewer/viewer.js").status_code == 200
    finally:
        viewer.close()


def test_serve_imagery_without_a_result_to_view_is_refused(capsys, tiny_bundle, tiny_scene):
    assert main(["serve", "--model", str(tiny_bundle), "--imagery", str(tiny_scene[0])]) == 2
    assert "--imagery and --truth go with --view RESULT" in capsys.readouterr().err


def test_an_all_nodata_upload_answers_empty_with_a_warning_header(client, tmp_path):
    path = tmp_path / "empty.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32630",
                       nodata=0, transform=Affine(0.5, 0, 500000, 0, -0.5, 700000)) as dst:
        dst.write(np.zeros((3, 64, 64), np.uint8))
    response = client.post("/detect", files=upload(path))
    assert response.status_code == 200 and response.json()["features"] == []
    assert "no valid pixels" in response.headers["x-openfootprints-warning"]
    ordinary = client.post("/detect", files=upload(write_raster(tmp_path / "grey.tif")))
    assert "x-openfootprints-warning" not in ordinary.headers


# --- monitoring ------------------------------------------------------------------------------------------------

def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus' text format (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_metrics_count_requests_errors_land_buildings_and_confidence(tiny_bundle, tiny_scene, tmp_path):
    with TestClient(create_app(service_config("serve.max_concurrent=1"), tiny_bundle)) as c:
        found = c.post("/detect", files=upload(tiny_scene[0])).json()["features"]
        assert c.post("/detect", files=upload(write_raster(tmp_path / "nocrs.tif", crs=None))).status_code == 422
        assert c.get("/no/such/page").status_code == 404
        response = c.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert metric(text, "openfootprints_requests_total", endpoint="/detect", status="200") == 1
    assert metric(text, "openfootprints_requests_total", endpoint="/detect", status="422") == 1
    assert metric(text, "openfootprints_requests_total", endpoint="other", status="404") == 1
    assert metric(text, "openfootprints_request_errors_total", cause="bad_input") == 1
    assert metric(text, "openfootprints_request_errors_total", cause="not_found") == 1
    assert metric(text, "openfootprints_request_seconds_count", endpoint="/detect") == 2
    assert metric(text, "openfootprints_scenes_total") == 1  # the refused upload was not detected
    assert metric(text, "openfootprints_area_km2_total") == pytest.approx(256 * 256 * 0.5**2 / 1e6, rel=0.01)
    confidence = [f["properties"]["confidence"] for f in found]
    assert metric(text, "openfootprints_buildings_total") == len(found) > 0
    assert metric(text, "openfootprints_building_confidence_count") == len(found)
    assert metric(text, "openfootprints_building_confidence_bucket", le="0.5") == sum(v <= 0.5 for v in confidence)
    assert metric(text, "openfootprints_workers", state="idle") == 1
