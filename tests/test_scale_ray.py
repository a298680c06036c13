"""The Ray engine on a local Ray instance: same buildings as the local engine, and a worker killed in the
middle of a run changes nothing in the output."""

import os
import signal
import threading
import time

import geopandas as gpd
import pytest

from openfootprints.configuration import load_config
from openfootprints.scale import engine, ray_engine

from test_scale import SETTINGS, assert_same_buildings, detect_whole_scene

pytestmark = pytest.mark.slow  # starts Ray

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def whole_run(tiny_scene, tiny_bundle, tmp_path_factory):
    return detect_whole_scene(tiny_scene[0], tiny_bundle, tmp_path_factory.mktemp("whole"))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_ray_workers_read_and_write_s3(s3_bucket, tiny_scene, tiny_bundle, tmp_path, monkeypatch):
    """One cell on Ray with the scene and the output in S3 (a moto server): the workers read and write the bucket
    themselves and give the local engine's buildings. Ray gets its own instance here, started once the bucket's
    environment is set, since workers take the environment of the Ray instance they belong to."""
    from openfootprints.io.raster import open_scene
    from openfootprints.scale.cells import area_of_interest, cells_covering

    from test_scale_cloud import bucket_fs, keys, upload

    monkeypatch.setenv("RAY_worker_niceness", "0")
    scene = upload(tiny_scene[0], s3_bucket, "scene.tif")
    cell = cells_covering(area_of_interest(open_scene(tiny_scene[0]), None), 19)[0]
    one_cell = SETTINGS + ["scale.aoi=" + str(list(cell.bbox)).replace(" ", "")]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = engine.scale(load_config(one_cell + ["scale.engine=ray"]), scene, str(tiny_bundle),
                               f"{s3_bucket}/run")
    finally:
        ray.shutdown()
    assert summary["cells"] == summary["cells_done_now"] == 1 and summary["cells_failed"] == 0
    assert keys(s3_bucket, "run/buildings") == {f"run/buildings/cell={cell.quadkey}/part-0.parquet"}
    local = engine.scale(load_config(one_cell), str(tiny_scene[0]), str(tiny_bundle), tmp_path / "local")
    fs, name = bucket_fs(s3_bucket)
    a = gpd.read_parquet(f"{name}/run/buildings", filesystem=fs).sort_values(["latitude", "longitude"])
    b = gpd.read_parquet(tmp_path / "local" / "buildings").sort_values(["latitude", "longitude"])
    assert local["buildings_now"] == summary["buildings_now"] == len(a) > 0
    assert a.drop(columns="geometry").reset_index(drop=True).equals(b.drop(columns="geometry").reset_index(drop=True))


@pytest.fixture(scope="module")
def local_ray(monkeypatch_module):
    monkeypatch_module.setenv("RAY_worker_niceness", "0")  # Ray nices workers by default: slow on a busy machine
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_and_local_engines_give_the_same_buildings(tmp_path, tiny_scene, tiny_bundle, whole_run, local_ray):
    from openfootprints.io.raster import open_scene

    summary = engine.scale(load_config(SETTINGS + ["scale.engine=ray"]), str(tiny_scene[0]), str(tiny_bundle),
                           tmp_path / "ray")
    assert summary["cells_failed"] == 0 and summary["cells_done_now"] == summary["cells"]
    local = engine.scale(load_config(SETTINGS), str(tiny_scene[0]), str(tiny_bundle), tmp_path / "local")
    assert local["buildings_now"] == summary["buildings_now"]
    assert_same_buildings(tmp_path / "ray", whole_run, open_scene(tiny_scene[0]).crs)
    a = gpd.read_parquet(tmp_path / "ray" / "buildings").sort_values(["latitude", "longitude"])
    b = gpd.read_parquet(tmp_path / "local" / "buildings").sort_values(["latitude", "longitude"])
    assert a.drop(columns="geometry").reset_index(drop=True).equals(b.drop(columns="geometry").reset_index(drop=True))


def test_a_worker_killed_mid_run_changes_nothing(tmp_path, tiny_scene, tiny_bundle, whole_run, local_ray,
                                                 monkeypatch):
    from openfootprints.io.raster import open_scene

    out = tmp_path / "ray"
    killed = []

    def kill_one_when_the_first_cell_is_done(actors):
        pids = ray.get([a.pid.remote() for a in actors])

        def killer():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not list((out / "buildings").glob("cell=*/part-0.parquet")):
                time.sleep(0.05)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

        threading.Thread(target=killer, daemon=True).start()

    real = ray_engine.run_ray
    monkeypatch.setattr(ray_engine, "run_ray", lambda *a, **k: real(*a, on_start=kill_one_when_the_first_cell_is_done))
    summary = engine.scale(load_config(SETTINGS + ["scale.engine=ray"]), str(tiny_scene[0]), str(tiny_bundle), out)
    assert killed, "the worker was not killed"
    assert summary["cells_failed"] == 0 and summary["cells_done_now"] == summary["cells"]
    assert len(gpd.read_parquet(out / "buildings")) == summary["buildings_now"]
    assert_same_buildings(out, whole_run, open_scene(tiny_scene[0]).crs)


def test_cells_whose_imagery_cannot_be_read_are_retried_reported_and_finished_by_a_rerun(
        tmp_path, tiny_scene, tiny_bundle, whole_run, local_ray):
    import rasterio
    from rasterio.windows import Window

    from openfootprints.io.mosaic import mosaic_vrt
    from openfootprints.io.raster import open_scene

    with rasterio.open(tiny_scene[0]) as src:  # the scene as two files, one of which goes missing
        halves = {tmp_path / "west.tif": Window(0, 0, 128, 256), tmp_path / "east.tif": Window(128, 0, 128, 256)}
        for path, window in halves.items():
            with rasterio.open(path, "w", **{**src.profile, "width": 128,
                                            "transform": src.window_transform(window)}) as dst:
                dst.write(src.read(window=window))
    mosaic = tmp_path / "mosaic.vrt"
    mosaic.write_text(mosaic_vrt(list(halves)))
    (tmp_path / "east.tif").rename(tmp_path / "away.tif")
    cfg = load_config(SETTINGS + ["scale.engine=ray", "scale.retries=1"])
    first = engine.scale(cfg, str(mosaic), str(tiny_bundle), tmp_path / "out")
    assert first["cells_failed"] > 0 and first["cells_done_now"] > 0
    assert all(f["attempts"] == 2 and "cannot read pixels" in f["error"] for f in first["failures"])
    (tmp_path / "away.tif").rename(tmp_path / "east.tif")
    second = engine.scale(cfg, str(mosaic), str(tiny_bundle), tmp_path / "out")
    assert second["cells_done_now"] == first["cells_failed"] and second["cells_failed"] == 0
    assert_same_buildings(tmp_path / "out", whole_run, open_scene(tiny_scene[0]).crs)
