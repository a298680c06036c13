"""Bad input never ends in a traceback or a partial output.

Fuzzed readers: ``detect``, ``train`` and ``evaluate`` get truncated, bit-flipped and mislabelled GeoTIFFs, GeoJSON
and GeoParquet files; each run either succeeds with a whole, readable output (a flipped bit can leave a file valid)
or exits 2 with one line ``openfootprints: error: …`` and leaves nothing behind. A full disk: ``detect``, ``train``
and ``scale`` run in a child process under a file-size limit, so that a write fails midway; each ends with one
clean line and no partial output, and ``scale`` run again resumes to the buildings of an uninterrupted run.
"""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from openfootprints.cli import main
from openfootprints.export.buildings import COLUMNS
from openfootprints.io.provenance import config_path_beside
from openfootprints.model.bundle import load_bundle
from openfootprints.synth.scene import SceneSpec, write_scene

FUZZ = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: each example runs a command
                suppress_health_check=[HealthCheck.function_scoped_fixture])
FAST = ["tracking.energy=false"]
DETECT = ["--quiet", "detect.engine=torch", *FAST]
# one step of a small network from scratch (a bundle of 1.4 MB)
TRAIN = ["train.max_epochs=1", "data.samples_per_epoch=2", "train.batch_size=2", "data.chip_px=64", "data.block_m=16",
         "data.val_chips=1", "model.encoder=mobilenetv3_small_050", "model.pretrained=false",
         "model.decoder_channels=[16,16,8,8,8]", *FAST]
# as tests/test_scale.py: exact arithmetic (torch, batch 1), small windows, cells of zoom 19 (about 60 m)
SCALE = ["detect.engine=torch", "detect.batch_size=1", "detect.threshold=0.45", "detect.window_px=64",
         "detect.halo_m=8", "detect.max_building_m=40", "scale.zoom=19", *FAST]
FORMATS = {"scene.tif": "GeoTIFF", "labels.geojson": "GeoJSON", "labels.parquet": "GeoParquet",
           "predicted.parquet": "GeoParquet"}
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d [\w.]+: ")  # what logging writes on stderr (cli.main's format)
# What GDAL writes straight to the stderr file descriptor on some damaged TIFFs, bypassing Python: its default error
# handler where rasterio has none installed (threads and calls outside a rasterio.Env: "Warning 1: …"), and libtiff's
# own ("_tiffSeekProc: …"). C libraries' lines, never a traceback; see docs/reliability.md.
GDAL_LINE = re.compile(r"^(Warning \d+: |ERROR \d+: |(_tiff|TIFF)\w*: )")


class Files(dict):
    """File name → bytes, with a short repr (hypothesis prints the arguments of a failing example)."""

    def __repr__(self) -> str:
        return f"Files({sorted(self)})"


# ---------------------------------------------------------------------------------------------------------------------
# Files, whole and damaged


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of each input file, whole: a scene of 128 × 128 px (one detection window of the tiny bundle), its
    labels as GeoJSON and GeoParquet (UTM), and detected buildings as GeoParquet (EPSG:4326, with confidence).
    ``wrong-crs:NAME`` is the same file labelled EPSG:4326 while its coordinates are metres; ``other:KIND`` is a file
    of another kind."""
    folder = tmp_path_factory.mktemp("originals")
    image, labels = folder / "scene.tif", folder / "labels.geojson"
    write_scene(SceneSpec(width=128, height=128, seed=5), image, labels)
    truth = gpd.read_file(labels)
    files = Files({"scene.tif": image.read_bytes(), "labels.geojson": labels.read_bytes()})
    truth.to_parquet(folder / "labels.parquet")
    files["labels.parquet"] = (folder / "labels.parquet").read_bytes()
    predicted = truth.assign(confidence=0.9).to_crs("EPSG:4326")
    predicted.to_parquet(folder / "predicted.parquet")
    files["predicted.parquet"] = (folder / "predicted.parquet").read_bytes()

    (folder / "wrong.tif").write_bytes(files["scene.tif"])
    with rasterio.open(folder / "wrong.tif", "r+") as dst:
        dst.crs = "EPSG:4326"
    files["wrong-crs:scene.tif"] = (folder / "wrong.tif").read_bytes()
    geojson = json.loads(files["labels.geojson"])
    geojson.pop("crs")  # GeoJSON without a crs member is EPSG:4326: the metres are read as degrees
    files["wrong-crs:labels.geojson"] = json.dumps(geojson).encode()
    truth.set_crs("EPSG:4326", allow_override=True).to_parquet(folder / "wrong.parquet")
    files["wrong-crs:labels.parquet"] = files["wrong-crs:predicted.parquet"] = (folder / "wrong.parquet").read_bytes()

    files["other:GeoTIFF"] = files["scene.tif"]
    files["other:GeoJSON"] = files["labels.geojson"]
    files["other:GeoParquet"] = files["predicted.parquet"]
    files["other:empty"] = b""
    files["other:text"] = b"building,height\n1,3.5\n"
    return files


@st.composite
def damages(draw, name: str) -> tuple[str, str, object]:
    """How to damage the file ``name``: (name, "truncated", fraction kept), (name, "bit-flipped", (region,
    [(offset, bit), …])) or (name, "mislabelled", key of :func:`originals` to put under that name)."""
    how = draw(st.sampled_from(["truncated", "bit-flipped", "mislabelled"]))
    if how == "truncated":
        return name, how, draw(st.floats(0, 1, exclude_max=True))
    if how == "bit-flipped":  # the header and footer hold what readers parse first (TIFF IFD, Parquet footer)
        region = draw(st.sampled_from(["head", "anywhere", "tail"]))
        return name, how, (region, draw(st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 7)),
                                                 min_size=1, max_size=8)))
    kinds = [f"other:{k}" for k in ("GeoTIFF", "GeoJSON", "GeoParquet", "empty", "text") if k != FORMATS[name]]
    return name, how, draw(st.sampled_from([f"wrong-crs:{name}", *kinds]))


def write_damaged(folder: Path, damage: tuple[str, str, object], originals: dict[str, bytes]) -> Path:
    """Write the damaged file into ``folder`` under its name; returns its path."""
    name, how, arg = damage
    data = originals[name]
    if how == "truncated":
        data = data[: int(len(data) * arg)]
    elif how == "bit-flipped":
        region, flips = arg
        data = bytearray(data)
        span = len(data) if region == "anywhere" else min(len(data), 1024)
        for offset, bit in flips:
            at = offset % span
            data[len(data) - 1 - at if region == "tail" else at] ^= 1 << bit
        data = bytes(data)
    else:
        data = originals[arg]
    (folder / name).write_bytes(data)
    return folder / name


def undamaged(folder: Path, name: str, originals: dict[str, bytes]) -> Path:
    (folder / name).write_bytes(originals[name])
    return folder / name


def new_folder(tmp_path: Path) -> Path:
    """A folder of its own for one example (hypothesis runs many in one test)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def cli(capfd, *argv) -> tuple[int, str, str]:
    """Run ``openfootprints ARGV`` in this process as a user would see it: (exit status, stdout, stderr), with the
    Python warnings that Python's default filters would print on stderr written there (pytest records them instead),
    and what C libraries write straight to the file descriptors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # Python's defaults, not pytest's
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    printed = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    return code, out, printed + err


def staging_left(folder: Path) -> list[Path]:
    """Hidden staging folders (``.NAME.*``) left anywhere under ``folder`` (MLflow's own ``.trash`` aside)."""
    return [p for p in folder.rglob(".*") if "mlruns" not in p.relative_to(folder).parts]


def assert_whole_or_clean(code: int, err: str, outputs: list[Path], folder: Path, check_output) -> None:
    """Either exit 0 with every output there, whole (``check_output()`` reads them), or exit 2 with one line on
    stderr, ``openfootprints: error: …``, and none of them there; never a traceback, never a staging folder left."""
    event(f"exit {code}")  # pytest --hypothesis-show-statistics: how many damaged files were still valid
    assert "Traceback" not in err, err
    if code == 0:
        assert all(p.exists() for p in outputs), err
        check_output()
    else:
        lines = [line for line in err.strip().splitlines() if not GDAL_LINE.match(line)]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("openfootprints: error: "), (code, err)
        assert not [p for p in outputs if p.exists()]
    assert not staging_left(folder)


# ---------------------------------------------------------------------------------------------------------------------
# Fuzzed readers


@FUZZ
@given(damage=damages("scene.tif"))
def test_detect_on_a_damaged_geotiff_is_whole_or_one_clean_line(capfd, tmp_path, originals, tiny_bundle, damage):
    folder = new_folder(tmp_path)
    scene = write_damaged(folder, damage, originals)
    out = folder / "buildings.parquet"
    code, stdout, err = cli(capfd, "detect", scene, "--model", tiny_bundle, "--out", out, *DETECT)

    def whole():
        table = gpd.read_parquet(out)
        assert list(table.columns) == COLUMNS and len(table) == json.loads(stdout)["buildings"]

    assert_whole_or_clean(code, err, [out, config_path_beside(out)], folder, whole)


@pytest.mark.slow
@FUZZ
@given(damage=st.sampled_from(["scene.tif", "labels.geojson", "labels.parquet"]).flatmap(damages))
def test_train_on_damaged_imagery_or_labels_is_whole_or_one_clean_line(capfd, tmp_path, originals, damage):
    folder = new_folder(tmp_path)
    damaged = write_damaged(folder, damage, originals)
    image = damaged if damage[0] == "scene.tif" else undamaged(folder, "scene.tif", originals)
    labels = undamaged(folder, "labels.geojson", originals) if damage[0] == "scene.tif" else damaged
    out = folder / "model.ofp"
    code, _, err = cli(capfd, "train", "--image", image, "--labels", labels, "--out", out, *TRAIN,
                       f"tracking.uri=file:{folder / 'mlruns'}")

    def whole():
        assert load_bundle(out).training["steps"] == 1

    assert_whole_or_clean(code, err, [out, config_path_beside(out)], folder, whole)


@FUZZ
@given(damage=st.sampled_from(["predicted.parquet", "labels.geojson"]).flatmap(damages))
def test_evaluate_on_damaged_tables_is_whole_or_one_clean_line(capfd, tmp_path, originals, damage):
    folder = new_folder(tmp_path)
    damaged = write_damaged(folder, damage, originals)
    predicted = damaged if damage[0] == "predicted.parquet" else undamaged(folder, "predicted.parquet", originals)
    truth = damaged if damage[0] == "labels.geojson" else undamaged(folder, "labels.geojson", originals)
    out = folder / "metrics.json"
    code, _, err = cli(capfd, "evaluate", predicted, truth, "--json", out)

    def whole():
        assert 0 <= json.loads(out.read_text())["f1"] <= 1

    assert_whole_or_clean(code, err, [out], folder, whole)


@pytest.mark.parametrize("name, kind", [("scene.tif", "wrong-crs:scene.tif"),
                                        ("labels.geojson", "wrong-crs:labels.geojson"),
                                        ("predicted.parquet", "wrong-crs:predicted.parquet"),
                                        ("labels.geojson", "other:GeoParquet")])
def test_mislabelled_files_are_named_or_read_for_what_they_are(capfd, tmp_path, originals, tiny_bundle, name, kind):
    """Metres labelled as degrees are refused, naming the file (they used to end in a traceback deep in the
    pipeline); a GeoParquet file named .geojson is read as GeoParquet."""
    damaged = write_damaged(tmp_path, (name, "mislabelled", kind), originals)
    out = tmp_path / "out.json"
    if name == "scene.tif":
        argv = ["detect", damaged, "--model", tiny_bundle, "--out", tmp_path / "b.parquet", *DETECT]
    elif name == "labels.geojson":
        argv = ["evaluate", undamaged(tmp_path, "predicted.parquet", originals), damaged, "--json", out]
    else:
        argv = ["evaluate", damaged, undamaged(tmp_path, "labels.geojson", originals), "--json", out]
    code, _, err = cli(capfd, *argv)
    if kind.startswith("other:"):
        assert code == 0 and json.loads(out.read_text())["n_true"] > 0
    else:
        assert code == 2 and err.count("\n") == 1 and f"{damaged}: " in err and "not on the globe" in err


def test_a_geotiff_cut_after_its_header_is_one_clean_line_not_a_python_warning(capfd, tmp_path, originals,
                                                                                tiny_bundle):
    scene = write_damaged(tmp_path, ("scene.tif", "truncated", 300 / len(originals["scene.tif"])), originals)
    code, _, err = cli(capfd, "detect", scene, "--model", tiny_bundle, "--out", tmp_path / "b.parquet", *DETECT)
    assert code == 2 and err.count("\n") == 1 and f"{scene}: the raster has no CRS" in err  # GDAL read no GeoKeys


def test_a_csv_table_that_is_not_csv_is_one_clean_line(capfd, tmp_path, originals):
    truth = undamaged(tmp_path, "labels.geojson", originals)
    for content, message in [(originals["scene.tif"], "not a readable CSV table"), (b"", "not a readable CSV table"),
                             (b"geometry\nPOLYGON ((0 0, 1\n", "not WKT"),
                             (b"geometry\n\"POLYGON ((654749 740816, 654742 740818, 654738 740803, 654749 740816))\"\n",
                              "not on the globe")]:
        (tmp_path / "p.csv").write_bytes(content)
        code, _, err = cli(capfd, "evaluate", tmp_path / "p.csv", truth, "--json", tmp_path / "m.json")
        assert code == 2 and err.count("\n") == 1 and message in err and not (tmp_path / "m.json").exists()


def test_unclosed_rings_are_one_clean_line_not_a_python_warning(capfd, tmp_path, originals):
    geojson = json.loads(originals["labels.geojson"])
    geojson["features"][0]["geometry"]["coordinates"][0].pop()  # the ring no longer ends where it starts
    (tmp_path / "t.geojson").write_text(json.dumps(geojson))
    predicted = undamaged(tmp_path, "predicted.parquet", originals)
    code, _, err = cli(capfd, "evaluate", predicted, tmp_path / "t.geojson", "--json", tmp_path / "m.json")
    assert code == 2 and err.count("\n") == 1 and "do not form a closed linestring" in err


# ---------------------------------------------------------------------------------------------------------------------
# A full disk: a child process whose files cannot grow past a limit (EFBIG, as ENOSPC for a full disk)


def start_with_file_size_limit(argv: list, limit: int, log: Path) -> subprocess.Popen:
    """Start ``openfootprints ARGV`` in a child process that cannot write files larger than ``limit`` bytes: the write
    that would cross it fails with EFBIG (SIGXFSZ, which would kill the process, is ignored). Its stdout and stderr
    go to ``log``.out and ``log``.err (files, not pipes: children run side by side)."""

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        return subprocess.Popen([sys.executable, "-m", "openfootprints.cli", *map(str, argv)],
                                preexec_fn=limit_file_size, stdout=out, stderr=err)


@pytest.fixture(scope="module")
def full_disk(tiny_scene, tiny_bundle, tmp_path_factory) -> dict:
    """``detect``, ``train`` and ``scale``, each in a child process whose file-size limit makes a write fail midway,
    run side by side (each child spends most of its time importing PyTorch). For each: (exit status, stderr, the
    output, the limit); for scale also the uninterrupted run to compare with."""
    root = tmp_path_factory.mktemp("full-disk")
    scene, labels = tiny_scene
    jobs, children = {}, {}  # name: (argv, limit, output); name: child process

    def start(name: str, argv: list, limit: int, out: Path) -> None:
        (out if name == "scale" else out.parent).mkdir()
        jobs[name] = argv, limit, out
        children[name] = start_with_file_size_limit(argv, limit, root / name)

    try:
        detect = [*DETECT, "detect.batch_size=1", "detect.threshold=0.45"]  # the same buildings in both runs
        whole = root / "whole.geojson"
        assert main([str(a) for a in ["detect", scene, "--model", tiny_bundle, "--out", whole, *detect]]) == 0
        with rasterio.open(scene) as src:
            ring = src.width * src.height  # detect's largest working file: probabilities, 1 byte a pixel, at most
        assert whole.stat().st_size - 4096 > ring  # so the write that fails is the table's, 4 KiB before its end
        out = root / "detect" / "buildings.geojson"
        start("detect", ["detect", scene, "--model", tiny_bundle, "--out", out, *detect], whole.stat().st_size - 4096,
              out)
        out = root / "train" / "model.ofp"
        start("train", ["train", "--image", scene, "--labels", labels, "--out", out, *TRAIN,
                        f"tracking.uri=file:{root / 'train' / 'mlruns'}"], 2**19, out)

        reference = root / "uninterrupted"  # while those two start
        assert main([str(a) for a in ["scale", scene, "--model", tiny_bundle, "--out", reference, *SCALE]]) == 0
        sizes = sorted(p.stat().st_size for p in (reference / "buildings").rglob("*.parquet"))
        gap = max(range(len(sizes) - 1), key=lambda k: sizes[k + 1] - sizes[k])
        # the cells' tables on the small side of the widest gap in their sizes fit, the larger ones fail
        start("scale", ["scale", scene, "--model", tiny_bundle, "--out", root / "scale", *SCALE, "scale.retries=0"],
              (sizes[gap] + sizes[gap + 1]) // 2, root / "scale")
        codes = {name: child.wait(timeout=600) for name, child in children.items()}
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
    return {"reference": reference, **{name: (code, Path(f"{root / name}.err").read_text(), jobs[name][2],
                                              jobs[name][1]) for name, code in codes.items()}}


def assert_one_clean_line(code: int, stderr: str, message: str) -> str:
    """Exit 2, no traceback, and one error line, the last, holding ``message``; the others are log lines."""
    lines = stderr.strip().splitlines()
    assert code == 2 and "Traceback" not in stderr, stderr
    assert lines[-1].startswith("openfootprints: error: ") and message in lines[-1], stderr
    assert all(LOG_LINE.match(line) for line in lines[:-1]), stderr
    return lines[-1]


@pytest.mark.slow  # its fixture trains and runs scale in child processes beside it
def test_detect_on_a_full_disk_leaves_no_partial_table(full_disk):
    code, stderr, out, _ = full_disk["detect"]
    assert_one_clean_line(code, stderr, f"disk full or file too large while writing {out} (File too large)")
    assert list(out.parent.iterdir()) == []  # no table, no config, no staging folder


@pytest.mark.slow
def test_train_on_a_full_disk_leaves_no_partial_bundle(full_disk):
    code, stderr, out, _ = full_disk["train"]
    assert_one_clean_line(code, stderr, f"disk full or file too large while writing {out} (File too large)")
    assert sorted(p.name for p in out.parent.iterdir()) == ["mlruns"]  # no bundle, no config, no staging folder


def cell_table(out: Path) -> gpd.GeoDataFrame:
    """The partitioned dataset of a scale run as one table, in a stable order."""
    table = gpd.read_parquet(out / "buildings")
    return table.sort_values(["latitude", "longitude"]).reset_index(drop=True)


@pytest.mark.slow  # its fixture trains (as the two above)
def test_scale_on_a_full_disk_fails_cleanly_and_resumes_to_the_same_buildings(full_disk, tiny_scene, tiny_bundle):
    code, stderr, out, _ = full_disk["scale"]
    reference = full_disk["reference"]
    assert_one_clean_line(code, stderr, "cell(s) failed after 0 retries")
    first = json.loads((out / "summary.json").read_text())
    assert 0 < first["cells_done_now"] < first["cells"] and first["cells_failed"] > 0
    named = 0
    for failure in first["failures"]:  # the cell's table (or a working file), never a staging folder's name
        table = out / "buildings" / f"cell={failure['quadkey']}" / "part-0.parquet"
        assert "disk full or file too large while writing" in failure["error"] and "/." not in failure["error"]
        assert not table.exists()
        named += f"writing {table} (File too large)" in failure["error"]
    assert named  # the cells whose table is larger than the limit say so
    assert not staging_left(out)
    for part in (out / "buildings").rglob("*.parquet"):  # the cells that are there are whole
        assert len(gpd.read_parquet(part)) == len(gpd.read_parquet(reference / part.relative_to(out)))

    argv = ["scale", tiny_scene[0], "--model", tiny_bundle, "--out", out, *SCALE]
    assert main([str(a) for a in argv]) == 0  # no limit: the failed cells only
    second = json.loads((out / "summary.json").read_text())
    assert second["cells_skipped"] == first["cells_done_now"] and second["cells_done_now"] == first["cells_failed"]
    a, b = cell_table(reference), cell_table(out)
    assert len(a) > 10 and len(a) == len(b)
    assert shapely.equals_exact(a.geometry.to_numpy(), b.geometry.to_numpy(), tolerance=0).all()
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
