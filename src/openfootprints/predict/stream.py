"""Probability rows handed from the predicting thread to the vectorizing one as soon as they are final.

:func:`~openfootprints.predict.probabilities.predict_probabilities` writes finished rows in order;
:func:`~openfootprints.vectorize.polygons.iter_buildings` reads strips and waits until their rows are
written. So vectorization runs beside inference instead of after it. The rows live in a raw uint8 file
(1 byte per pixel, on disk, read and written with pread/pwrite), so memory stays one strip whatever the
scene's size. The object offers the few attributes of a rasterio dataset that both sides use.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from rasterio.windows import Window


class Cancelled(RuntimeError):
    """The other side of the stream stopped."""


class ProbabilityStream:
    """A (height, width) uint8 probability raster written row-block by row-block, in order, read by strips.

    ``crs`` and ``transform`` georeference it as the GeoTIFF would be.
    """

    def __init__(self, path: str | Path, width: int, height: int, crs, transform):
        self.name, self.width, self.height, self.crs, self.transform = str(path), width, height, crs, transform
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._rows_done = 0
        self._finished = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def write(self, array: np.ndarray, window: Window) -> None:
        """Write rows (1, h, width) at ``window.row_off``; rows must come in order (the writer's side)."""
        with self._cond:
            if self._error is not None:
                raise Cancelled(f"{self.name}: the reader stopped") from self._error
        row = int(window.row_off)
        data = np.ascontiguousarray(array.reshape(-1, self.width), np.uint8)
        _write_all(self._fd, memoryview(data).cast("B"), row * self.width)
        with self._cond:
            self._rows_done = max(self._rows_done, row + data.shape[0])
            self._cond.notify_all()

    def read(self, band: int, window: Window) -> np.ndarray:
        """(h, width) uint8 rows of a full-width ``window``, once they are written (the reader's side)."""
        r0, h = int(window.row_off), int(window.height)
        with self._cond:
            self._cond.wait_for(lambda: self._rows_done >= r0 + h or self._error is not None or self._finished)
            if self._error is not None:
                raise Cancelled(f"{self.name}: the writer stopped") from self._error
            if self._rows_done < r0 + h:
                raise Cancelled(f"{self.name}: the writer finished at row {self._rows_done}, rows up to {r0 + h} asked")
        return np.frombuffer(_read_all(self._fd, h * self.width, r0 * self.width), np.uint8).reshape(h, self.width)

    def finish(self) -> None:
        """The writer is done: reads of rows it never wrote raise instead of waiting."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Stop both sides: waiting reads and later writes raise :class:`Cancelled`."""
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ProbabilityStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _read_all(fd: int, size: int, offset: int) -> bytearray:
    out = bytearray()
    while len(out) < size:
        chunk = os.pread(fd, min(size - len(out), 1 << 30), offset + len(out))
        if not chunk:
            raise OSError(f"short read: {len(out)} of {size} bytes at offset {offset}")
        out += chunk
    return out
