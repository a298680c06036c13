import numpy as np
import pytest
import shapely
from openlocationcode import openlocationcode as olc
from pyproj import Transformer

from openfootprints.export.buildings import COLUMNS, buildings_table
from openfootprints.io.geo import ground_scale


def building_of_known_size(crs: str, lon: float, lat: float, east_m: float, north_m: float) -> shapely.Polygon:
    """An axis-aligned rectangle of east_m × north_m on the ground, centred at (lon, lat), in ``crs``."""
    sx, sy = ground_scale(crs, lon, lat)
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    return shapely.box(x - east_m / 2 * sx, y - north_m / 2 * sy, x + east_m / 2 * sx, y + north_m / 2 * sy)


@pytest.mark.parametrize("crs", ["EPSG:3857", "EPSG:4326", "EPSG:32632"])
@pytest.mark.parametrize("lat", [0.5, 45.0, 60.0])
def test_area_is_on_the_ground_whatever_the_crs(crs, lat):
    poly = building_of_known_size(crs, 9.0, lat, 20.0, 10.0)
    table = buildings_table(np.array([poly]), np.array([0.9]), crs)
    assert table["area_in_meters"].iloc[0] == pytest.approx(200.0, rel=0.005)


def test_web_mercator_map_units_are_not_ground_metres():
    poly = building_of_known_size("EPSG:3857", 9.0, 60.0, 20.0, 10.0)
    assert poly.area == pytest.approx(800.0, rel=0.01)  # 1/cos(60°)² = 4× too large in map units


def test_columns_centroid_and_plus_code():
    poly = building_of_known_size("EPSG:32632", 9.00003, 45.00003, 12.0, 8.0)
    table = buildings_table(np.array([poly]), np.array([0.75]), "EPSG:32632", model_version="0.1.0", source="x.tif")
    assert list(table.columns) == COLUMNS and table.crs.to_epsg() == 4326
    row = table.iloc[0]
    assert (row.longitude, row.latitude) == pytest.approx((9.00003, 45.00003), abs=1e-6)
    area = olc.decode(row.full_plus_code)
    assert olc.isFull(row.full_plus_code)
    assert area.latitudeLo <= row.latitude <= area.latitudeHi
    assert area.longitudeLo <= row.longitude <= area.longitudeHi
    assert row.confidence == 0.75 and row.model_version == "0.1.0"


def test_small_buildings_are_dropped_by_ground_area():
    big = building_of_known_size("EPSG:3857", 9.0, 60.0, 10.0, 10.0)
    small = building_of_known_size("EPSG:3857", 9.001, 60.0, 2.0, 2.0)
    table = buildings_table(np.array([big, small]), np.array([0.9, 0.8]), "EPSG:3857", min_area_m2=5.0)
    assert len(table) == 1 and table["area_in_meters"].iloc[0] == pytest.approx(100, rel=0.01)


def test_empty_input_gives_an_empty_table_with_the_schema():
    table = buildings_table(np.array([], dtype=object), np.array([]), "EPSG:32632")
    assert len(table) == 0 and list(table.columns) == COLUMNS
