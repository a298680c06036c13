import geopandas as gpd
import numpy as np
import pytest
import shapely

from openfootprints.errors import InputError
from openfootprints.io.vector import read_polygons, read_table, write_table


def frame(geoms, crs="EPSG:32630"):
    return gpd.GeoDataFrame({"confidence": np.linspace(0.5, 0.9, len(geoms))}, geometry=geoms, crs=crs)


SQUARES = [shapely.box(500000 + 20 * i, 700000, 500010 + 20 * i, 700010) for i in range(3)]


def test_labels_in_another_crs_are_reprojected(tmp_path):
    path = tmp_path / "labels.geojson"
    frame(SQUARES).to_crs("EPSG:4326").to_file(path)
    labels = read_polygons(path, crs="EPSG:32630")
    assert labels.crs.to_epsg() == 32630
    assert labels.geometry.area.to_numpy() == pytest.approx([100.0] * 3, rel=1e-3)


def test_empty_label_file_is_an_error(tmp_path):
    path = tmp_path / "empty.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(InputError, match="no geometries"):
        read_polygons(path)


def test_invalid_polygons_are_an_error_unless_repair_is_asked(tmp_path):
    bowtie = shapely.Polygon([(500000, 700000), (500010, 700010), (500010, 700000), (500000, 700010)])
    path = tmp_path / "bad.gpkg"
    frame([SQUARES[0], bowtie]).to_file(path)
    with pytest.raises(InputError, match=r"1 invalid polygon\(s\), first at row 1"):
        read_polygons(path)
    fixed = read_polygons(path, fix_invalid=True)
    assert fixed.geometry.is_valid.all() and len(fixed) == 3  # the bow-tie becomes two triangles


def test_labels_outside_the_imagery_are_an_error(tmp_path):
    path = tmp_path / "far.gpkg"
    frame(SQUARES).to_file(path)
    with pytest.raises(InputError, match="no polygon overlaps the imagery"):
        read_polygons(path, bounds=(0, 0, 10, 10))


def test_points_are_not_footprints(tmp_path):
    path = tmp_path / "points.geojson"
    gpd.GeoDataFrame(geometry=[shapely.Point(1, 2)], crs="EPSG:4326").to_file(path)
    with pytest.raises(InputError, match="expected polygons"):
        read_polygons(path)


@pytest.mark.parametrize("suffix", [".parquet", ".geojson", ".fgb", ".gpkg", ".csv"])
def test_tables_round_trip_in_every_format(tmp_path, suffix):
    table = frame(SQUARES).to_crs("EPSG:4326")
    path = write_table(table, tmp_path / f"out{suffix}")
    back = read_table(path).sort_values("confidence")  # FlatGeobuf's spatial index reorders rows
    assert len(back) == 3 and back.crs.to_epsg() == 4326
    assert back["confidence"].to_numpy() == pytest.approx(table["confidence"].to_numpy())
    assert shapely.equals_exact(back.geometry.to_numpy(), table.geometry.to_numpy(), tolerance=1e-7).all()


def test_unknown_format_leaves_no_file(tmp_path):
    with pytest.raises(InputError, match="unknown output format"):
        write_table(frame(SQUARES), tmp_path / "out.xyz")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gpd.GeoDataFrame, "to_parquet", boom)
    with pytest.raises(RuntimeError):
        write_table(frame(SQUARES), tmp_path / "out.parquet")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".parquet", ".geojson"])
def test_parts_are_joined_into_one_table(tmp_path, suffix):
    from openfootprints.io.vector import write_geoparquet, write_table_parts

    table = frame(SQUARES).to_crs("EPSG:4326")
    parts = []
    for i in range(3):
        parts.append(tmp_path / f"part{i}.parquet")
        write_geoparquet(table.iloc[i : i + 1], parts[-1])
    out = write_table_parts(parts, tmp_path / f"all{suffix}", empty=table)
    back = read_table(out).sort_values("confidence")
    assert len(back) == 3 and back.crs.to_epsg() == 4326
    assert shapely.equals_exact(back.geometry.to_numpy(), table.geometry.to_numpy(), tolerance=1e-7).all()
    empty = read_table(write_table_parts([], tmp_path / f"none{suffix}", empty=table))
    assert len(empty) == 0


@pytest.mark.parametrize("feature_ids", [False, True])
def test_geojson_features_are_numbered_on_request(tmp_path, feature_ids):
    import json

    frame = gpd.GeoDataFrame({"confidence": [0.9, 0.4]}, geometry=[shapely.box(0, 0, 1e-4, 1e-4),
                                                                   shapely.box(1e-3, 0, 1.1e-3, 1e-4)], crs=4326)
    path = write_table(frame, tmp_path / "b.geojson", feature_ids=feature_ids)
    features = json.loads(path.read_text())["features"]
    assert [f["properties"]["confidence"] for f in features] == [0.9, 0.4]
    assert [f.get("id") for f in features] == ([0, 1] if feature_ids else [None, None])


def test_a_scale_run_folder_reads_as_one_table(tmp_path):
    for k, cell in enumerate(("120", "121")):
        part = tmp_path / "run" / "buildings" / f"cell={cell}"
        part.mkdir(parents=True)
        frame = gpd.GeoDataFrame({"confidence": [0.5 + k / 10]}, geometry=[shapely.box(k, 0, k + 0.001, 0.001)],
                                 crs="EPSG:4326")
        frame.to_parquet(part / "part-0.parquet")
    (tmp_path / "run" / "manifest.json").write_text("{}")
    for path in (tmp_path / "run", tmp_path / "run" / "buildings"):  # the run's folder, or its dataset
        table = read_table(path)
        assert len(table) == 2 and table.crs.to_epsg() == 4326 and sorted(table["confidence"]) == [0.5, 0.6]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without GeoParquet files"):
        read_table(tmp_path / "empty")
