"""A folder of GeoTIFFs opens as one scene with the same pixels as the raster it was cut from."""

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from openfootprints.errors import InputError
from openfootprints.io.raster import open_scene


def cut_into_files(scene_path, folder, skip=(), nodata=None, crs_of=None):
    """Write the four 128 px quadrants of a 256 px scene as separate GeoTIFFs (except those in ``skip``)."""
    folder.mkdir()
    with rasterio.open(scene_path) as src:
        for k, (col, row) in enumerate([(0, 0), (128, 0), (0, 128), (128, 128)]):
            if k in skip:
                continue
            window = Window(col, row, 128, 128)
            profile = dict(driver="GTiff", width=128, height=128, count=src.count, dtype=src.dtypes[0],
                           crs=crs_of(k) if crs_of else src.crs, transform=src.window_transform(window),
                           nodata=nodata)
            with rasterio.open(folder / f"part{k}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))


def test_a_folder_of_geotiffs_reads_like_the_whole_scene(tmp_path, tiny_scene):
    cut_into_files(tiny_scene[0], tmp_path / "parts")
    whole, mosaic = open_scene(tiny_scene[0]), open_scene(tmp_path / "parts")
    assert (mosaic.width, mosaic.height, mosaic.crs) == (whole.width, whole.height, whole.crs)
    assert mosaic.transform.almost_equals(whole.transform)
    window = Window(100, 90, 64, 64)  # across all four files
    a, va = whole.read(window)
    b, vb = mosaic.read(window)
    assert np.array_equal(a, b) and vb.all() and len(mosaic.bands) == len(whole.bands)


def test_gaps_between_files_and_nodata_read_as_invalid(tmp_path, tiny_scene):
    cut_into_files(tiny_scene[0], tmp_path / "parts", skip={3}, nodata=0)
    mosaic = open_scene(tmp_path / "parts")
    assert (mosaic.width, mosaic.height) == (256, 256)  # the bounding box of the three files
    _, valid = mosaic.read(Window(0, 0, 256, 256))
    assert not valid[128:, 128:].any() and valid[:128, :128].mean() > 0.9


def test_files_in_another_crs_are_refused_by_name(tmp_path, tiny_scene):
    cut_into_files(tiny_scene[0], tmp_path / "parts", crs_of=lambda k: "EPSG:32631" if k == 2 else "EPSG:32630")
    with pytest.raises(InputError, match="part2.tif: CRS"):
        open_scene(tmp_path / "parts")


def test_a_folder_without_rasters_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no imagery here")
    with pytest.raises(InputError, match="neither GeoTIFFs nor an XYZ tile folder"):
        open_scene(tmp_path / "empty")


def test_a_local_stac_item_collection_reads_as_one_mosaic(tmp_path, tiny_scene):
    import json

    cut_into_files(tiny_scene[0], tmp_path / "parts")
    items = [{"type": "Feature", "stac_version": "1.0.0", "id": f"part{k}", "properties": {},
              "assets": {"thumbnail": {"href": "nope.png", "roles": ["thumbnail"]},
                         "image": {"href": f"parts/part{k}.tif", "type": "image/tiff; application=geotiff",
                                   "roles": ["data"]}}} for k in range(4)]
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    whole, mosaic = open_scene(tiny_scene[0]), open_scene(tmp_path / "items.json")
    assert (mosaic.width, mosaic.height) == (whole.width, whole.height)
    assert np.array_equal(whole.read(Window(100, 90, 64, 64))[0], mosaic.read(Window(100, 90, 64, 64))[0])

    catalog = {"type": "Catalog", "stac_version": "1.0.0", "id": "c", "description": "",
               "links": [{"rel": "item", "href": f"item{k}.json"} for k in range(4)]}
    for k, item in enumerate(items):
        (tmp_path / f"item{k}.json").write_text(json.dumps(item))
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    assert open_scene(tmp_path / "catalog.json").width == whole.width


def test_a_stac_item_pointing_at_a_missing_file_is_named(tmp_path):
    import json

    item = {"type": "Feature", "stac_version": "1.0.0", "id": "gone", "properties": {},
            "assets": {"image": {"href": "gone.tif", "roles": ["data"]}}}
    (tmp_path / "item.json").write_text(json.dumps(item))
    with pytest.raises(InputError, match="STAC item gone: .*gone.tif does not exist"):
        open_scene(tmp_path / "item.json")


def test_a_files_empty_border_does_not_cover_its_neighbours_data(tmp_path):
    from affine import Affine

    (tmp_path / "parts").mkdir()
    for k, (x0, value) in enumerate([(0, 100), (2, 200)]):  # 4 px wide files overlapping by 2 columns
        data = np.full((1, 4, 4), value, np.uint8)
        if k == 1:
            data[:, :, :2] = 0  # the second file has no data where it overlaps the first
        with rasterio.open(tmp_path / "parts" / f"f{k}.tif", "w", driver="GTiff", width=4, height=4, count=1,
                           dtype="uint8", nodata=0, crs="EPSG:32630",
                           transform=Affine(0.5, 0, 500000 + x0 * 0.5, 0, -0.5, 700000)) as dst:
            dst.write(data)
    mosaic = open_scene(tmp_path / "parts")
    image, valid = mosaic.read(Window(0, 0, 6, 4))
    assert image[0, 0].tolist() == [100, 100, 100, 100, 200, 200] and valid.all()


def test_a_list_of_scenes_reads_as_one_mosaic_and_names_a_missing_entry(tmp_path, tiny_scene):
    cut_into_files(tiny_scene[0], tmp_path / "parts")
    listing = tmp_path / "scenes.txt"
    listing.write_text("# the four quadrants\nparts/part0.tif\nparts/part1.tif\n\n" +
                       f"{tmp_path / 'parts' / 'part2.tif'}  # absolute\nparts/part3.tif\n")
    whole, mosaic = open_scene(tiny_scene[0]), open_scene(listing)
    assert (mosaic.width, mosaic.height) == (whole.width, whole.height)
    window = Window(100, 90, 64, 64)
    assert np.array_equal(whole.read(window)[0], mosaic.read(window)[0])
    listing.write_text("parts/part0.tif\nparts/gone.tif\n")
    with pytest.raises(InputError, match=r"scenes.txt, line 2: .*gone.tif: no such file"):
        open_scene(listing)
