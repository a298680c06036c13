"""The DVC pipeline of the base model (pipeline/dvc.yaml), run on a tiny synthetic copy of the open data's layout:
every stage runs, and a changed detection parameter re-runs detection and scoring, not training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from openfootprints.synth.scene import SceneSpec, write_scene

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"
pytestmark = pytest.mark.slow  # trains a model, through DVC
TINY = ("data.chip_px=64 data.block_m=32 train.batch_size=4 data.samples_per_epoch=8 train.max_epochs=1 "
        "tracking.energy=false model.decoder_channels=[16,16,8,8,8] data.resolution_m=0.5")


def synthetic_places(root: Path) -> None:
    """The folders dvc.yaml reads, with small synthetic scenes: a GeoTIFF for Banepa, folders for the others."""
    (root / "banepa").mkdir(parents=True)
    write_scene(SceneSpec(width=192, height=192, seed=1), root / "banepa" / "banepa_oam.tif",
                root / "banepa" / "labels.geojson")
    for seed, place in enumerate(["banepa_np", "zanzibar_tz", "catanduanes_ph", "nairobi_ke"], start=2):
        (root / place).mkdir()
        write_scene(SceneSpec(width=192, height=192, seed=seed), root / place / "scene.tif",
                    root / place / "labels.geojson")


def dvc(folder: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_repro_runs_every_stage_and_a_detect_parameter_does_not_retrain(tmp_path):
    synthetic_places(tmp_path / "data")
    work = tmp_path / "repo" / "pipeline"
    work.mkdir(parents=True)
    shutil.copy(PIPELINE / "dvc.yaml", work / "dvc.yaml")
    params = yaml.safe_load((PIPELINE / "params.yaml").read_text())
    params.update(data=str(tmp_path / "data"), out="../out", held_out=["nairobi_ke"],
                  train={"minutes": 1, "overrides": TINY})
    (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    dvc(tmp_path / "repo", "init", "--no-scm")
    first = dvc(work, "repro")
    out = tmp_path / "repo" / "out"
    for name in ("model.ofp", "nairobi_ke.parquet", "nairobi_ke.metrics.json", "model.onnx", "model.stac.json"):
        assert (out / name).exists(), first
    assert "f1" in json.loads((out / "nairobi_ke.metrics.json").read_text())
    model_time = (out / "model.ofp").stat().st_mtime_ns

    params["detect"]["min_area_m2"] = 50.0
    (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    second = dvc(work, "repro")
    assert "Stage 'train' didn't change, skipping" in second
    assert "Running stage 'detect@nairobi_ke'" in second  # (scoring re-runs only if the detections changed)
    assert "Running stage 'train'" not in second and (out / "model.ofp").stat().st_mtime_ns == model_time
    assert "Data and pipelines are up to date" in dvc(work, "status")
