"""Where the detection windows go, and how overlapping predictions are blended."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Region:
    """A rectangle of the scene's working grid, in pixels: rows [row0, row1), columns [col0, col1)."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def height(self) -> int:
        return self.row1 - self.row0

    @property
    def width(self) -> int:
        return self.col1 - self.col0

    def grown(self, pixels: int, max_rows: int, max_cols: int) -> Region:
        """This region widened by ``pixels`` on every side, clipped to [0, max_rows) × [0, max_cols)."""
        return Region(max(0, self.row0 - pixels), min(max_rows, self.row1 + pixels),
                      max(0, self.col0 - pixels), min(max_cols, self.col1 + pixels))


def window_starts(start: int, stop: int, window: int, stride: int) -> list[int]:
    """Start offsets (pixels) of windows of size ``window`` covering [start, stop) with step ``stride``.

    The last window is pulled back to end at ``stop``; a span shorter than one window gets one window at
    ``start`` (the reader pads it).
    """
    if stop - start <= window:
        return [start]
    starts = list(range(start, stop - window, stride))
    starts.append(stop - window)
    return starts


def lattice_starts(length: int, window: int, stride: int, lo: int, hi: int) -> list[int]:
    """The starts of the windows covering a whole axis of ``length`` pixels (:func:`window_starts` from 0)
    that overlap [lo, hi): the same windows, at the same places, whatever part of the axis is asked for."""
    return [s for s in window_starts(0, length, window, stride) if s < hi and s + window > lo]


def blend_ramp(window: int, halo: int) -> np.ndarray:
    """(window,) float32 weights along one axis: 1 in the centre, falling linearly to near 0 over ``halo`` pixels
    at both ends. Never exactly 0, so a pixel seen by one window only (at the scene border) keeps its prediction."""
    p = np.arange(window, dtype=np.float32)
    ramp = np.minimum(p + 0.5, window - p - 0.5) / max(halo, 1)
    weights: np.ndarray = np.clip(ramp, 1e-3, 1.0)
    return weights


def blend_weights(window: int, halo: int) -> np.ndarray:
    """(window, window) float32 weights of a window's prediction in the blend: ``outer(ramp, ramp)``
    (:func:`blend_ramp`)."""
    ramp = blend_ramp(window, halo)
    return np.outer(ramp, ramp)
