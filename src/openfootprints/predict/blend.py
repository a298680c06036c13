"""Overlapping window predictions blended into final uint8 probability rows, in about 1 byte per pixel of a strip.

Each window's probabilities, weighted by :func:`~openfootprints.predict.windows.blend_weights`, are summed into
float32; a pixel's probability is its sum over the sum of the weights of the windows that cover it. Only the sums
that can still change are kept in float32:

- ``work``: one window's square (window × window px), the columns of the current row of windows that its next
  windows still add to. Windows are added in column order, so every column left of the window being added is
  final for this row of windows.
- ``carry``: the rows that the next row of windows also covers, for the whole strip (float32 sums and validity,
  5 bytes per pixel; rows = the largest overlap between two rows of windows, 2 × halo except where the last row
  of the scene is pulled back to end at its edge).
- ``out``: the rows no later window touches, as uint8 probabilities (1 byte per pixel), written to the sink
  when the row of windows is done.

A pixel gets the same additions in the same order as a float32 strip of ``window`` rows would give it (the carry
first, then the current row's windows, left to right), so the probabilities are equal to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from openfootprints.predict.stream import ProbabilitySink
from openfootprints.predict.windows import Region


@dataclass
class ValidPixels:
    """Valid pixels counted as the probability rows are written (each pixel once, no pass over the mask of
    the scene): ``predicted`` in the whole region predicted, ``inside`` in ``inner``, a rectangle of the same
    grid (e.g. the region of ``detect.bbox`` inside its context)."""

    inner: Region
    predicted: int = 0
    inside: int = 0

    def count(self, valid: np.ndarray, row0: int, col0: int) -> None:
        """Add ``valid`` (h, w) bool, whose first pixel is at scene row ``row0``, column ``col0``."""
        self.predicted += int(np.count_nonzero(valid))
        r0, r1 = max(row0, self.inner.row0), min(row0 + valid.shape[0], self.inner.row1)
        c0, c1 = max(col0, self.inner.col0), min(col0 + valid.shape[1], self.inner.col1)
        if r1 > r0 and c1 > c0:
            self.inside += int(np.count_nonzero(valid[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0]))


def weight_sums(starts: list[int], ramp: np.ndarray) -> np.ndarray:
    """(starts[-1] + len(ramp) - starts[0],) float32: the sum of the windows' ``ramp`` along one axis, from
    ``starts[0]``."""
    sums = np.zeros(starts[-1] + len(ramp) - starts[0], np.float32)
    for s in starts:
        sums[s - starts[0] : s - starts[0] + len(ramp)] += ramp
    return sums


class BlendStrip:
    """Blends the weighted window predictions of a lattice (``row_starts`` × ``col_starts``, scene pixels, windows
    of ``len(ramp)`` px) and writes the rows of ``region`` to ``sink`` as uint8 probabilities (0 on pixels no valid
    window pixel covers), counting their valid pixels in ``counted``.

    Per row of windows: :meth:`start_row`, then :meth:`add` for the windows that ran, in column order, then
    :meth:`finish_row`. Columns are strip columns: scene column minus ``col_starts[0]``.
    """

    def __init__(self, ramp: np.ndarray, row_starts: list[int], col_starts: list[int], region: Region,
                 sink: ProbabilitySink, counted: ValidPixels | None = None):
        self.window = len(ramp)
        self.row_starts, self.left, self.region, self.sink, self.counted = row_starts, col_starts[0], region, sink, counted
        # every window adds outer(ramp, ramp), so the sum of weights at a pixel is (row sum) × (column sum)
        self.row_sums = weight_sums(row_starts, ramp)  # scene rows from row_starts[0]
        self.col_sums = weight_sums(col_starts, ramp)  # strip columns
        self.width = len(self.col_sums)
        overlap = max([self.window - (b - a) for a, b in zip(row_starts, row_starts[1:])], default=0)
        self.carry = np.zeros((overlap, self.width), np.float32)
        self.carry_valid = np.zeros(self.carry.shape, bool)
        self.work = np.zeros((self.window, self.window), np.float32)
        self.work_valid = np.zeros(self.work.shape, bool)
        self.index = -1  # the row of windows being blended
        self.rows_in = 0  # rows of the carry that the current row of windows starts from
        self.at = 0  # strip column of the work square's first column
        self.out = np.empty((0, region.width), np.uint8)  # the current row's final rows in the region, uint8

    @property
    def top(self) -> int:
        """Scene row of the current row of windows' first row."""
        return self.row_starts[self.index]

    @property
    def final_rows(self) -> int:
        """Rows of the current row of windows that no later window touches."""
        if self.index + 1 < len(self.row_starts):
            return self.row_starts[self.index + 1] - self.top
        return self.window

    def start_row(self) -> None:
        """Begin the next row of windows: the work square at strip column 0, starting from the carry."""
        self.index += 1
        r0, r1 = self._region_rows()
        self.out = np.empty((max(0, r1 - r0), self.region.width), np.uint8)
        self.at = 0
        self._enter(0, self.window)

    def add(self, col: int, weighted: np.ndarray, valid: np.ndarray) -> None:
        """Add a window's weighted probabilities (window, window) float32 and validity (window, window) bool at strip
        column ``col``; windows come in column order."""
        self._slide_to(col)
        self.work += weighted
        self.work_valid |= valid

    def finish_row(self) -> None:
        """Every window of the row was added: finalize its columns and write its final rows to the sink."""
        self._slide_to(self.width)
        r0, r1 = self._region_rows()
        if r1 > r0:
            self.sink.write(self.out[None], window=Window(0, r0 - self.region.row0, self.region.width, r1 - r0))
        self.rows_in = self.window - self.final_rows
        self.out = np.empty((0, self.region.width), np.uint8)  # free its memory before the next row takes its own

    def _region_rows(self) -> tuple[int, int]:
        """Scene rows of the region among the current row's final rows."""
        return max(self.top, self.region.row0), min(self.top + self.final_rows, self.region.row1)

    def _slide_to(self, col: int) -> None:
        """Move the work square to start at strip column ``col``, finalizing the columns it leaves."""
        while self.at < col:
            step = min(col - self.at, self.window)
            self._finalize(self.at, min(self.at + step, self.width))
            self.work[:, : self.window - step] = self.work[:, step:]
            self.work_valid[:, : self.window - step] = self.work_valid[:, step:]
            self.at += step
            self._enter(self.window - step, self.window)

    def _enter(self, w0: int, w1: int) -> None:
        """Start the work square's columns [w0, w1) from the carry (the previous row of windows' sums)."""
        c0, c1 = self.at + w0, min(self.at + w1, self.width)
        n, cols = self.rows_in, slice(w0, w0 + max(0, c1 - c0))
        self.work[:, w0:w1] = 0
        self.work_valid[:, w0:w1] = False
        self.work[:n, cols] = self.carry[:n, c0:c1]
        self.work_valid[:n, cols] = self.carry_valid[:n, c0:c1]

    def _finalize(self, c0: int, c1: int) -> None:
        """Strip columns [c0, c1) (inside the work square) are final for this row of windows: their final rows go to
        ``out`` as uint8, the others to the carry."""
        w0, w1, final = c0 - self.at, c1 - self.at, self.final_rows
        self.carry[: self.window - final, c0:c1] = self.work[final:, w0:w1]
        self.carry_valid[: self.window - final, c0:c1] = self.work_valid[final:, w0:w1]
        r0, r1 = self._region_rows()
        s0, s1 = max(c0 + self.left, self.region.col0), min(c1 + self.left, self.region.col1)  # scene columns
        if r1 <= r0 or s1 <= s0:
            return
        rows, cols = slice(r0 - self.top, r1 - self.top), slice(s0 - self.left - self.at, s1 - self.left - self.at)
        row_weight = self.row_sums[r0 - self.row_starts[0] : r1 - self.row_starts[0], None]
        prob = self.work[rows, cols] / np.maximum(row_weight * self.col_sums[s0 - self.left : s1 - self.left], 1e-6)
        valid = self.work_valid[rows, cols]
        prob[~valid] = 0.0
        if self.counted is not None:
            self.counted.count(valid, r0, s0)
        self.out[:, s0 - self.region.col0 : s1 - self.region.col0] = np.round(prob * 255)
