"""The map viewer: vector tiles (PMTiles), imagery tiles, the HTTP server, the command, and the page in Chromium."""

import colorsys
import gzip
import io
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import geopandas as gpd
import mapbox_vector_tile
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from PIL import Image
from pmtiles.reader import MmapSource, Reader, all_tiles
from pmtiles.tile import TileType
from pyproj import Transformer

from openfootprints.cli import main
from openfootprints.configuration import load_config
from openfootprints.export.buildings import buildings_table
from openfootprints.io.vector import read_polygons, write_table
from openfootprints.view import STATIC_DIR, create_app, prepare_viewer, running
from openfootprints.view.imagery import ImageryTiles
from openfootprints.view.tilegrid import HALF_WORLD, tile_bounds, tile_ranges, zoom_for_pixel_size
from openfootprints.view.vector_tiles import MVT_EXTENT, feature_properties, write_pmtiles

UTM = "EPSG:32630"
SLIDER_THRESHOLD = 0.65


@pytest.fixture(scope="module")
def result(tiny_scene, tmp_path_factory):
    """A buildings table over the tiny scene: its true footprints with confidences 0.305…0.995 in a fixed
    shuffled order (3 decimals, none near the slider threshold). Returns (table path, table)."""
    image, labels = tiny_scene
    truth = read_polygons(labels, crs=UTM)
    confidence = np.round(np.linspace(0.305, 0.995, len(truth)), 3)
    confidence = np.random.default_rng(7).permutation(confidence)
    assert np.abs(confidence - SLIDER_THRESHOLD).min() > 0.004
    table = buildings_table(truth.geometry.to_numpy(), confidence, UTM, model_version="test-1", source="scene.tif")
    path = tmp_path_factory.mktemp("result") / "buildings.parquet"
    write_table(table, path)
    return path, table


def view_cfg(**view):
    return load_config([f"view.{k}={v}" for k, v in view.items()])


def read_archive(path):
    """(header, {(z, x, y): decoded MVT}) of a PMTiles archive."""
    with open(path, "rb") as f:
        source = MmapSource(f)
        header = Reader(source).header()
        tiles = {zxy: mapbox_vector_tile.decode(gzip.decompress(data), default_options={"y_coord_down": True})
                 for zxy, data in all_tiles(source)}
    return header, tiles


# --- tile grid ---------------------------------------------------------------------------------------

def test_tile_grid():
    assert tile_bounds(0, 0, 0) == pytest.approx((-HALF_WORLD, -HALF_WORLD, HALF_WORLD, HALF_WORLD))
    assert tile_bounds(1, 1, 0) == pytest.approx((0, 0, HALF_WORLD, HALF_WORLD))  # north-east quarter, y down
    x0, x1, y0, y1 = tile_ranges(np.array([[-10.0, -10.0, 10.0, 10.0], [1.0, 1.0, 2.0, 2.0]]), 1)
    assert (x0.tolist(), x1.tolist(), y0.tolist(), y1.tolist()) == ([0, 1], [1, 1], [0, 0], [1, 0])
    # 0.5 m pixels at 6.7° N are 0.503 EPSG:3857 units; zoom 19 tiles have 0.299-unit pixels, zoom 18 0.597
    assert zoom_for_pixel_size(0.5034) == 19


# --- PMTiles -----------------------------------------------------------------------------------------

def squares_3857(centres, side=20.0):
    n = len(centres)
    return gpd.GeoDataFrame({"confidence": [0.9, 0.4][:n], "name": ["a", None][:n]},
                            geometry=[shapely.box(x - side / 2, y - side / 2, x + side / 2, y + side / 2)
                                      for x, y in centres], crs="EPSG:3857")


def test_pmtiles_one_square_per_tile_in_tile_coordinates(tmp_path):
    # two squares in the middle of two zoom-16 tiles far apart: one tile each at zooms 15 and 16
    a, b = tile_bounds(16, 32000, 30000), tile_bounds(16, 32200, 30000)
    centres = [((t[0] + t[2]) / 2, (t[1] + t[3]) / 2) for t in (a, b)]
    info = write_pmtiles(squares_3857(centres), tmp_path / "t.pmtiles", layer="buildings", min_zoom=15, max_zoom=16)
    header, tiles = read_archive(tmp_path / "t.pmtiles")
    assert info.tiles == len(tiles) == 4 and info.features == 2
    assert set(tiles) == {(15, 16000, 15000), (15, 16100, 15000), (16, 32000, 30000), (16, 32200, 30000)}
    assert header["tile_type"] == TileType.MVT and (header["min_zoom"], header["max_zoom"]) == (15, 16)
    for zxy, middle, tile_side in (((16, 32000, 30000), 2048, a[2] - a[0]), ((15, 16000, 15000), 1024, 2 * (a[2] - a[0]))):
        layer = tiles[zxy]["buildings"]
        assert layer["extent"] == MVT_EXTENT
        (feature,) = layer["features"]
        assert feature["id"] == 0 and feature["properties"] == {"confidence": 0.9, "name": "a"}
        ring = np.array(feature["geometry"]["coordinates"][0])
        half = 10.0 / tile_side * MVT_EXTENT  # 10 EPSG:3857 units in tile coordinates
        assert ring.min(axis=0) == pytest.approx(middle - half, abs=1)
        assert ring.max(axis=0) == pytest.approx(middle + half, abs=1)
    (other,) = tiles[(15, 16100, 15000)]["buildings"]["features"]
    assert other["id"] == 1 and other["properties"] == {"confidence": 0.4}  # the missing name is left out


def test_pmtiles_polygon_on_a_tile_corner_is_in_all_four_tiles(tmp_path):
    left, bottom, _, _ = tile_bounds(14, 8000, 7000)
    info = write_pmtiles(squares_3857([(left, bottom), (left + 5000, bottom + 5000)]), tmp_path / "c.pmtiles",
                         min_zoom=14, max_zoom=14)
    _, tiles = read_archive(tmp_path / "c.pmtiles")
    holding_first = {zxy for zxy, t in tiles.items() if 0 in [f["id"] for f in t["buildings"]["features"]]}
    assert holding_first == {(14, 7999, 7000), (14, 8000, 7000), (14, 7999, 7001), (14, 8000, 7001)}
    assert info.tiles == len(tiles)


def test_pmtiles_of_a_buildings_table(result, tmp_path):
    _, table = result
    info = write_pmtiles(table, tmp_path / "b.pmtiles", min_zoom=12, max_zoom=16)
    header, tiles = read_archive(tmp_path / "b.pmtiles")
    assert info.tiles == len(tiles) == header["addressed_tiles_count"]
    assert {z for z, _, _ in tiles} == set(range(12, 17))
    for z in range(12, 17):  # every building at every zoom, with its confidence
        found = {f["id"]: f["properties"] for (tz, _, _), t in tiles.items() if tz == z
                 for f in t["buildings"]["features"]}
        assert sorted(found) == list(range(len(table)))
        assert [found[i]["confidence"] for i in range(len(table))] == table["confidence"].tolist()
        assert found[0]["full_plus_code"] == table["full_plus_code"][0]
    w, s, e, n = table.total_bounds
    assert header["min_lon_e7"] == round(w * 1e7) and header["max_lat_e7"] == round(n * 1e7)


def test_feature_properties_are_plain_values_without_missing_ones():
    frame = gpd.GeoDataFrame({"c": np.array([0.5, np.nan]), "n": np.array([3, 4], np.int64), "s": ["x", None]},
                             geometry=[shapely.Point(0, 0)] * 2, crs="EPSG:4326")
    props = feature_properties(frame)
    assert props == [{"c": 0.5, "n": 3, "s": "x"}, {"n": 4}]
    assert type(props[1]["n"]) is int


def test_pmtiles_refuses_nothing(tmp_path):
    with pytest.raises(ValueError, match="no features"):
        write_pmtiles(squares_3857([]), tmp_path / "e.pmtiles")
    assert not (tmp_path / "e.pmtiles").exists()


# --- imagery tiles -----------------------------------------------------------------------------------

def write_marker_scene(path, dtype="uint8", value=250):
    """A 200×200 px UTM scene at 0.5 m, dark with a bright 4×4 px square centred on pixel (130, 60).
    Returns the marker's (lon, lat)."""
    transform = Affine(0.5, 0, 653000, 0, -0.5, 741000)
    data = np.full((3, 200, 200), 20, dtype)
    data[:, 58:62, 128:132] = value
    with rasterio.open(path, "w", driver="GTiff", width=200, height=200, count=3, dtype=dtype, crs=UTM,
                       transform=transform) as dst:
        dst.write(data)
    x, y = transform @ (130, 60)
    return Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(x, y)


def decode_png(data):
    return np.array(Image.open(io.BytesIO(data)))


def test_imagery_tile_puts_the_scene_where_it_is(tmp_path):
    lon, lat = write_marker_scene(tmp_path / "m.tif")
    tiles = ImageryTiles(tmp_path / "m.tif", levels=3)
    assert (tiles.min_zoom, tiles.max_zoom) == (16, 19)
    mx, my = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
    x0, _, y0, _ = tile_ranges(np.array([[mx, my, mx, my]]), 19)
    left, _, right, top = tile_bounds(19, int(x0[0]), int(y0[0]))
    rgba = decode_png(tiles.tile(19, int(x0[0]), int(y0[0])))
    assert rgba.shape == (256, 256, 4)
    rows, cols = np.nonzero(rgba[..., 0] > 150)
    px = (right - left) / 256
    found_x, found_y = left + (cols.mean() + 0.5) * px, top - (rows.mean() + 0.5) * px
    assert abs(found_x - mx) < 0.5 and abs(found_y - my) < 0.5  # EPSG:3857 units: under half a scene pixel


def test_imagery_tile_outside_the_scene_is_transparent(tmp_path):
    lon, lat = write_marker_scene(tmp_path / "m.tif")
    tiles = ImageryTiles(tmp_path / "m.tif")
    mx, my = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
    x0, _, y0, _ = tile_ranges(np.array([[mx, my, mx, my]]), 19)
    assert (decode_png(tiles.tile(19, int(x0[0]) + 5, int(y0[0])))[..., 3] == 0).all()
    edge = decode_png(tiles.tile(16, *[int(v[0]) for v in tile_ranges(np.array([[mx, my, mx, my]]), 16)[::2]]))
    assert 0 < (edge[..., 3] == 255).mean() < 0.5  # the scene covers part of a zoom-16 tile


def write_checker_scene(path, nodata=None):
    """A 300×300 px UTM scene at 0.5 m: a checkerboard of 6 px squares (40 and 200), sharp enough that any
    shift of a tile's content by a fraction of a pixel shows. With ``nodata``, its left third is ``nodata``."""
    rows, cols = np.mgrid[0:300, 0:300]
    data = np.where((rows // 6 + cols // 6) % 2, 200, 40).astype("uint8")
    if nodata is not None:
        data[:, :100] = nodata
    with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8", crs=UTM,
                       transform=Affine(0.5, 0, 653000, 0, -0.5, 741000), nodata=nodata) as dst:
        dst.write(np.stack([data] * 3))


def test_imagery_tiles_meet_without_a_step(tmp_path):
    # The 512-px tile z/x/y and the four 256-px tiles under it at zoom z + 1 share one grid of pixels: cut
    # in one piece or in four, the image must be the same, so a column doubled or lost at a seam shows. Every
    # tile of the scene is checked, those the scene's edge crosses included.
    write_checker_scene(tmp_path / "c.tif")
    small, big = ImageryTiles(tmp_path / "c.tif"), ImageryTiles(tmp_path / "c.tif", tile_px=512)
    z = small.max_zoom - 1
    assert big.max_zoom == z  # a 512-px tile at zoom z has the pixels of a 256-px one at z + 1
    x0, x1, y0, y1 = tile_ranges(np.array([small.bounds_3857]), z)
    blocks = [(x, y) for x in range(x0[0], x1[0] + 1) for y in range(y0[0], y1[0] + 1)]
    assert len(blocks) == 4
    for x, y in blocks:
        one = decode_png(big.tile(z, x, y)).astype(int)
        four = np.concatenate([np.concatenate([decode_png(small.tile(z + 1, 2 * x + i, 2 * y + j))
                                               for i in (0, 1)], axis=1) for j in (0, 1)]).astype(int)
        assert (one[..., 3] == four[..., 3]).all()
        assert 0 < (one[..., 3] == 255).mean()
        assert np.abs(one - four)[one[..., 3] == 255].max() <= 1, f"tile {z}/{x}/{y}"


def pixel_at(tiles, z, x, y):
    """RGBA of the pixel of a zoom-``z`` tile that holds the UTM point (``x``, ``y``) metres."""
    mx, my = Transformer.from_crs(UTM, "EPSG:3857", always_xy=True).transform(x, y)
    tx, _, ty, _ = (int(v[0]) for v in tile_ranges(np.array([[mx, my, mx, my]]), z))
    left, _, right, top = tile_bounds(z, tx, ty)
    px = (right - left) / tiles.tile_px
    return decode_png(tiles.tile(z, tx, ty))[int((top - my) / px), int((mx - left) / px)]


def test_imagery_nodata_is_transparent(tmp_path):
    write_checker_scene(tmp_path / "n.tif", nodata=0)  # x from 653000 to 653050 m is nodata
    tiles = ImageryTiles(tmp_path / "n.tif")
    for z in (tiles.min_zoom, tiles.max_zoom):
        assert pixel_at(tiles, z, 653025, 740925)[3] == 0
        assert pixel_at(tiles, z, 653100, 740925)[3] == 255


def test_sixteen_bit_imagery_is_stretched(tmp_path):
    write_marker_scene(tmp_path / "u16.tif", dtype="uint16", value=3000)
    tiles = ImageryTiles(tmp_path / "u16.tif", levels=0)
    x0, x1, y0, y1 = tile_ranges(np.array([tiles.bounds_3857]), tiles.max_zoom)
    values = np.concatenate([decode_png(tiles.tile(tiles.max_zoom, x, y))[..., 0][
        decode_png(tiles.tile(tiles.max_zoom, x, y))[..., 3] > 0]
        for x in range(x0[0], x1[0] + 1) for y in range(y0[0], y1[0] + 1)])
    assert values.min() == 0 and values.max() == 255


# --- server ------------------------------------------------------------------------------------------

def get(url, **headers):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return response.status, response.headers.get("content-type"), response.read()


@pytest.mark.parametrize("pmtiles_above", [1000, 0])
def test_server_endpoints(result, tiny_scene, tmp_path, pmtiles_above):
    path, table = result
    image, labels = tiny_scene
    viewer = prepare_viewer(view_cfg(pmtiles_above=pmtiles_above), path, image, labels, workdir=tmp_path)
    kind = "pmtiles" if pmtiles_above == 0 else "geojson"
    try:
        with running(create_app(viewer)) as url:
            status, kind_html, page = get(url)
            assert status == 200 and kind_html.startswith("text/html") and b'src="viewer.js"' in page
            assert get(url + "viewer.js")[0] == 200 and get(url + "viewer.css")[0] == 200
            config = json.loads(get(url + "config.json")[2])
            assert config["buildings"] == {**config["buildings"], "kind": kind, "count": len(table),
                                           "url": f"data/buildings.{kind}"}
            assert config["truth"]["count"] == len(table)
            assert config["bounds"] == pytest.approx(list(table.total_bounds))
            data = get(url + config["buildings"]["url"])[2]
            if kind == "geojson":
                features = json.loads(data)["features"]
                assert [f["id"] for f in features] == list(range(len(table)))
                assert [f["properties"]["confidence"] for f in features] == table["confidence"].tolist()
            else:  # PMTiles readers fetch byte ranges
                status, _, head = get(url + config["buildings"]["url"], Range="bytes=0-126")
                assert status == 206 and len(head) == 127 and head.startswith(b"PMTiles\x03")
            imagery = config["imagery"]
            w, s, e, n = imagery["bounds"]  # the 128 m scene, around the buildings
            assert w < table.total_bounds[0] and s < table.total_bounds[1]
            assert e > table.total_bounds[2] and n > table.total_bounds[3]
            assert e - w == pytest.approx(128 / (111320 * np.cos(np.radians(6.7))), rel=0.01)
            z = imagery["maxzoom"]
            x0, _, y0, _ = tile_ranges(np.array([viewer.imagery.bounds_3857]), z)
            status, png_type, png = get(url + f"imagery/{z}/{x0[0]}/{y0[0]}.png")
            assert status == 200 and png_type == "image/png" and decode_png(png).shape == (256, 256, 4)
            for missing in ("imagery/3/9/0.png", "data/nothing.geojson", "nothing.js"):
                with pytest.raises(urllib.error.HTTPError) as err:
                    get(url + missing)
                assert err.value.code == 404
    finally:
        viewer.close()


def test_empty_result_opens_on_the_imagery(tiny_scene, tmp_path):
    image, _ = tiny_scene
    empty = buildings_table(np.array([]), np.array([]), UTM)
    write_table(empty, tmp_path / "none.geojson")
    viewer = prepare_viewer(view_cfg(pmtiles_above=0), tmp_path / "none.geojson", image)
    try:
        assert viewer.buildings.kind == "geojson" and viewer.buildings.count == 0
        assert viewer.bounds == viewer.imagery.bounds
    finally:
        viewer.close()
    assert not viewer.buildings.path.exists()  # its temporary folder is gone


# --- the command -------------------------------------------------------------------------------------

def run_view(capsys, *argv):
    code = main(["view", *map(str, argv), "--no-browser"])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, message):
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("openfootprints: error: ") and message in lines[0]


def test_view_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["view", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--imagery" in out and "--no-browser" in out and "key=value" in out


def test_view_missing_result(capsys, tmp_path):
    code, _, err = run_view(capsys, tmp_path / "nope.parquet")
    assert one_line_error(code, err, "nope.parquet: no such file")


def test_view_non_vector_result(capsys, tmp_path):
    (tmp_path / "notes.geojson").write_text("these are not buildings")
    code, _, err = run_view(capsys, tmp_path / "notes.geojson")
    assert one_line_error(code, err, "notes.geojson: not a readable vector file")


def test_view_table_without_confidence(capsys, tiny_scene):
    _, labels = tiny_scene
    code, _, err = run_view(capsys, labels)
    assert one_line_error(code, err, "no 'confidence' column")


def test_view_missing_imagery(capsys, result, tmp_path):
    code, _, err = run_view(capsys, result[0], "--imagery", tmp_path / "nope.tif")
    assert one_line_error(code, err, "nope.tif: no such file")


def test_view_port_in_use(capsys, result):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        code, _, err = run_view(capsys, result[0], "--port", taken.getsockname()[1])
    assert one_line_error(code, err, "choose another --port")


def test_view_bad_zoom_config(capsys, result):
    code, _, err = run_view(capsys, result[0], "view.tiles_min_zoom=30")
    assert one_line_error(code, err, "view.tiles_min_zoom=30 must be a zoom")


def test_view_command_serves_until_interrupted(result, tiny_scene):
    image, labels = tiny_scene
    command = [sys.executable, "-m", "openfootprints.cli", "view", str(result[0]), "--imagery", str(image),
               "--truth", str(labels), "--port", "0", "--no-browser"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("viewer at http://127.0.0.1:"), process.stderr.read()
        url = line.split()[2]
        config = json.loads(get(url + "config.json")[2])
        assert config["truth"]["count"] == config["buildings"]["count"] == len(result[1])
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0 and "Traceback" not in err


# --- the page in a browser ---------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PANEL_PX = (280, 300)  # the control panel covers the top-left corner of the page


def browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    if not all((STATIC_DIR / name).is_file() for name in ("viewer.js", "viewer.css")):
        return "the viewer's JavaScript bundle is not built (make setup, with npm)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = browser_missing()
    if reason:
        if os.environ.get("OPENFOOTPRINTS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"OPENFOOTPRINTS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def clickable_building(page, table, min_confidence):
    """Row and page position of the surest building at or above ``min_confidence`` not under the panel."""
    for row in table.sort_values("confidence", ascending=False).index:
        if table.confidence[row] < min_confidence:
            break
        point = shapely.point_on_surface(table.geometry[row])
        xy = page.evaluate(f"(() => viewer.map.project([{point.x}, {point.y}]))()")
        if xy["x"] > PANEL_PX[0] or xy["y"] > PANEL_PX[1]:
            return row, xy
    raise AssertionError("no building to click outside the panel")


@pytest.mark.slow
@pytest.mark.parametrize("pmtiles_above", [1000, 0], ids=["geojson", "pmtiles"])
def test_page_shows_filters_and_explains_buildings(browser, result, tiny_scene, tmp_path, pmtiles_above):
    path, table = result
    image, labels = tiny_scene
    viewer = prepare_viewer(view_cfg(pmtiles_above=pmtiles_above), path, image, labels, workdir=tmp_path)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    errors, imagery = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("response", lambda r: imagery.append(r.status) if "/imagery/" in r.url else None)
    try:
        with running(create_app(viewer)) as url:
            page.goto(url)
            page.wait_for_function("window.viewerReady === true || window.viewerError !== undefined",
                                   timeout=30000)
            assert page.evaluate("window.viewerError") is None and not errors
            kind = page.evaluate("viewer.config.buildings.kind")
            assert kind == ("pmtiles" if pmtiles_above == 0 else "geojson")
            assert page.evaluate("viewer.renderedBuildings()") == len(table)
            truths = page.evaluate("new Set(viewer.map.queryRenderedFeatures({layers: ['truth-line']})"
                                   ".map(f => f.id)).size")
            assert truths == len(table)
            assert imagery and set(imagery) == {200}

            page.fill("#min-confidence", str(SLIDER_THRESHOLD))
            page.evaluate("viewer.idle()")
            expected = int((table.confidence >= SLIDER_THRESHOLD).sum())
            assert 0 < expected < len(table)
            assert page.evaluate("viewer.renderedBuildings()") == expected
            assert page.inner_text("#min-confidence-value") == f"{SLIDER_THRESHOLD:.2f}"

            row, xy = clickable_building(page, table, SLIDER_THRESHOLD)
            page.mouse.click(xy["x"], xy["y"])
            cell = page.locator(".maplibregl-popup-content td[data-key=confidence]")
            assert cell.inner_text(timeout=5000) == f"{table.confidence[row]:.3f}"
            plus_code = page.inner_text(".maplibregl-popup-content td[data-key=full_plus_code]")
            assert plus_code == table.full_plus_code[row]

            shot = tmp_path / f"viewer-{kind}.png"
            page.screenshot(path=shot)
            pixels = np.asarray(Image.open(shot).convert("RGB"))
            assert pixels.shape == (800, 1000, 3) and pixels.std() > 20  # imagery and buildings, not a blank page
            assert truth_pixels(pixels) > 200  # the true outlines' magenta is on screen
    finally:
        page.close()
        viewer.close()


def truth_pixels(rgb):
    """How many pixels of the map in a screenshot (h, w, 3), below the panel and its legend, have the true
    outlines' magenta (no building's colour has it)."""
    r, g, b = (rgb[PANEL_PX[1]:, :, i].astype(int) for i in range(3))
    return int(((r > 180) & (b > 180) & (g < 120)).sum())


def hsv(hex_colour):
    """(hue in degrees 0–360, saturation 0–1, value 0–1) of a #rrggbb colour."""
    h, s, v = colorsys.rgb_to_hsv(*(int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)))
    return 360 * h, s, v


@pytest.mark.slow
def test_page_true_outlines_stand_apart_and_layers_toggle(browser, result, tiny_scene, tmp_path):
    path, table = result
    image, labels = tiny_scene
    viewer = prepare_viewer(view_cfg(), path, image, labels, workdir=tmp_path)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        with running(create_app(viewer)) as url:
            page.goto(url)
            page.wait_for_function("window.viewerReady === true || window.viewerError !== undefined",
                                   timeout=30000)
            assert page.evaluate("window.viewerError") is None and not errors

            # the true outlines: dashed, over a dark casing, in a colour outside the red–yellow–green ramp
            paint = page.evaluate("""(() => {
                const m = viewer.map, ids = m.getStyle().layers.map(l => l.id);
                const ramp = m.getPaintProperty('buildings-fill', 'fill-color');
                return {ids, colour: m.getPaintProperty('truth-line', 'line-color'),
                        dashes: m.getPaintProperty('truth-line', 'line-dasharray'),
                        casing: m.getPaintProperty('truth-casing', 'line-color'),
                        ramp: ramp.filter(v => typeof v === 'string' && v.startsWith('#'))};
            })()""")
            assert paint["ids"].index("truth-casing") == paint["ids"].index("truth-line") - 1
            assert paint["ids"].index("truth-line") > paint["ids"].index("buildings-line")
            assert paint["dashes"] and hsv(paint["casing"])[2] < 0.2
            hue, saturation, _ = hsv(paint["colour"])
            apart = [abs((hue - hsv(c)[0] + 180) % 360 - 180) for c in paint["ramp"]]  # degrees round the wheel
            assert len(apart) == 4 and min(apart) > 45 and saturation > 0.6  # magenta, neither red nor green
            legend = page.inner_text("#layers")
            assert "imagery" in legend and "detected buildings" in legend and "true outlines" in legend
            swatch = page.eval_on_selector(".swatch-truth", "e => getComputedStyle(e).backgroundImage")
            assert "255, 61, 245" in swatch  # the legend draws the outlines' colour

            def drawn(layer):
                return page.evaluate(f"new Set(viewer.map.queryRenderedFeatures({{layers: ['{layer}']}})"
                                     ".map(f => f.id)).size")

            def shot():
                return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))

            # each checkbox hides and shows its layer
            assert drawn("truth-line") == len(table) and truth_pixels(shot()) > 200
            page.uncheck("#toggle-truth")
            page.evaluate("viewer.idle()")
            assert not page.evaluate("viewer.layerVisible('truth')") and drawn("truth-line") == 0
            assert truth_pixels(shot()) == 0
            page.uncheck("#toggle-buildings")
            page.evaluate("viewer.idle()")
            assert page.evaluate("viewer.renderedBuildings()") == 0
            assert page.inner_text("#counts").startswith("buildings hidden")
            imagery_only = shot()
            page.uncheck("#toggle-imagery")
            page.evaluate("viewer.idle()")
            assert page.evaluate("viewer.map.getLayoutProperty('imagery', 'visibility')") == "none"
            away = np.s_[PANEL_PX[1]:-40, PANEL_PX[0]:-100]  # the map, away from the panel and the controls
            assert shot()[away].std(axis=(0, 1)).max() < 1  # the background colour alone
            assert imagery_only[away].std(axis=(0, 1)).max() > 10
            for name in ("imagery", "buildings", "truth"):
                page.check(f"#toggle-{name}")
            page.evaluate("viewer.idle()")
            assert page.evaluate("viewer.renderedBuildings()") == len(table) and drawn("truth-line") == len(table)
            assert not errors
    finally:
        page.close()
        viewer.close()


@pytest.mark.slow
def test_page_offers_toggles_only_for_the_layers_it_has(browser, result, tmp_path):
    viewer = prepare_viewer(view_cfg(), result[0], workdir=tmp_path)  # no imagery, no truth
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    try:
        with running(create_app(viewer)) as url:
            page.goto(url)
            page.wait_for_function("window.viewerReady === true || window.viewerError !== undefined",
                                   timeout=30000)
            assert page.evaluate("window.viewerError") is None
            assert page.is_visible("#toggle-buildings")
            assert not page.is_visible("#toggle-imagery") and not page.is_visible("#toggle-truth")
            legend = page.inner_text("#layers")
            assert "detected buildings" in legend and "imagery" not in legend and "true outlines" not in legend
    finally:
        page.close()
        viewer.close()
