"""Vectorization beside prediction: the stream hands rows over in order, errors stop both sides, and the
buildings are those of prediction and vectorization run one after the other."""

import threading
import time

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from openfootprints.cli import main
from openfootprints.predict.stream import Cancelled, ProbabilityStream


def test_a_read_waits_until_its_rows_are_written(tmp_path):
    with ProbabilityStream(tmp_path / "p.u8", 5, 10, "EPSG:32630", Affine.identity()) as stream:
        got = []
        reader = threading.Thread(target=lambda: got.append(stream.read(1, Window(0, 2, 5, 4))))
        reader.start()
        stream.write(np.full((1, 3, 5), 7, np.uint8), Window(0, 0, 5, 3))
        time.sleep(0.2)
        assert not got  # rows 3–5 are not written yet
        stream.write(np.arange(35, dtype=np.uint8).reshape(1, 7, 5), Window(0, 3, 5, 7))
        reader.join(5)
        assert got[0].shape == (4, 5) and (got[0][0] == 7).all() and got[0][1, 0] == 0 and got[0][3, 4] == 14


def test_a_failure_on_either_side_stops_the_other(tmp_path):
    with ProbabilityStream(tmp_path / "p.u8", 5, 10, "EPSG:32630", Affine.identity()) as stream:
        errors = []

        def read():
            try:
                stream.read(1, Window(0, 0, 5, 10))
            except Cancelled as err:
                errors.append(err)

        reader = threading.Thread(target=read)
        reader.start()
        stream.fail(ValueError("the model broke"))
        reader.join(5)
        assert errors and isinstance(errors[0].__cause__, ValueError)
        with pytest.raises(Cancelled):
            stream.write(np.zeros((1, 1, 5), np.uint8), Window(0, 0, 5, 1))


def test_overlapped_detection_gives_the_buildings_of_the_sequential_one(capsys, tmp_path, tiny_scene, tiny_bundle):
    settings = ["--quiet", "detect.threshold=0.45", "detect.window_px=64", "detect.halo_m=8", "tracking.energy=false"]
    beside, after = tmp_path / "beside.parquet", tmp_path / "after.parquet"
    assert main(["detect", str(tiny_scene[0]), "--model", str(tiny_bundle), "--out", str(beside), *settings]) == 0
    assert main(["detect", str(tiny_scene[0]), "--model", str(tiny_bundle), "--out", str(after), *settings,
                 f"detect.probabilities={tmp_path / 'p.tif'}"]) == 0  # kept raster: one stage after the other
    a, b = gpd.read_parquet(beside), gpd.read_parquet(after)
    assert len(a) > 5 and len(a) == len(b)
    assert a.geometry.geom_equals_exact(b.geometry, tolerance=1e-9).all()
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.shape == (256, 256)


def test_a_prediction_error_is_reported_as_itself(capsys, tmp_path, tiny_bundle):
    grey = tmp_path / "grey.tif"
    with rasterio.open(grey, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32630",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 700000)) as dst:
        dst.write(np.full((1, 64, 64), 100, np.uint8))
    assert main(["detect", str(grey), "--model", str(tiny_bundle), "--out", str(tmp_path / "b.parquet"), "--quiet",
                 "data.bands=[1]"]) == 2
    err = capsys.readouterr().err
    assert "1 band(s) selected, but the model expects 3" in err and "Cancelled" not in err
    assert not (tmp_path / "b.parquet").exists()


def test_a_writer_that_ends_early_makes_reads_fail_not_wait(tmp_path):
    with ProbabilityStream(tmp_path / "p.u8", 5, 10, "EPSG:32630", Affine.identity()) as stream:
        stream.write(np.ones((1, 4, 5), np.uint8), Window(0, 0, 5, 4))
        stream.finish()
        assert (stream.read(1, Window(0, 0, 5, 4)) == 1).all()
        with pytest.raises(Cancelled, match="finished at row 4"):
            stream.read(1, Window(0, 2, 5, 4))


def test_a_ring_keeps_only_its_capacity_and_the_writer_waits_for_room(tmp_path):
    rows = np.arange(40 * 6, dtype=np.uint8).reshape(40, 6)
    with ProbabilityStream(tmp_path / "p.u8", 6, 40, "EPSG:32630", Affine.identity(), capacity_rows=10) as stream:
        done = []

        def writer():
            for r in range(0, 40, 4):  # blocks of 4 rows wrap around the 10-row ring
                stream.write(rows[r : r + 4][None], Window(0, r, 6, 4))
            done.append(True)

        thread = threading.Thread(target=writer)
        thread.start()
        got = []
        for top in range(0, 40, 5):
            got.append(stream.read(1, Window(0, top, 6, 5)))
            assert (stream.read(1, Window(2, top, 3, 5)) == rows[top : top + 5, 2:5]).all()  # a column window
            time.sleep(0.02)
            assert not done or top >= 30  # the writer cannot run more than 10 rows ahead of the released ones
            stream.release(top + 5)
        thread.join(5)
        assert done and (np.concatenate(got) == rows).all()
        assert (tmp_path / "p.u8").stat().st_size == 10 * 6  # the file never grew beyond the ring
        with pytest.raises(ValueError, match="released"):
            stream.read(1, Window(0, 0, 6, 1))


def test_a_read_that_the_ring_cannot_hold_fails_instead_of_waiting(tmp_path):
    with ProbabilityStream(tmp_path / "p.u8", 4, 40, "EPSG:32630", Affine.identity(), capacity_rows=8) as stream:
        with pytest.raises(ValueError, match="do not fit a ring of 8"):
            stream.read(1, Window(0, 0, 4, 9))
        with pytest.raises(ValueError, match="does not fit"):
            stream.write(np.zeros((1, 9, 4), np.uint8), Window(0, 0, 4, 9))


def test_detect_on_a_scene_taller_than_its_ring_gives_the_buildings_of_the_sequential_run(tmp_path, tiny_bundle,
                                                                                       monkeypatch):
    from openfootprints import pipeline
    from openfootprints.synth.scene import SceneSpec, write_scene
    from openfootprints.vectorize.polygons import rows_in_use

    scene = tmp_path / "tall.tif"
    write_scene(SceneSpec(width=128, height=1600, seed=5, building_density=3.0), scene, tmp_path / "labels.geojson")
    rings = []
    real = pipeline.ProbabilityStream
    monkeypatch.setattr(pipeline, "ProbabilityStream", lambda *a, **k: rings.append(real(*a, **k)) or rings[-1])
    settings = ["--quiet", "detect.threshold=0.45", "detect.window_px=64", "detect.halo_m=8", "tracking.energy=false",
                "detect.max_building_m=2"]
    beside, after = tmp_path / "beside.parquet", tmp_path / "after.parquet"
    assert main(["detect", str(scene), "--model", str(tiny_bundle), "--out", str(beside), *settings]) == 0
    assert rings and rings[0].capacity < 1600 and rings[0].capacity == rows_in_use(0.5, 0.5, 2) + 2 * 64
    assert main(["detect", str(scene), "--model", str(tiny_bundle), "--out", str(after), *settings,
                 f"detect.probabilities={tmp_path / 'p.tif'}"]) == 0
    a, b = gpd.read_parquet(beside), gpd.read_parquet(after)
    assert len(a) > 20 and len(a) == len(b)
    assert a.geometry.geom_equals_exact(b.geometry, tolerance=1e-9).all()
