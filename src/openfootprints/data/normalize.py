"""The one place pixels become network input: per-band standardization with the model's statistics.

Training chips, pseudo-labelled chips and detection windows all go through :class:`Normalization`, so training and
inference cannot disagree about it.
"""

from __future__ import annotations

import numpy as np


class Normalization:
    """Per-band ``mean`` and ``std`` in the imagery's file units (one value per input band, as stored in the bundle).

    Calling it maps a (C, H, W) image in file units to float32 ``(image − mean) / std``, 0 where ``valid``
    (H, W) is False (nodata is the mean of the training data, as far as the network sees).
    """

    def __init__(self, mean: list[float], std: list[float]):
        if len(mean) != len(std):
            raise ValueError(f"normalization: {len(mean)} means but {len(std)} standard deviations")
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]

    def __call__(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = image.astype(np.float32)  # a copy, always: the caller's image is not touched
        out -= self.mean  # in place: no temporaries (this runs on every window of a detection)
        out /= self.std
        np.copyto(out, 0.0, where=~valid)
        return out
