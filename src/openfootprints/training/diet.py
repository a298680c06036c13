"""Data diet by EL2N scores (Paul et al. 2021): score each training chip by how wrong early models are on it.

EL2N of a chip: the mean over its valid pixels of |p − y| (p the predicted building probability, y the
target), from a model trained for only a few steps, averaged over several seeds. Easy chips score low and
can be pruned; the very highest scores are often label errors, so an offset drops those too, and a gallery
shows them for a person to check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from openfootprints.io.atomic import atomic_path


@torch.no_grad()
def el2n_scores(net: torch.nn.Module, dataset: torch.utils.data.Dataset, batch_size: int = 8) -> np.ndarray:
    """(len(dataset),) float64: mean |σ(logit) − target| over each item's valid pixels (weight > 0).

    ``dataset`` items are ``(image, target, weight)`` as :class:`~openfootprints.data.chips.ChipDataset`
    gives them; an item without valid pixels scores 0.
    """
    net.eval()
    scores = []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for image, target, weight in loader:
        error = (torch.sigmoid(net(image)) - target).abs()
        valid = (weight > 0).to(error.dtype)
        per_chip = (error * valid).sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3)).clamp_min(1.0)
        scores.append(per_chip.double().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)


def prune(scores: np.ndarray, keep: float, offset: float) -> np.ndarray:
    """Indexes of the chips kept: sorted by score, highest first, drop the top ``offset`` share, keep the
    next ``keep`` share (at least one chip). Both shares are of all chips, in [0, 1]."""
    order = np.argsort(-scores, kind="stable")
    n = len(scores)
    start = min(int(round(offset * n)), n - 1)
    return np.sort(order[start: start + max(1, int(round(keep * n)))])


def write_gallery(path: str | Path, images: list[np.ndarray], masks: list[np.ndarray], scores: list[float],
                  titles: list[str]) -> Path:
    """A PNG grid of chips (each (3, H, W) float in [0, 1]) with their label outlines and EL2N scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(4, max(n, 1))
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, mask, score, title in zip(axes.ravel(), images, masks, scores, titles):
        ax.imshow(np.clip(np.moveaxis(image, 0, -1), 0, 1))
        if mask.any():
            ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(f"EL2N {score:.3f}\n{title}", fontsize=7)
    fig.suptitle("Highest EL2N scores: suspected label errors (cyan: labels)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(path)
