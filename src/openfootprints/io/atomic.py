"""Write outputs under a temporary name and rename, so a failed run leaves no partial file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a path to write instead of ``final``; on success it is renamed to ``final``, on error removed.

    The temporary file has the final file's name inside a hidden folder beside it, so writers that derive
    something from the name (a GeoPackage layer) see the real one, and the rename stays on one filesystem.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        tmp = folder / final.name
        yield tmp
        os.replace(tmp, final)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
