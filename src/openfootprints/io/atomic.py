"""Write outputs under temporary names and rename, so a failed run leaves no partial file."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Iterable, Iterator

from openfootprints.errors import InputError

resource: ModuleType | None
try:
    import resource
except ImportError:  # not on Windows
    resource = None

OUT_OF_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}  # disk full, file over the size limit, quota


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield one path to write per final path; on success all are renamed into place, on error none is.

    Each temporary file has its final file's name inside a hidden folder beside it, so writers that derive
    something from the name (a GeoPackage layer) see the real one, and the rename stays on one filesystem.
    Files are renamed in the order given, so put the main output last.
    """
    finals = [Path(f) for f in paths]
    folders = []
    try:
        for final in finals:
            final.parent.mkdir(parents=True, exist_ok=True)
            folders.append(Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent)))
        tmps = [folder / final.name for folder, final in zip(folders, finals)]
        try:
            yield tmps
        except InputError as err:  # one from a nested atomic write names our temporary file: name the final one
            message = str(err)
            for tmp, final in zip(tmps, finals):
                message = message.replace(str(tmp), str(final))
            if message == str(err):
                raise
            raise InputError(message) from err
        except Exception as err:
            why = out_of_space(err, tmps)
            if why:  # said here, where the file being written is known
                raise InputError(f"disk full or file too large while writing {finals[-1]} ({why}); free some "
                                 "space on its disk and run again") from err
            raise
        for tmp, final in zip(tmps, finals):
            os.replace(tmp, final)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def out_of_space(err: BaseException, written: Iterable[Path] = ()) -> str | None:
    """Why ``err`` is a write that failed for want of room (``No space left on device``, ``File too large``), or None
    when it is not: an OSError (or one that caused it) with errno ENOSPC, EFBIG or EDQUOT or, for writers that report
    no errno (PyTorch's, GDAL's), one of the files being ``written`` that reached the process's file-size limit or
    lies on a disk with less than 1 MiB left (what the failed write took may have been freed since)."""
    cause: BaseException | None = err
    for _ in range(8):  # the chain of causes, a few deep
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.errno in OUT_OF_SPACE:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource else None
    if resource and limit == resource.RLIM_INFINITY:
        limit = None
    for path in written:
        with contextlib.suppress(OSError):
            if limit is not None and path.exists() and path.stat().st_size >= limit:
                return os.strerror(errno.EFBIG)
            disk = os.statvfs(path.parent) if hasattr(os, "statvfs") else None
            if disk and disk.f_bavail * disk.f_frsize < 2**20:
                return os.strerror(errno.ENOSPC)
    return None


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """:func:`atomic_outputs` for one file."""
    with atomic_outputs(final) as (tmp,):
        yield tmp


def check_writable(path: str | os.PathLike, suffixes: Iterable[str] | None = None, folder: bool = False) -> Path:
    """Refuse, before any work, an output that could not be written: a file name whose extension is not one of
    ``suffixes`` (case-insensitive), a path below an existing file, a folder where a file goes (or a file where
    a ``folder`` goes), or a place this process may not write to. Returns the path."""
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise InputError(f"{path}: unknown output format '{path.suffix}'; use one of {', '.join(sorted(suffixes))}")
    if path.exists() and path.is_dir() != folder:
        raise InputError(f"{path}: exists and is a {'file' if folder else 'folder'}; give a "
                         f"{'folder' if folder else 'file name'}")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{path}: cannot be written, {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot be written, no permission to write in {ancestor}")
    return path
