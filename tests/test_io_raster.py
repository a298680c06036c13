import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.windows import Window

from openfootprints.errors import InputError
from openfootprints.io.raster import open_scene
from openfootprints.io.xyz import WEB_MERCATOR_HALF


UTM_HALF_METRE = Affine(0.5, 0, 500000, 0, -0.5, 700000)


def write_tif(path, data, crs="EPSG:32630", transform=UTM_HALF_METRE, **extra):
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs=crs, transform=transform, **extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_reads_selected_bands_as_float(tmp_path):
    data = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    scene = open_scene(write_tif(tmp_path / "a.tif", data), bands=[4, 2])
    image, valid = scene.read(Window(2, 1, 4, 3))
    assert image.dtype == np.float32 and image.shape == (2, 3, 4)
    assert np.array_equal(image, data[[3, 1], 1:4, 2:6])
    assert valid.all()
    assert scene.resolution_m == pytest.approx(0.5, rel=1e-3)


def test_nodata_pixels_are_invalid(tmp_path):
    data = np.full((3, 8, 8), 50, np.uint8)
    data[:, :2] = 0
    scene = open_scene(write_tif(tmp_path / "n.tif", data, nodata=0))
    _, valid = scene.read(Window(0, 0, 8, 8))
    assert not valid[:2].any() and valid[2:].all()


def test_validity_is_only_read_where_a_mask_can_say_no(tmp_path):
    data = np.full((3, 8, 8), 50, np.uint8)
    plain = open_scene(write_tif(tmp_path / "p.tif", data))
    with rasterio.open(write_tif(tmp_path / "m.tif", data), "r+") as dst:  # an internal mask with holes
        dst.write_mask(np.pad(np.full((8, 4), 255, np.uint8), ((0, 0), (0, 4))))
    masked = open_scene(tmp_path / "m.tif")
    assert plain.all_valid and not masked.all_valid
    assert plain.read(Window(1, 1, 6, 6))[1].all()
    _, valid = masked.read(Window(1, 1, 6, 6))
    assert valid[:, :3].all() and not valid[:, 3:].any()



def test_coarse_validity_reads_a_mask_only_where_one_can_say_no(tmp_path):
    data = np.full((3, 64, 64), 50, np.uint8)
    plain = open_scene(write_tif(tmp_path / "p.tif", data))
    data[:, :, :32] = 0  # the left half is nodata
    holed = open_scene(write_tif(tmp_path / "n.tif", data, nodata=0))
    whole = Window(0, 0, 64, 64)
    assert plain.coarse_valid(whole, (8, 8)).all() and plain.coarse_valid(whole, (4, 6)).shape == (4, 6)
    coarse = holed.coarse_valid(whole, (8, 8))
    assert not coarse[:, :4].any() and coarse[:, 4:].all()

def test_alpha_band_is_a_mask_not_an_input_band(tmp_path):
    data = np.full((4, 8, 8), 90, np.uint8)
    data[3, :, :3] = 0
    path = write_tif(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    scene = open_scene(path)
    assert scene.bands == [1, 2, 3]
    _, valid = scene.read(Window(0, 0, 8, 8))
    assert not valid[:, :3].any() and valid[:, 3:].all()


def test_resamples_to_requested_ground_resolution(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 64)).astype(np.uint8)
    scene = open_scene(write_tif(tmp_path / "r.tif", data), resolution_m=1.0)
    assert (scene.width, scene.height) == (32, 32)
    assert scene.resolution_m == pytest.approx(1.0, rel=1e-3)
    image, _ = scene.read(Window(0, 0, 32, 32))
    assert image.shape == (3, 32, 32)
    assert abs(image.mean() - data.mean()) < 3


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.tif", "no such file"),
    (lambda p: (p / "text.tif").write_text("hello") and p / "text.tif", "not a readable raster"),
])
def test_unreadable_files_are_clear_errors(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        open_scene(make(tmp_path))


def test_raster_without_crs_is_an_error(tmp_path):
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                       transform=Affine(1, 0, 0, 0, -1, 8)) as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(InputError, match="no CRS"):
        open_scene(path)


def test_missing_band_is_an_error(tmp_path):
    with pytest.raises(InputError, match=r"band\(s\) \[5\]"):
        open_scene(write_tif(tmp_path / "b.tif", np.zeros((3, 8, 8), np.uint8)), bands=[1, 5])


def make_tile_folder(root, z=18, x0=1000, y0=2000):
    """Three 256 px RGB tiles of a 2×2 layout; tile (x0+1, y0+1) is missing."""
    colours = {(x0, y0): (200, 10, 10), (x0 + 1, y0): (10, 200, 10), (x0, y0 + 1): (10, 10, 200)}
    for (x, y), rgb in colours.items():
        (root / str(z) / str(x)).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (256, 256), rgb).save(root / str(z) / str(x) / f"{y}.png")
    return colours


def test_xyz_tile_folder_is_one_georeferenced_scene_with_holes_masked(tmp_path):
    make_tile_folder(tmp_path)
    scene = open_scene(tmp_path)
    assert (scene.width, scene.height) == (512, 512) and scene.crs.to_epsg() == 3857
    res = 2 * WEB_MERCATOR_HALF / (256 * 2**18)
    assert scene.transform.a == pytest.approx(res)
    assert scene.transform.c == pytest.approx(-WEB_MERCATOR_HALF + 1000 * 256 * res)
    image, valid = scene.read(Window(0, 0, 512, 512))
    assert tuple(image[:, 10, 10]) == (200, 10, 10)
    assert tuple(image[:, 10, 300]) == (10, 200, 10)
    assert tuple(image[:, 300, 10]) == (10, 10, 200)
    assert valid[:256].all() and valid[256:, :256].all() and not valid[256:, 256:].any()


def test_folder_without_tiles_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither GeoTIFFs nor an XYZ tile folder"):
        open_scene(tmp_path / "empty")
