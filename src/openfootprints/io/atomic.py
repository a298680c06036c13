"""Write outputs under temporary names and rename, so a failed run leaves no partial file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


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
