"""The Ray engine on a local Ray instance: same buildings as the local engine, and a worker killed in the
middle of a run changes nothing in the output."""

import os
import signal
import threading
import time

import geopandas as gpd
import pytest

from openfootprints.cli import load_config
from openfootprints.scale import engine, ray_engine

from test_scale import SETTINGS, assert_same_buildings, detect_whole_scene

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def whole_run(tiny_scene, tiny_bundle, tmp_path_factory):
    return detect_whole_scene(tiny_scene[0], tiny_bundle, tmp_path_factory.mktemp("whole"))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


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
