"""Probability rows handed from the predicting thread to the vectorizing one as soon as they are final.

:func:`~openfootprints.predict.probabilities.predict_probabilities` writes finished rows in order;
:func:`~openfootprints.vectorize.polygons.iter_buildings` reads tiles and waits until their rows are
written. So vectorization runs beside inference instead of after it. The rows live in a raw uint8 file
(1 byte per pixel, read and written with pread/pwrite), so memory stays one strip whatever the scene's
size. With ``capacity_rows`` the file is a ring of that many rows: the reader ``release``\\ s rows it will
not read again and the writer waits for room, so the disk used is bounded by the scene's width, not its
area. The object offers the few attributes of a rasterio dataset that both sides use.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from affine import Affine
from rasterio.windows import Window


class Cancelled(RuntimeError):
    """The other side of the stream stopped."""


class ProbabilitySink(Protocol):
    """Where prediction writes its rows instead of a GeoTIFF: a :class:`ProbabilityStream` or a
    :class:`ProbabilityArray` (``crs``: a rasterio CRS)."""

    def write(self, array: np.ndarray, window: Window) -> None: ...


class ProbabilityStream:
    """A (height, width) uint8 probability raster written row-block by row-block, in order, read by windows.

    ``crs`` and ``transform`` georeference it as the GeoTIFF would be. ``capacity_rows``: rows kept on disk
    at once (a ring; None = the whole raster); it must hold what the reader looks back plus what it looks
    ahead plus one block of the writer, or a read that cannot be served raises instead of waiting for ever.
    """

    def __init__(self, path: str | Path, width: int, height: int, crs: Any, transform: Affine,
                 capacity_rows: int | None = None):
        self.name, self.width, self.height, self.crs, self.transform = str(path), width, height, crs, transform
        self.capacity = min(height, capacity_rows) if capacity_rows else height
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._rows_done = 0  # rows [0, rows_done) are written
        self._released = 0  # rows [0, released) will not be read again
        self._finished = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def write(self, array: np.ndarray, window: Window) -> None:
        """Write rows (1, h, width) at ``window.row_off``; rows must come in order (the writer's side).

        Waits while the ring has no room for them (the reader has not released enough rows yet).
        """
        row = int(window.row_off)
        data = np.ascontiguousarray(array.reshape(-1, self.width), np.uint8)
        if data.shape[0] > self.capacity:
            raise ValueError(f"{self.name}: a block of {data.shape[0]} rows does not fit a ring of {self.capacity}")
        with self._cond:
            self._cond.wait_for(lambda: row + data.shape[0] <= self._released + self.capacity
                                or self._error is not None)
            if self._error is not None:
                raise Cancelled(f"{self.name}: the reader stopped") from self._error
        for start, rows in self._slots(row, data.shape[0]):
            _write_all(self._fd, data[rows].data.cast("B"), start * self.width)
        with self._cond:
            self._rows_done = max(self._rows_done, row + data.shape[0])
            self._cond.notify_all()

    def read(self, band: int, window: Window) -> np.ndarray:
        """(h, w) uint8 pixels of ``window`` (any rows and columns inside the raster), once its rows are written
        (the reader's side)."""
        r0, h = int(window.row_off), int(window.height)
        c0, w = int(window.col_off), int(window.width)
        with self._cond:
            if r0 < self._released:
                raise ValueError(f"{self.name}: rows from {r0} asked, but rows below {self._released} were released")
            if r0 + h > self._released + self.capacity:
                raise ValueError(f"{self.name}: rows {r0}–{r0 + h} do not fit a ring of {self.capacity} rows "
                                 f"from row {self._released}")
            self._cond.wait_for(lambda: self._rows_done >= r0 + h or self._error is not None or self._finished)
            if self._error is not None:
                raise Cancelled(f"{self.name}: the writer stopped") from self._error
            if self._rows_done < r0 + h:
                raise Cancelled(f"{self.name}: the writer finished at row {self._rows_done}, rows up to {r0 + h} asked")
        if c0 == 0 and w == self.width:  # whole rows: one read per contiguous run of slots
            blocks = [_read_all(self._fd, (rows.stop - rows.start) * w, start * self.width)
                      for start, rows in self._slots(r0, h)]
            return np.frombuffer(b"".join(blocks), np.uint8).reshape(h, w)
        out = np.empty((h, w), np.uint8)
        for k in range(h):
            slot = (r0 + k) % self.capacity
            out[k] = np.frombuffer(_read_all(self._fd, w, slot * self.width + c0), np.uint8)
        return out

    def release(self, row: int) -> None:
        """The reader will not read rows below ``row`` again: the writer may reuse their room."""
        with self._cond:
            if row > self._released:
                self._released = min(row, self.height)
                self._cond.notify_all()

    def finish(self) -> None:
        """The writer is done: reads of rows it never wrote raise instead of waiting."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Stop both sides: waiting reads and writes, and later ones, raise :class:`Cancelled`."""
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ProbabilityStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _slots(self, row: int, n: int) -> list[tuple[int, slice]]:
        """Rows [row, row + n) as (first slot, rows of the block) runs that do not wrap around the ring."""
        runs, k = [], 0
        while k < n:
            slot = (row + k) % self.capacity
            take = min(n - k, self.capacity - slot)
            runs.append((slot, slice(k, k + take)))
            k += take
        return runs


class ProbabilityArray:
    """A (height, width) uint8 probability raster held in memory: the sink of a prediction and the source of a
    vectorization run apart (on different workers of a cluster), with the attributes of a rasterio dataset
    that both use. Pickles as its array and georeference."""

    def __init__(self, name: str, width: int, height: int, crs: Any, transform: Affine):
        self.name, self.width, self.height, self.crs, self.transform = name, width, height, crs, transform
        self.array = np.zeros((height, width), np.uint8)

    def write(self, array: np.ndarray, window: Window) -> None:
        """Write full-width rows (1, h, width) at ``window.row_off``."""
        rows = array.reshape(-1, self.width)
        self.array[int(window.row_off) : int(window.row_off) + rows.shape[0]] = rows

    def read(self, band: int, window: Window) -> np.ndarray:
        """(h, w) uint8 pixels of ``window``."""
        r0, c0 = int(window.row_off), int(window.col_off)
        return self.array[r0 : r0 + int(window.height), c0 : c0 + int(window.width)]


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
