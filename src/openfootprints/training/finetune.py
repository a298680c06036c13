"""``openfootprints finetune``: a model bundle adapted to a new place from a few labelled buildings.

Fine-tuning is training that starts from a parent bundle (``train.init``) and keeps its contract with the
imagery: the input bands, the ground resolution, the output target (and so the decoding) and the network come
from the parent, whatever the config says, and so do its gap weights unless the config sets some (without them a
gap-weighted parent learns to merge touching buildings again: docs/adapt.md). The learning rate and time budget
are ``finetune.lr`` and ``finetune.max_minutes``. The band normalization is the parent's, or this imagery's own
with ``train.init_normalization=adapt``; ``train.freeze_encoder=true`` trains the decoder only, and
``train.anchor_decay`` keeps the weights near the parent's (L2-SP). A fine-tune whose labels leave too few
validation buildings to choose a confidence cut keeps the parent's. The new bundle records its parent (path,
data fingerprint, steps). Give ``data.areas`` (``--area``) where the few labels are
complete, so that the unlabelled buildings around them are not learnt as background.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from omegaconf import DictConfig, OmegaConf

from openfootprints.io.atomic import check_writable
from openfootprints.model.base import model_or_base
from openfootprints.model.bundle import Bundle, load_bundle
from openfootprints.training.run import train


def finetune_config(cfg: DictConfig, parent: Bundle, parent_path: str) -> DictConfig:
    """The training config of a fine-tune: ``cfg`` with the parent's contract and ``finetune.*`` applied."""
    out = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    out.train.init = parent_path
    out.train.lr = cfg.finetune.lr
    out.train.max_minutes = cfg.finetune.max_minutes
    out.data.bands = list(parent.bands)
    out.data.resolution_m = parent.resolution_m
    out.data.target = parent.target
    if parent.target == "energy":
        out.data.energy_m = parent.label_erosion_m
    else:
        out.data.label_erosion_m = parent.label_erosion_m
    out.model.arch = parent.architecture.arch
    out.model.encoder = parent.architecture.encoder
    out.model.decoder_channels = list(parent.architecture.decoder_channels)
    out.model.pretrained = False
    parent_data = parent.training.get("config", {}).get("data", {})
    if not cfg.data.gap_weight_w0 and parent_data.get("gap_weight_w0"):  # the parent's loss, unless one is set
        out.data.gap_weight_w0 = parent_data["gap_weight_w0"]
        out.data.gap_sigma_m = parent_data.get("gap_sigma_m", cfg.data.gap_sigma_m)
    return out


def finetune(cfg: DictConfig, pairs: list[tuple[str, str]], model: str | None, out: str | Path) -> Path:
    """Fine-tune ``model`` (a bundle; None: the shipped base model) on (imagery, labels) pairs; write ``out``.
    Returns the new bundle's path."""
    check_writable(out)
    parent_path = model_or_base(model)
    parent = load_bundle(parent_path)
    return train(finetune_config(cfg, parent, parent_path), pairs, out)
