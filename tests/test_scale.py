"""Scale: an area in quadkey cells gives the buildings of one whole-scene run, once each; runs resume."""

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely

from openfootprints.cli import main
from openfootprints.configuration import load_config
from openfootprints.pipeline import detect
from openfootprints.scale import engine
from openfootprints.scale.cells import area_of_interest, cells_covering
from openfootprints.io.raster import open_scene

# exact arithmetic (torch, batch 1) and small windows, so cells and the whole run can be compared exactly
SETTINGS = ["detect.engine=torch", "detect.batch_size=1", "detect.threshold=0.45", "detect.window_px=64",
            "detect.halo_m=8", "detect.max_building_m=40", "tracking.energy=false", "scale.zoom=19"]


def small(frame: gpd.GeoDataFrame, crs) -> gpd.GeoDataFrame:
    """Buildings up to detect.max_building_m across (the margin vectorized around each cell), sorted."""
    frame = frame.to_crs(crs)
    b = frame.geometry.bounds
    frame = frame[(b.maxx - b.minx < 40) & (b.maxy - b.miny < 40)]
    return frame.sort_values(["latitude", "longitude"]).reset_index(drop=True)


def detect_whole_scene(scene, bundle, folder) -> gpd.GeoDataFrame:
    """The buildings of one detect run over the whole scene, with the settings of the cell runs."""
    detect(load_config(SETTINGS), str(scene), str(bundle), str(folder / "whole.parquet"), progress=False)
    return gpd.read_parquet(folder / "whole.parquet")


@pytest.fixture(scope="module")
def whole_run(tiny_scene, tiny_bundle, tmp_path_factory):
    return detect_whole_scene(tiny_scene[0], tiny_bundle, tmp_path_factory.mktemp("whole"))


def assert_same_buildings(out_dir, whole, crs):
    cells = gpd.read_parquet(out_dir / "buildings")  # the partitioned dataset, read as one table
    assert "cell" in cells.columns
    a, b = small(whole, crs), small(cells.drop(columns="cell"), crs)
    assert len(a) > 10 and len(a) == len(b)  # none lost, none doubled
    assert shapely.hausdorff_distance(a.geometry.to_numpy(), b.geometry.to_numpy()).max() < 1e-6
    assert np.array_equal(a["raw_confidence"].to_numpy(), b["raw_confidence"].to_numpy())


def test_cells_tile_the_scene(tiny_scene):
    scene = open_scene(tiny_scene[0])
    area = area_of_interest(scene, None)
    cells = cells_covering(area, 19)
    assert len(cells) >= 4 and all(len(c.quadkey) == 19 for c in cells)
    union = shapely.union_all([shapely.box(*c.bbox) for c in cells])
    assert union.contains(area) and sum(shapely.box(*c.bbox).area for c in cells) == pytest.approx(union.area)


def test_cells_give_each_building_once_and_as_in_a_whole_run(tmp_path, tiny_scene, tiny_bundle, whole_run, capsys):
    out = tmp_path / "run"
    assert main(["scale", str(tiny_scene[0]), "--model", str(tiny_bundle), "--out", str(out), *SETTINGS]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cells"] >= 4 and summary["cells_done_now"] == summary["cells"] and summary["cells_failed"] == 0
    assert summary["buildings_now"] == len(gpd.read_parquet(out / "buildings"))
    assert_same_buildings(out, whole_run, open_scene(tiny_scene[0]).crs)


def test_an_interrupted_run_resumes_with_the_remaining_cells_only(tmp_path, tiny_scene, tiny_bundle, whole_run,
                                                                  monkeypatch, capsys):
    out = tmp_path / "run"
    real = engine.detect_cell
    calls = []

    def failing_for_two(cfg, scene, model, cell, *rest):
        calls.append(cell.quadkey)
        if len(set(calls)) in (2, 3):  # the 2nd and 3rd cells fail on every attempt (a crash, a lost disk)
            raise RuntimeError("worker lost")
        return real(cfg, scene, model, cell, *rest)

    monkeypatch.setattr(engine, "detect_cell", failing_for_two)
    code = main(["scale", str(tiny_scene[0]), "--model", str(tiny_bundle), "--out", str(out), *SETTINGS,
                 "scale.retries=1"])
    assert code == 2 and "2 cell(s) failed" in capsys.readouterr().err
    first = json.loads((out / "summary.json").read_text())
    assert first["cells_failed"] == 2 and all(f["attempts"] == 2 for f in first["failures"])
    failed = {f["quadkey"] for f in first["failures"]}
    assert not any(list((out / "buildings" / f"cell={q}").glob("*.parquet")) for q in failed)  # nothing partial

    monkeypatch.setattr(engine, "detect_cell", real)
    calls.clear()
    resumed = []
    monkeypatch.setattr(engine, "detect_cell", lambda *a, **k: resumed.append(a[3].quadkey) or real(*a, **k))
    assert main(["scale", str(tiny_scene[0]), "--model", str(tiny_bundle), "--out", str(out), *SETTINGS]) == 0
    assert set(resumed) == failed  # only the cells that were missing
    second = json.loads((out / "summary.json").read_text())
    assert second["cells_skipped"] == first["cells"] - 2 and second["cells_failed"] == 0
    assert_same_buildings(out, whole_run, open_scene(tiny_scene[0]).crs)


def test_a_cell_that_fails_once_is_retried(tmp_path, tiny_scene, tiny_bundle, monkeypatch):
    real, seen = engine.detect_cell, set()

    def flaky(cfg, scene, model, cell, *rest):
        if cell.quadkey not in seen:
            seen.add(cell.quadkey)
            raise OSError("transient")
        return real(cfg, scene, model, cell, *rest)

    monkeypatch.setattr(engine, "detect_cell", flaky)
    summary = engine.scale(load_config(SETTINGS + ["scale.retries=1"]), str(tiny_scene[0]), str(tiny_bundle),
                           tmp_path / "run")
    assert summary["cells_failed"] == 0 and summary["cells_done_now"] == summary["cells"] == len(seen)


def test_an_area_outside_the_imagery_is_a_clear_error(tmp_path, tiny_scene, tiny_bundle, capsys):
    assert main(["scale", str(tiny_scene[0]), "--model", str(tiny_bundle), "--out", str(tmp_path / "r"),
                 "scale.aoi=[10,10,11,11]"]) == 2
    assert "does not overlap the imagery" in capsys.readouterr().err


def test_resuming_with_another_model_is_refused(tmp_path, tiny_scene, tiny_bundle):
    from openfootprints.errors import InputError

    cfg = load_config(SETTINGS)
    cells, _ = engine.plan(cfg, str(tiny_scene[0]), str(tiny_bundle), tmp_path)
    assert (tmp_path / "manifest.json").exists() and cells
    other = tmp_path / "other.ofp"
    other.write_bytes(tiny_bundle.read_bytes() + b"\0")
    with pytest.raises(InputError, match="holds a run of another model or scene"):
        engine.plan(cfg, str(tiny_scene[0]), str(other), tmp_path)
    again, _ = engine.plan(load_config(SETTINGS + ["scale.aoi=" + str(list(cells[0].bbox)).replace(" ", "")]),
                           str(tiny_scene[0]), str(tiny_bundle), tmp_path)
    assert [c.quadkey for c in again] == [cells[0].quadkey]  # another area: planned again


def test_a_dataset_with_empty_cells_reads_whole_in_geopandas_pyarrow_and_duckdb(tmp_path, tiny_scene, tiny_bundle,
                                                                                 capsys):
    import duckdb
    import pyarrow.dataset as ds

    out = tmp_path / "run"
    # a minimum area that only some cells' largest buildings pass: empty cells beside full ones
    assert main(["scale", str(tiny_scene[0]), "--model", str(tiny_bundle), "--out", str(out), *SETTINGS,
                 "detect.min_area_m2=60"]) == 0
    counts = [len(gpd.read_parquet(p)) for p in sorted((out / "buildings").glob("cell=*/*.parquet"))]
    assert 0 in counts and max(counts) > 0
    whole = gpd.read_parquet(out / "buildings")
    assert len(whole) == sum(counts) and whole.geometry.notna().all()
    assert ds.dataset(out / "buildings", format="parquet", partitioning="hive").to_table().num_rows == sum(counts)
    with duckdb.connect() as con:
        rows = con.sql(f"SELECT count(*), sum(bbox.xmax - bbox.xmin > 0)::INT FROM read_parquet('{out}/buildings/*/*.parquet',"
                       " hive_partitioning=true)").fetchall()[0]
    assert rows == (sum(counts), sum(counts))
