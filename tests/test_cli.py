import json

import pandas as pd

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from affine import Affine

from openfootprints.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_failure(code, err, message, tmp_path, output):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("openfootprints: error: ") and message in lines[0]
    assert not output.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{output.name}")]


@pytest.mark.parametrize("command", ["synth", "train", "detect", "evaluate", "demo"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "key=value" in capsys.readouterr().out


def test_synth_writes_scene_and_labels(capsys, tmp_path):
    code, out, _ = run(capsys, "synth", tmp_path / "s.tif", "synth.width=96", "synth.height=64", "synth.crs=EPSG:3857")
    assert code == 0 and "buildings" in out
    with rasterio.open(tmp_path / "s.tif") as src:
        assert (src.width, src.height, src.crs.to_epsg()) == (96, 64, 3857)
    assert (tmp_path / "s.geojson").exists()


def test_missing_scene(capsys, tmp_path, tiny_bundle):
    out = tmp_path / "b.parquet"
    code, _, err = run(capsys, "detect", tmp_path / "nope.tif", "--model", tiny_bundle, "--out", out)
    assert_clean_failure(code, err, "nope.tif: no such file", tmp_path, out)


def test_raster_without_crs(capsys, tmp_path, tiny_bundle):
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       transform=Affine(0.5, 0, 0, 0, -0.5, 0)) as dst:
        dst.write(np.zeros((3, 64, 64), np.uint8))
    out = tmp_path / "b.parquet"
    code, _, err = run(capsys, "detect", path, "--model", tiny_bundle, "--out", out)
    assert_clean_failure(code, err, "no CRS", tmp_path, out)


def test_wrong_band_count(capsys, tmp_path, tiny_scene, tiny_bundle):
    out = tmp_path / "b.geojson"
    code, _, err = run(capsys, "detect", tiny_scene[0], "--model", tiny_bundle, "--out", out, "data.bands=[1,2]")
    assert_clean_failure(code, err, "model expects 3", tmp_path, out)


def test_incompatible_bundle(capsys, tmp_path, tiny_scene, tiny_bundle):
    payload = torch.load(tiny_bundle, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.ofp")
    out = tmp_path / "b.parquet"
    code, _, err = run(capsys, "detect", tiny_scene[0], "--model", tmp_path / "future.ofp", "--out", out)
    assert_clean_failure(code, err, "bundle format v99", tmp_path, out)


def test_empty_labels(capsys, tmp_path, tiny_scene):
    labels = tmp_path / "empty.geojson"
    labels.write_text('{"type": "FeatureCollection", "features": []}')
    out = tmp_path / "m.ofp"
    code, _, err = run(capsys, "train", "--image", tiny_scene[0], "--labels", labels, "--out", out)
    assert_clean_failure(code, err, "contains no geometries", tmp_path, out)


def test_labels_elsewhere(capsys, tmp_path, tiny_scene):
    labels = tmp_path / "far.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(10, 10, 10.001, 10.001)], crs="EPSG:4326").to_file(labels)
    out = tmp_path / "m.ofp"
    code, _, err = run(capsys, "train", "--image", tiny_scene[0], "--labels", labels, "--out", out)
    assert_clean_failure(code, err, "no polygon overlaps the imagery", tmp_path, out)


def test_invalid_label_polygons(capsys, tmp_path, tiny_scene):
    with rasterio.open(tiny_scene[0]) as src:
        x, y, crs = src.bounds.left, src.bounds.top, src.crs
    bowtie = shapely.Polygon([(x + 5, y - 5), (x + 15, y - 15), (x + 15, y - 5), (x + 5, y - 15)])
    labels = tmp_path / "bowtie.gpkg"
    gpd.GeoDataFrame(geometry=[bowtie], crs=crs).to_file(labels)
    out = tmp_path / "m.ofp"
    code, _, err = run(capsys, "train", "--image", tiny_scene[0], "--labels", labels, "--out", out)
    assert_clean_failure(code, err, "invalid polygon", tmp_path, out)


def test_bad_override(capsys, tmp_path, tiny_scene, tiny_bundle):
    out = tmp_path / "b.parquet"
    code, _, err = run(capsys, "detect", tiny_scene[0], "--model", tiny_bundle, "--out", out, "detect.nope=3")
    assert_clean_failure(code, err, "config:", tmp_path, out)


def test_evaluate_prints_and_writes_json(capsys, tmp_path, tiny_scene):
    code, out, _ = run(capsys, "evaluate", tiny_scene[1], tiny_scene[1], "--json", tmp_path / "m.json")
    assert code == 0 and "F1" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["f1"] == 1.0 and metrics["n_true"] > 0


def test_evaluate_writes_an_html_report_with_error_crops(capsys, tmp_path, tiny_scene):
    truth = gpd.read_file(tiny_scene[1])
    pred = truth.iloc[: len(truth) // 2].copy()
    pred["confidence"] = np.linspace(0.5, 0.95, len(pred))
    extra = truth.iloc[-1:].copy().assign(confidence=0.99)
    extra["geometry"] = extra.translate(30, 0)
    gpd.GeoDataFrame(pd.concat([pred, extra]), crs=truth.crs).to_crs("EPSG:4326").to_parquet(tmp_path / "p.parquet")
    code, out, _ = run(capsys, "evaluate", tmp_path / "p.parquet", tiny_scene[1], "--report", tmp_path / "report",
                       "--imagery", tiny_scene[0], "evaluate.grid_m=64")
    assert code == 0 and "ECE" in out
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("data:image/png;base64") == 3 + 1 + min(8, len(truth) - len(pred))  # figures, FP, FNs
    assert "false negatives (largest)" in page and "confidence 0.99" in page and "By region" in page
    assert "What the errors are" in page
    found = [line for line in out.splitlines() if line.startswith("false negatives:")]
    assert found and sum(int(part.split()[0]) for part in found[0].split(":")[1].split(",")) == len(truth) - len(pred)


def test_model_refuses_imagery_of_another_pixel_type(capsys, tmp_path, tiny_bundle):
    payload = torch.load(tiny_bundle, weights_only=True)
    payload["dtype"] = "uint8"
    torch.save(payload, tmp_path / "u8.ofp")
    scene = tmp_path / "u16.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint16", crs="EPSG:32630",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 700000)) as dst:
        dst.write(np.full((3, 64, 64), 3000, np.uint16))
    out = tmp_path / "b.parquet"
    code, _, err = run(capsys, "detect", scene, "--model", tmp_path / "u8.ofp", "--out", out)
    assert_clean_failure(code, err, "uint16 pixels, but the model was trained on uint8", tmp_path, out)
    code, _, _ = run(capsys, "detect", scene, "--model", tmp_path / "u8.ofp", "--out", out, "--quiet",
                     "detect.allow_other_dtype=true", "detect.engine=torch")
    assert code == 0 and out.exists()


@pytest.mark.parametrize("override, message", [
    ("detect.batch_size=0", "detect.batch_size=0 must be 1 or more"),
    ("detect.halo_m=-5", "detect.halo_m=-5 must be 0 or more"),
    ("detect.bbox=[1,2,0,3]", "must be [west, south, east, north]"),
    ("data.chip_px=100", "data.chip_px=100 must be a multiple of 32"),
    ("detect.min_area_m2=abc", "detect.min_area_m2=abc must be a number, 0 or more"),
    ("detect.bbox=[654487,740549,654999,741061]", "must be in degrees (longitude, latitude; EPSG:4326)"),
    ("data.target=mask", "data.target=mask must be eroded or energy"),
])
def test_bad_config_values_are_named(capsys, tmp_path, tiny_scene, tiny_bundle, override, message):
    out = tmp_path / "b.parquet"
    code, _, err = run(capsys, "detect", tiny_scene[0], "--model", tiny_bundle, "--out", out, override)
    assert_clean_failure(code, err, message, tmp_path, out)


def test_unwritable_output_is_one_line(capsys, tmp_path, tiny_scene):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run(capsys, "synth", blocker / "s.tif", "synth.width=32", "synth.height=32")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(blocker) in err


def test_detect_bbox_keeps_buildings_whose_centroid_is_inside(capsys, tmp_path, tiny_scene, tiny_bundle):
    with rasterio.open(tiny_scene[0]) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    west, south = to_lonlat.transform(left + 30, bottom + 30)
    east, north = to_lonlat.transform(right - 30, top - 30)
    box = f"[{west},{south},{east},{north}]"
    full, part = tmp_path / "full.parquet", tmp_path / "part.parquet"
    for out, extra in ((full, []), (part, [f"detect.bbox={box}"])):
        assert run(capsys, "detect", tiny_scene[0], "--model", tiny_bundle, "--out", out, "--quiet",
                   "detect.engine=torch", "detect.threshold=0.45", *extra)[0] == 0
    everything, inside = gpd.read_parquet(full), gpd.read_parquet(part)
    assert 0 < len(inside) < len(everything)
    c = inside.to_crs(crs).centroid.to_crs("EPSG:4326")
    assert ((c.x > west) & (c.x < east) & (c.y > south) & (c.y < north)).all()


def test_boxes_that_tile_the_scene_give_each_building_once_and_as_in_a_whole_run(capsys, tmp_path, tiny_scene,
                                                                                  tiny_bundle):
    with rasterio.open(tiny_scene[0]) as src:
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        crs = src.crs
    mid_lon, mid_lat = (west + east) / 2 + 1.3e-5, (south + north) / 2 - 0.7e-5
    boxes = [[west - 1, south - 1, mid_lon, mid_lat], [mid_lon, south - 1, east + 1, mid_lat],
             [west - 1, mid_lat, mid_lon, north + 1], [mid_lon, mid_lat, east + 1, north + 1]]
    settings = ["--quiet", "detect.engine=torch", "detect.batch_size=1", "detect.threshold=0.45",
                "detect.window_px=64", "detect.halo_m=8", "detect.max_building_m=40", "tracking.energy=false"]
    whole = tmp_path / "whole.parquet"
    assert run(capsys, "detect", tiny_scene[0], "--model", tiny_bundle, "--out", whole, *settings)[0] == 0
    parts = []
    for k, box in enumerate(boxes):
        out = tmp_path / f"part{k}.parquet"
        assert run(capsys, "detect", tiny_scene[0], "--model", tiny_bundle, "--out", out, *settings,
                   f"detect.bbox=[{','.join(map(repr, box))}]")[0] == 0
        parts.append(gpd.read_parquet(out))
    everything = gpd.read_parquet(whole).to_crs(crs)
    pieces = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs="EPSG:4326").to_crs(crs)

    def small(frame):  # the guarantee holds for buildings up to detect.max_building_m across (40 m here)
        b = frame.geometry.bounds
        frame = frame[(b.maxx - b.minx < 40) & (b.maxy - b.miny < 40)]
        return frame.sort_values(["latitude", "longitude"]).reset_index(drop=True)

    a, b = small(everything), small(pieces)
    assert len(a) > 10 and all(len(p) for p in parts)  # the split runs through the buildings' area
    assert len(a) == len(b)  # none lost or doubled
    gaps = shapely.hausdorff_distance(a.geometry.to_numpy(), b.geometry.to_numpy())
    assert gaps.max() < 1e-6  # metres: each whole, as in the whole-scene run (up to float rounding of the origin)
    assert np.array_equal(a["raw_confidence"].to_numpy(), b["raw_confidence"].to_numpy())


@pytest.mark.parametrize("argv, message", [
    (["detect", "missing.tif", "--model", "missing.ofp", "--out", "{tmp}/b.shp"], "unknown output format '.shp'"),
    (["detect", "missing.tif", "--model", "missing.ofp", "--out", "{tmp}/file/b.parquet"], "is a file, not a folder"),
    (["detect", "missing.tif", "--model", "missing.ofp", "--out", "{tmp}/b.parquet",
      "detect.probabilities={tmp}/p.png"], "unknown output format '.png'"),
    (["train", "--image", "missing.tif", "--labels", "missing.geojson", "--out", "{tmp}/file/m.ofp"],
     "is a file, not a folder"),
    (["self-train", "--teacher", "t.ofp", "--image", "missing.tif", "--labels", "missing.geojson", "--unlabelled",
      "u.tif", "--out", "{tmp}/file/m.ofp"], "is a file, not a folder"),
    (["scale", "missing.tif", "--model", "missing.ofp", "--out", "{tmp}/file"], "exists and is a file"),
    (["evaluate", "missing.parquet", "missing.geojson", "--json", "{tmp}/file/m.json"], "is a file, not a folder"),
    (["calibrate", "missing.parquet", "missing.geojson", "--model", "m.ofp", "--out", "{tmp}/file/c.ofp"],
     "is a file, not a folder"),
    (["export", "missing.ofp", "--out", "{tmp}/m.pt"], "unknown output format '.pt'"),
])
def test_outputs_are_checked_before_any_input_is_read(capsys, tmp_path, argv, message):
    (tmp_path / "file").write_text("a file, not a folder")
    code, _, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert message in err and "missing" not in err  # the output's fault is found first, no input was opened


def test_a_mistyped_key_gets_a_did_you_mean(capsys, tmp_path):
    code, _, err = run(capsys, "detect", "scene.tif", "--out", tmp_path / "b.parquet", "detect.min_area=3")
    assert code == 2 and "did you mean detect.min_area_m2?" in err


def test_a_truncated_geotiff_is_named_as_such_and_no_energy_is_reported(capsys, tmp_path, tiny_scene, tiny_bundle,
                                                                        caplog):
    cut = tmp_path / "cut.tif"
    whole = tiny_scene[0].read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "b.parquet"
    with caplog.at_level("INFO"):
        code, _, err = run(capsys, "detect", cut, "--model", tiny_bundle, "--out", out, "--quiet",
                           "detect.engine=torch")
    assert_clean_failure(code, err, "the file is truncated or damaged", tmp_path, out)
    assert "previous exception" not in err and "energy:" not in caplog.text


def test_labels_elsewhere_are_reported_with_plain_numbers(capsys, tmp_path, tiny_scene):
    far = gpd.GeoDataFrame(geometry=[shapely.box(10, 10, 10.001, 10.001)], crs="EPSG:4326")
    far.to_file(tmp_path / "far.geojson")
    code, _, err = run(capsys, "train", "--image", tiny_scene[0], "--labels", tmp_path / "far.geojson",
                       "--out", tmp_path / "m.ofp")
    assert code == 2 and "no polygon overlaps the imagery" in err and "np.float64" not in err


def test_an_all_nodata_scene_says_why_it_found_nothing(capsys, tmp_path, tiny_bundle):
    path = tmp_path / "empty.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32630",
                       nodata=0, transform=Affine(0.5, 0, 500000, 0, -0.5, 700000)) as dst:
        dst.write(np.zeros((3, 64, 64), np.uint8))
    code, out, err = run(capsys, "detect", path, "--model", tiny_bundle, "--out", tmp_path / "b.parquet", "--quiet",
                         "detect.engine=torch")
    summary = json.loads(out)
    assert code == 0 and summary["buildings"] == 0 and "no valid pixels" in summary["warning"]


def test_evaluate_refuses_an_area_without_truth_and_warns_when_nothing_overlaps(capsys, tmp_path):
    def write(name, boxes, crs="EPSG:32630"):
        gpd.GeoDataFrame({"confidence": [0.9] * len(boxes)}, geometry=[shapely.box(*b) for b in boxes],
                         crs=crs).to_file(tmp_path / name)
        return tmp_path / name

    predicted = write("p.geojson", [(500000, 700000, 500010, 700010)])
    truth = write("t.geojson", [(500000, 700000, 500010, 700010)])
    far = write("far.geojson", [(600000, 700000, 600010, 700010)])
    code, _, err = run(capsys, "evaluate", predicted, truth, "--json", tmp_path / "m.json",
                       "evaluate.bbox=[10,10,10.1,10.1]")
    assert code == 2 and "no true building in the scored area (evaluate.bbox=" in err
    assert not (tmp_path / "m.json").exists()
    code, _, _ = run(capsys, "evaluate", predicted, far, "--json", tmp_path / "m.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert code == 0 and "do not overlap at all" in metrics["warning"] and metrics["f1"] == 0
    run(capsys, "evaluate", predicted, truth, "--json", tmp_path / "m2.json")
    assert "warning" not in json.loads((tmp_path / "m2.json").read_text())
