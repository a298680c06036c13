"""Write outputs under temporary names and rename, so a failed run leaves no partial file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from openfootprints.errors import InputError


@contextlib.contextmanager
def atomic_outputs(*finals: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield one path to write per final path; on success all are renamed into place, on error none is.

    Each temporary file has its final file's name inside a hidden folder beside it, so writers that derive
    something from the name (a GeoPackage layer) see the real one, and the rename stays on one filesystem.
    Files are renamed in the order given, so put the main output last.
    """
    finals = [Path(f) for f in finals]
    folders = []
    try:
        for final in finals:
            final.parent.mkdir(parents=True, exist_ok=True)
            folders.append(Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent)))
        tmps = [folder / final.name for folder, final in zip(folders, finals)]
        yield tmps
        for tmp, final in zip(tmps, finals):
            os.replace(tmp, final)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


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
