"""Scale against object storage: imagery read from s3://, every output written there (a moto S3 server), the
buildings those of a local whole-scene run, runs resumed, and a missing scene a clear error."""

import json
import shutil

import geopandas as gpd
import numpy as np
import pyarrow.fs as pafs
import pytest
import rasterio.shutil
from rasterio.windows import Window

from openfootprints.cli import main
from openfootprints.configuration import load_config
from openfootprints.io.raster import open_scene
from openfootprints import pipeline
from openfootprints.scale import engine

from test_scale import SETTINGS, assert_same_buildings, detect_whole_scene

pytestmark = pytest.mark.slow  # starts an object store (moto)


@pytest.fixture(scope="module")
def whole_run(tiny_scene, tiny_bundle, tmp_path_factory):
    return detect_whole_scene(tiny_scene[0], tiny_bundle, tmp_path_factory.mktemp("whole"))


def bucket_fs(bucket: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for ``s3://NAME`` and the bucket's name."""
    return pafs.FileSystem.from_uri(bucket)


def upload(local, bucket: str, key: str) -> str:
    fs, name = bucket_fs(bucket)
    pafs.copy_files(str(local), f"{name}/{key}", destination_filesystem=fs)
    return f"{bucket}/{key}"


def keys(bucket: str, under: str) -> set[str]:
    fs, name = bucket_fs(bucket)
    infos = fs.get_file_info(pafs.FileSelector(f"{name}/{under}", recursive=True, allow_not_found=True))
    return {i.path[len(name) + 1:] for i in infos if i.type == pafs.FileType.File}


def test_imagery_is_read_from_s3_urls(s3_bucket, tiny_scene, tmp_path):
    shutil.copy(tiny_scene[0], tmp_path / "scene.tif")
    rasterio.shutil.copy(tmp_path / "scene.tif", tmp_path / "scene.vrt", driver="VRT")  # a relative source path
    url = upload(tmp_path / "scene.tif", s3_bucket, "imagery/scene.tif")
    vrt = upload(tmp_path / "scene.vrt", s3_bucket, "imagery/scene.vrt")
    local = open_scene(tiny_scene[0])
    window = Window(100, 60, 64, 32)
    for remote in (open_scene(url), open_scene(url.replace("s3://", "/vsis3/")), open_scene(vrt)):
        assert (remote.width, remote.height, remote.transform, remote.crs) == (local.width, local.height,
                                                                                local.transform, local.crs)
        assert np.array_equal(remote.read(window)[0], local.read(window)[0])


def test_scale_from_s3_to_s3_gives_the_whole_run_and_resumes(s3_bucket, tiny_scene, tiny_bundle, whole_run,
                                                             tmp_path):
    scene = upload(tiny_scene[0], s3_bucket, "scene.tif")
    out = f"{s3_bucket}/run"
    summary = engine.scale(load_config(SETTINGS), scene, str(tiny_bundle), out)
    assert summary["cells"] >= 4 and summary["cells_done_now"] == summary["cells"] and summary["cells_failed"] == 0
    assert summary["output"] == f"{out}/buildings"
    written = keys(s3_bucket, "run")
    assert {"run/manifest.json", "run/summary.json", "run/config.yaml"} <= written
    assert len([k for k in written if k.startswith("run/buildings/")]) == summary["cells"]  # nothing else there
    fs, name = bucket_fs(s3_bucket)
    with fs.open_input_stream(f"{name}/run/manifest.json") as f:
        manifest = json.loads(f.read())
    assert manifest["scene"] == scene and len(manifest["cells"]) == summary["cells"]
    with fs.open_input_stream(f"{name}/run/summary.json") as f:
        assert json.loads(f.read()) == summary
    assert len(gpd.read_parquet(f"{name}/run/buildings", filesystem=fs)) == summary["buildings_now"]
    pafs.copy_files(f"{name}/run", str(tmp_path / "run"), source_filesystem=fs)
    assert_same_buildings(tmp_path / "run", whole_run, open_scene(tiny_scene[0]).crs)

    again = engine.scale(load_config(SETTINGS), scene, str(tiny_bundle), out)
    assert again["cells_skipped"] == again["cells"] == summary["cells"] and again["cells_done_now"] == 0


def test_a_cell_that_fails_while_writing_leaves_no_object(s3_bucket, tiny_scene, tiny_bundle, monkeypatch):
    def half_written(cfg, scene, model, out, **kwargs):
        with open(out, "wb") as f:
            f.write(b"PAR1 half a table")
        raise OSError("connection reset")

    monkeypatch.setattr(pipeline, "detect", half_written)  # what each cell's detect_file runs
    scene = upload(tiny_scene[0], s3_bucket, "scene.tif")
    summary = engine.scale(load_config(SETTINGS + ["scale.retries=0"]), scene, str(tiny_bundle),
                           f"{s3_bucket}/run")
    assert summary["cells_failed"] == summary["cells"] >= 4
    assert "connection reset" in summary["failures"][0]["error"]
    assert keys(s3_bucket, "run/buildings") == set()


def test_a_missing_s3_scene_is_a_one_line_error(s3_bucket, tiny_bundle, capsys):
    missing = f"{s3_bucket}/nothing.tif"
    assert main(["scale", missing, "--model", str(tiny_bundle), "--out", f"{s3_bucket}/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and missing in err, err
    assert keys(s3_bucket, "run") == set()  # nothing written
