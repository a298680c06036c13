"""Storage: a local folder or an S3 prefix (a moto server) where files appear whole or not at all."""

import pyarrow.fs as pafs
import pytest

from openfootprints.errors import InputError
from openfootprints.io.storage import Storage, is_url

pytestmark = pytest.mark.slow  # starts an object store (moto)


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Storage:
    if request.param == "local":
        return Storage(tmp_path / "run")
    return Storage(request.getfixturevalue("s3_bucket") + "/run/")


def test_files_are_written_read_listed_and_replaced(storage, tmp_path):
    assert not storage.exists("manifest.json") and storage.files("buildings") == set()
    storage.write_text("manifest.json", "{}")
    storage.write_text("manifest.json", '{"cells": []}')  # replaced
    assert storage.read_text("manifest.json") == '{"cells": []}'
    local = tmp_path / "part-0.parquet"
    local.write_bytes(b"\0" * 100)
    storage.put(local, "buildings/cell=01/part-0.parquet")
    with storage.staged("buildings/cell=02/part-0.parquet") as staged:
        assert staged.name == "part-0.parquet"  # writers that go by the name see the real one
        staged.write_bytes(b"\1")
    assert storage.files("buildings") == {"buildings/cell=01/part-0.parquet", "buildings/cell=02/part-0.parquet"}
    assert storage.exists("buildings/cell=01/part-0.parquet") and not storage.exists("buildings/cell=01")
    assert storage.uri("summary.json").endswith("run/summary.json")


def test_a_failed_write_leaves_nothing(storage):
    with pytest.raises(RuntimeError, match="disk lost"):
        with storage.staged("buildings/cell=01/part-0.parquet") as staged:
            staged.write_bytes(b"half a table")
            raise RuntimeError("disk lost")
    assert not storage.exists("buildings/cell=01/part-0.parquet")
    assert storage.files("buildings") == set()  # no staging folder left either


def test_leftover_staging_folders_are_removed(tmp_path):
    storage = Storage(tmp_path)
    (tmp_path / "buildings" / "cell=01" / ".part-0.parquet.x1y2").mkdir(parents=True)
    (tmp_path / "buildings" / "cell=01" / "part-0.parquet").write_bytes(b"\0")
    storage.remove_staging("buildings/cell=*/.*")
    assert [p.name for p in (tmp_path / "buildings" / "cell=01").iterdir()] == ["part-0.parquet"]


def test_an_object_exists_only_once_its_upload_is_closed(s3_bucket):
    """What Storage.put relies on (pyarrow's S3 output stream is a multipart upload, completed by close)."""
    fs, prefix = pafs.FileSystem.from_uri(s3_bucket)
    stream = fs.open_output_stream(f"{prefix}/a.bin")
    stream.write(b"\0" * 1000)
    assert fs.get_file_info(f"{prefix}/a.bin").type == pafs.FileType.NotFound
    stream.close()
    assert fs.get_file_info(f"{prefix}/a.bin").size == 1000


def test_urls_and_bad_locations():
    assert is_url("s3://b/k") and is_url("gs://b/k") and is_url("/vsis3/b/k") and not is_url("/data/s3/run")
    assert Storage("/vsigs/bucket/run/").root == "gs://bucket/run"
    with pytest.raises(InputError, match="ftp://host/run: not a supported output location"):
        Storage("ftp://host/run")
    with pytest.raises(InputError, match="give a bucket"):
        Storage("s3://")
