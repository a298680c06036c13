"""Every line of README's Python example runs, on synthetic scenes named as README names them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import shapely

from openfootprints.model.bundle import load_bundle
from openfootprints.synth.scene import SceneSpec, write_scene

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.slow  # fine-tunes a model


def readme_example() -> str:
    """The README's Python block that uses the library (``import openfootprints as ofp``)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (example,) = [b for b in blocks if "import openfootprints as ofp" in b]
    return example


def test_the_readme_example_runs(tmp_path, tiny_bundle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_scene(SceneSpec(width=640, height=640, seed=5), tmp_path / "scene.tif", tmp_path / "truth.geojson")
    write_scene(SceneSpec(width=640, height=640, seed=6), tmp_path / "new.tif", tmp_path / "few.geojson")
    with rasterio.open(tmp_path / "new.tif") as src:
        left, bottom, right, top = src.bounds
        area = gpd.GeoDataFrame(geometry=[shapely.box(left, bottom, (left + right) / 2, top)], crs=src.crs)
    area.to_file(tmp_path / "area.geojson")
    shutil.copy(tiny_bundle, tmp_path / "model.ofp")
    code = readme_example()
    assert "max_minutes=5" in code
    namespace: dict = {}
    exec(compile(code.replace("max_minutes=5", "max_minutes=0.3"), "README.md", "exec"), namespace)  # a short run
    assert len(namespace["buildings"]) > 0 and namespace["buildings"].crs.to_epsg() == 4326
    assert 0 <= namespace["scores"]["f1"] <= 1
    assert Path(namespace["new"]).exists() and len(namespace["chips"]) == 10
    assert [r["output"] for r in namespace["runs"]] == ["scene.tif.parquet", "new.tif.parquet"]
    assert all(Path(r["output"]).exists() for r in namespace["runs"])
    assert namespace["runs"][0]["buildings"] == len(gpd.read_parquet("scene.tif.parquet"))
    assert load_bundle(namespace["trained"]).training["steps"] > 0
    assert namespace["cfg"].train.max_minutes == 30 and namespace["cfg"].data.target == "energy"  # recipe=base
