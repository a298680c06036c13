"""The Python API: the same stages as the command line, as calls that return data."""

import json
from pathlib import Path

import geopandas as gpd
import pytest

import openfootprints as ofp
from openfootprints.errors import InputError


def test_detect_returns_the_buildings_table_and_can_write_it(tmp_path, tiny_scene, tiny_bundle):
    buildings = ofp.detect(tiny_scene[0], model=tiny_bundle, min_area_m2=1.0, config={"tracking.energy": False})
    assert isinstance(buildings, gpd.GeoDataFrame) and buildings.crs.to_epsg() == 4326
    assert {"confidence", "area_in_meters", "full_plus_code"} <= set(buildings.columns)
    out = tmp_path / "b.geojson"
    again = ofp.detect(tiny_scene[0], model=tiny_bundle, out=out, min_area_m2=1.0, config={"tracking.energy": False})
    assert out.exists() and len(again) == len(buildings)


def test_options_are_checked_as_on_the_command_line(tiny_scene, tiny_bundle):
    with pytest.raises(InputError, match="detect.tta=3"):
        ofp.detect(tiny_scene[0], model=tiny_bundle, tta=3)
    with pytest.raises(InputError, match="did you mean detect.min_area_m2"):
        ofp.detect(tiny_scene[0], model=tiny_bundle, min_area_m=3)


def test_evaluate_takes_frames_or_files(tiny_scene):
    truth = gpd.read_file(tiny_scene[1])
    scores = ofp.evaluate(truth.assign(confidence=0.9), tiny_scene[1])
    assert scores["f1"] == 1.0 and scores["n_true"] == len(truth)


def test_config_takes_dotted_keys_and_sections():
    cfg = ofp.config({"recipe": "base"}, detect={"min_area_m2": 12, "bbox": [1.0, 2.0, 3.0, 4.0]})
    assert cfg.data.target == "energy" and cfg.detect.min_area_m2 == 12 and list(cfg.detect.bbox) == [1, 2, 3, 4]


def test_load_model_reads_a_bundle(tiny_bundle):
    bundle = ofp.load_model(tiny_bundle)
    assert bundle.resolution_m == 0.5 and bundle.architecture.arch == "unet"


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError):
        ofp.no_such_thing  # noqa: B018


def test_a_detector_loaded_once_gives_what_a_path_gives_and_cleans_up(tmp_path, tiny_scene, tiny_bundle):
    options = {"min_area_m2": 1.0, "min_confidence": 0, "config": {"tracking.energy": False}}
    by_path = ofp.detect(tiny_scene[0], model=tiny_bundle, **options)
    with ofp.load_detector(tiny_bundle, engine="onnx") as detector:
        assert detector.engine.startswith("onnx (")
        own_folder = Path(detector._workdir.name)
        first = ofp.detect(tiny_scene[0], model=detector, **options)
        summary = ofp.detect_file(tiny_scene[0], tmp_path / "b.parquet", model=detector, **options)
    assert len(first) == len(by_path) == summary["buildings"] and summary["output"] == str(tmp_path / "b.parquet")
    assert summary["engine"].startswith("onnx") and summary["area_km2"] == pytest.approx(256 * 256 * 0.25 / 1e6, abs=1e-4)
    assert not own_folder.exists()  # the detector's scratch folder (an export when the cache is not writable)


def test_scale_runs_cells_and_resumes(tmp_path, tiny_scene, tiny_bundle):
    settings = {"zoom": 17}
    first = ofp.detect_at_scale(tiny_scene[0], tmp_path / "run", model=tiny_bundle, config={"tracking.energy": False},
                      **settings)
    assert first["cells"] >= 2 and first["cells_done_now"] == first["cells"] and first["cells_failed"] == 0
    again = ofp.detect_at_scale(tiny_scene[0], tmp_path / "run", model=tiny_bundle, config={"tracking.energy": False},
                      **settings)
    assert again["cells_done_now"] == 0 and again["cells_skipped"] == first["cells"]


def test_view_serves_the_map_of_a_table_or_a_geodataframe_until_closed(tiny_scene):
    import urllib.request

    frame = gpd.read_file(tiny_scene[1]).assign(confidence=0.9)
    with ofp.view_map(frame, imagery=tiny_scene[0], truth=tiny_scene[1]) as shown:
        assert shown.url.startswith("http://127.0.0.1:") and "<iframe" in shown._repr_html_()
        config = json.loads(urllib.request.urlopen(shown.url + "config.json", timeout=10).read())
        assert config["buildings"]["count"] == len(frame)
    with pytest.raises(OSError):
        urllib.request.urlopen(shown.url, timeout=2)  # stopped
