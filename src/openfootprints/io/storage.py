"""A folder of outputs, on local disk or in object storage (``s3://``, ``gs://``), where files appear whole or not
at all.

Local folders keep what :mod:`openfootprints.io.atomic` does: a file is written in a hidden staging folder beside
its final place and renamed into place. Object stores have no atomic rename, but they do have atomic puts: an
object written through :meth:`pyarrow.fs.FileSystem.open_output_stream` (an S3 multipart upload, a GCS resumable
upload) exists only once the stream is closed successfully. So a file for object storage is written to a local
temporary file first and then uploaded in one go.

Credentials and endpoints come from the usual environment: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_ENDPOINT_URL`` (an S3-compatible store) for S3; ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from openfootprints.errors import InputError
from openfootprints.io.atomic import atomic_path

OBJECT_STORES = ("s3", "gs")
GDAL_PREFIXES = {"/vsis3/": "s3://", "/vsigs/": "gs://"}  # GDAL's names for the same objects


def is_url(path: str | os.PathLike) -> bool:
    """True for a URL (``s3://…``, ``gs://…``, ``https://…``) or a GDAL virtual path (``/vsis3/…``): something
    that is not looked for on the local disk."""
    path = str(path)
    return bool(re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path)) or path.startswith("/vsi")


class Storage:
    """A folder, local (a path) or in object storage (``s3://bucket/prefix``, ``gs://bucket/prefix``).

    Files are named by keys relative to the folder, with ``/`` separators (``buildings/cell=0123/part-0.parquet``).
    """

    def __init__(self, root: str | os.PathLike):
        root = str(root)
        for prefix, scheme in GDAL_PREFIXES.items():
            if root.startswith(prefix):
                root = scheme + root[len(prefix):]
        self.root = root.rstrip("/") if is_url(root) else root
        self.local = not is_url(root)
        if self.local:
            self.fs, self.folder = None, Path(root)
            return
        scheme = root.split("://", 1)[0].lower()
        if scheme not in OBJECT_STORES:
            raise InputError(f"{root}: not a supported output location (a local folder, s3://bucket/prefix or "
                             "gs://bucket/prefix)")
        try:
            self.fs, prefix = pafs.FileSystem.from_uri(self.root)
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"{root}: cannot open the storage ({first_line(err)})") from err
        self.prefix = prefix.rstrip("/")  # bucket/prefix
        if not self.prefix:
            raise InputError(f"{root}: give a bucket, e.g. {scheme}://bucket/prefix")

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    def uri(self, key: str = "") -> str:
        """The full address of a file (a path or a URL), for messages and summaries."""
        if not key:
            return self.root
        return str(self.folder / key) if self.local else f"{self.root}/{key}"

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    def exists(self, key: str) -> bool:
        """Whether the file ``key`` is there."""
        if self.local:
            return (self.folder / key).is_file()
        assert self.fs is not None
        return self.fs.get_file_info(self._object(key)).type == pafs.FileType.File

    def files(self, under: str) -> set[str]:
        """The keys of every file under the folder ``under`` (none if it is not there): one listing, not one
        request per file."""
        if self.local:
            return {p.relative_to(self.folder).as_posix() for p in (self.folder / under).rglob("*") if p.is_file()}
        assert self.fs is not None
        selector = pafs.FileSelector(self._object(under), recursive=True, allow_not_found=True)
        return {info.path[len(self.prefix) + 1:] for info in self.fs.get_file_info(selector)
                if info.type == pafs.FileType.File}

    def read_text(self, key: str) -> str:
        """The content of a small text file (UTF-8)."""
        if self.local:
            return (self.folder / key).read_text()
        assert self.fs is not None
        with self.fs.open_input_stream(self._object(key)) as f:
            return f.read().decode()

    def write_text(self, key: str, text: str) -> None:
        """Write a small text file (UTF-8), whole or not at all."""
        with self.staged(key) as tmp:
            tmp.write_text(text)

    @contextlib.contextmanager
    def staged(self, key: str) -> Iterator[Path]:
        """Yield a local path to write the file ``key`` to (it has the final file's name); when the block succeeds
        the file appears at ``key`` whole, when it raises nothing appears.

        Local: a hidden staging folder beside the final place, renamed into place (no copy). Object storage: a
        local temporary folder, then :meth:`put`.
        """
        if self.local:
            with atomic_path(self.folder / key) as tmp:
                yield tmp
            return
        with tempfile.TemporaryDirectory(prefix="openfootprints-put-") as folder:
            tmp = Path(folder) / Path(key).name
            yield tmp
            self.put(tmp, key)

    def put(self, local: str | os.PathLike, key: str) -> None:
        """Copy the local file ``local`` to ``key``, whole or not at all (an existing file there is replaced)."""
        if self.local:
            with atomic_path(self.folder / key) as tmp:
                shutil.copyfile(local, tmp)
            return
        data = pa.py_buffer(Path(local).read_bytes())  # read whole first: no local error can cut the upload short
        path = self._object(key)
        assert self.fs is not None
        try:
            stream = self.fs.open_output_stream(path)
        except OSError as err:
            raise InputError(f"{self.uri(key)}: cannot write ({first_line(err)})") from err
        try:
            stream.write(data)
        except BaseException:
            # close() completes the upload with what was written (and an unclosed stream blocks when dropped):
            # close it, then remove what it may have created
            with contextlib.suppress(Exception):
                stream.close()
                self.fs.delete_file(path)
            raise
        try:
            stream.close()  # the object is created here, whole, or the upload fails and nothing is created
        except OSError as err:
            raise InputError(f"{self.uri(key)}: cannot write ({first_line(err)})") from err

    def remove_staging(self, pattern: str) -> None:
        """Remove the hidden staging folders that an interrupted run left, those matching the glob ``pattern``
        (e.g. ``buildings/cell=*/.*``). Object storage has none: nothing is staged there."""
        if self.local:
            for folder in self.folder.glob(pattern):
                if folder.is_dir() and folder.name.startswith("."):
                    shutil.rmtree(folder, ignore_errors=True)


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
