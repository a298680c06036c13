"""Adapting to a scene without labels: the network's batch-norm statistics re-estimated on the scene's own windows
(AdaBN, Li et al. 2016, "Revisiting Batch Normalization For Practical Domain Adaptation").

A network normalizes each layer's activations with means and variances measured on its training imagery. Imagery
of another sensor, light or season shifts them; re-measuring them on the scene before detecting (``detect.adapt_bn``
windows of the scene, spread over it) moves the network towards it at the cost of those windows' forward passes,
with no label and no gradient. The weights are untouched; only the statistics change, for this scene.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window

from openfootprints.data.normalize import Normalization

if TYPE_CHECKING:
    import torch

    from openfootprints.io.raster import Scene
    from openfootprints.predict.windows import Region

ADAPT_WINDOW_PX = 512  # side of the windows whose activations are measured (pixels at the model's resolution)
MIN_VALID = 0.9  # a window with less valid imagery than this share is passed over (nodata would skew the statistics)


def window_grid(region: Region, n: int, size: int) -> list[Window]:
    """At most ``n`` windows of ``size`` pixels (smaller where the region is) spread evenly over ``region``, on a
    grid of non-overlapping places, row by row."""
    # a multiple of the network's stride (32 px) where the region allows: every architecture takes it
    h, w = (side if side < 32 else side // 32 * 32 for side in (min(size, region.height), min(size, region.width)))
    rows = list(range(region.row0, region.row1 - h + 1, h)) or [region.row0]
    cols = list(range(region.col0, region.col1 - w + 1, w)) or [region.col0]
    places = [(r, c) for r in rows for c in cols]
    if len(places) > n:
        places = [places[i] for i in np.linspace(0, len(places) - 1, n).round().astype(int)]
    return [Window(c, r, w, h) for r, c in places]


def scene_batches(scene: Scene, region: Region, normalize: Normalization, n: int, batch: int = 4
                  ) -> Iterator[np.ndarray]:
    """Normalized batches (B, C, H, W) of up to ``n`` mostly valid windows of ``region`` (:func:`window_grid`;
    while fewer than ``n`` have :data:`MIN_VALID` valid pixels, the most valid of the others make up the number;
    a window with no valid pixel never counts)."""
    images: list[np.ndarray] = []
    partial: list[tuple[float, np.ndarray]] = []
    for window in window_grid(region, 4 * n, ADAPT_WINDOW_PX):  # more places than needed: some are nodata
        image, valid = scene.read(window)
        share = float(valid.mean())
        if share >= MIN_VALID:
            images.append(normalize(image, valid))
        elif share > 0:
            partial.append((share, normalize(image, valid)))
        if len(images) == n:
            break
    partial.sort(key=lambda item: -item[0])
    chosen = images + [image for _, image in partial[: n - len(images)]]
    for start in range(0, len(chosen), batch):
        yield np.stack(chosen[start:start + batch])


def adapt_batchnorm(net: torch.nn.Module, batches: Iterator[np.ndarray], device: str = "cpu") -> int:
    """Re-estimate every batch-norm layer's running mean and variance of ``net`` as the plain average over
    ``batches`` (normalized (B, C, H, W) float32); the weights stay, dropout stays off. Returns the windows seen
    (0: nothing was seen and the statistics are unchanged)."""
    import torch

    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in norms]  # type: ignore[union-attr]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch, not an exponential one
        m.train()
    seen = 0
    with torch.no_grad():
        for batch in batches:  # even one window has H·W values per channel: enough for its statistics
            net(torch.from_numpy(batch).to(device))
            seen += len(batch)
    for m, (mean, var, momentum) in zip(norms, saved):
        m.eval()
        m.momentum = momentum
        if seen == 0:
            m.running_mean.copy_(mean)  # type: ignore[union-attr]
            m.running_var.copy_(var)  # type: ignore[union-attr]
    return seen
