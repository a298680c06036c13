"""synth → a few training steps → detect → evaluate, through the command line, on a tiny scene."""

import json

import geopandas as gpd
import mlflow
import pytest
import rasterio

from openfootprints.cli import main
from openfootprints.export.buildings import COLUMNS
from openfootprints.model.bundle import load_bundle

pytestmark = pytest.mark.slow  # trains a model


def test_synth_train_detect_evaluate(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fast = ["train.max_epochs=2", "data.samples_per_epoch=8", "train.batch_size=4", "data.chip_px=128",
            "data.block_m=64", "data.val_chips=2", "model.decoder_channels=[16,16,8,8,8]",
            f"tracking.uri=file:{tmp_path / 'mlruns'}"]
    assert main(["synth", "train.tif", "synth.width=384", "synth.height=384", "synth.seed=1"]) == 0
    assert main(["synth", "test.tif", "synth.width=256", "synth.height=256", "synth.seed=2",
                 "synth.crs=EPSG:3857"]) == 0
    assert main(["train", "--image", "train.tif", "--labels", "train.geojson", "--out", "model.ofp", *fast]) == 0

    bundle = load_bundle("model.ofp")
    assert bundle.training["steps"] == 4 and bundle.resolution_m == pytest.approx(0.5, rel=1e-3)
    assert bundle.label_erosion_m == pytest.approx(1.0) and len(bundle.data_fingerprint) == 16
    assert (tmp_path / "model.ofp.config.yaml").exists()
    run = mlflow.MlflowClient(f"file:{tmp_path / 'mlruns'}").get_run(bundle.training["mlflow_run_id"])
    assert run.data.params["train.batch_size"] == "4" and "val_pixel_iou" in run.data.metrics
    assert run.data.metrics["energy_kwh"] > 0 and bundle.training["energy_kwh"] > 0  # CodeCarbon, offline
    artifacts = {a.path for a in mlflow.MlflowClient(f"file:{tmp_path / 'mlruns'}").list_artifacts(run.info.run_id)}
    assert {"model.ofp", "model.ofp.config.yaml"} <= artifacts

    assert main(["detect", "test.tif", "--model", "model.ofp", "--out", "buildings.geojson", "--quiet",
                 "detect.probabilities=prob.tif"]) == 0
    summary = json.loads(capsys.readouterr().out.split("wrote model bundle model.ofp\n")[-1])
    table = gpd.read_file("buildings.geojson")
    assert set(table.columns) == set(COLUMNS) and table.crs.to_epsg() == 4326
    assert summary["buildings"] == len(table)
    assert summary["energy_kwh"] > 0 and summary["emissions_kg_co2e"] > 0 and summary["energy_country"] == "USA"
    assert (tmp_path / "buildings.geojson.config.yaml").exists()
    with rasterio.open(tmp_path / "prob.tif") as prob:  # a cloud-optimized GeoTIFF aligned with the scene
        assert prob.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert prob.crs.to_epsg() == 3857 and prob.dtypes[0] == "uint8"
        assert prob.scales == (pytest.approx(1 / 255),) and prob.descriptions == ("building probability",)

    assert main(["evaluate", "buildings.geojson", "test.geojson", "--json", "metrics.json"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_predicted"] == len(table) and metrics["n_true"] > 10
    assert 0.0 <= metrics["f1"] <= 1.0
