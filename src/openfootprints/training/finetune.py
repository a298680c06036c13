"""``openfootprints finetune``: a model bundle adapted to a new place from a few labelled buildings.

Fine-tuning is training that starts from a parent bundle (``train.init``) and keeps its contract with the
imagery: the input bands, the ground resolution, the output target (and so the decoding) and the network come
from the parent, whatever the config says. It also learns the way its parent learnt (``finetune.recipe=parent``):
every ``data.*`` and ``augment.*`` key the config leaves at its default takes the parent's value: its chip size,
sampling, augmentation and gap weights (without them a gap-weighted parent learns to merge touching buildings
again: docs/adapt.md), so a parent trained with ``recipe=base`` is fine-tuned with it without saying so;
``finetune.recipe=config`` uses the config as it is. The learning rate and time budget
are ``finetune.lr`` and ``finetune.max_minutes``. The band normalization is the parent's, or this imagery's own
with ``train.init_normalization=adapt``; ``train.freeze_encoder=true`` trains the decoder only, and
``train.anchor_decay`` keeps the weights near the parent's (L2-SP). A fine-tune whose labels leave too few
validation buildings to choose a confidence cut keeps the parent's. The new bundle records its parent (path,
data fingerprint, steps) and the parent's F1 on the fine-tune's validation chips before the first step, which
:func:`against_parent` compares with the fine-tune's own. Give ``data.areas`` (``--area``) where the few labels are
complete, so that the unlabelled buildings around them are not learnt as background.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from omegaconf import DictConfig, OmegaConf

from openfootprints.io.atomic import check_writable
from openfootprints.registry import model_or_base
from openfootprints.model.bundle import Bundle, load_bundle
from openfootprints.training.confidence_cut import MIN_TRUE
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
    if cfg.finetune.recipe == "parent":
        for section, key, value in parents_recipe(cfg, parent):
            out[section][key] = value
    return out


# what is the place's, not the recipe's: never taken from the parent
OWN_DATA_KEYS = {"bands", "resolution_m", "target", "label_erosion_m", "energy_m", "holdout_bounds", "source_weights",
                 "areas", "fix_invalid", "num_workers", "split_seed"}


def parents_recipe(cfg: DictConfig, parent: Bundle) -> list[tuple[str, str, object]]:
    """(section, key, parent's value) of the ``data.*`` and ``augment.*`` keys that ``cfg`` leaves at the packaged
    defaults and the parent's training config set otherwise."""
    from openfootprints.configuration import load_config

    defaults, learnt = load_config([]), parent.training.get("config", {})
    taken = []
    for section in ("data", "augment"):
        for key, value in learnt.get(section, {}).items():
            if section == "data" and key in OWN_DATA_KEYS or key not in defaults[section]:
                continue
            if cfg[section][key] == defaults[section][key] and value != defaults[section][key]:
                taken.append((section, key, value))
    return taken


def finetune(cfg: DictConfig, pairs: list[tuple[str, str]], model: str | None, out: str | Path) -> Path:
    """Fine-tune ``model`` (a bundle; None: the shipped base model) on (imagery, labels) pairs; write ``out``.
    Returns the new bundle's path."""
    check_writable(out)
    parent_path = model_or_base(model)
    parent = load_bundle(parent_path)
    return train(finetune_config(cfg, parent, parent_path), pairs, out)


def against_parent(bundle: Bundle) -> str | None:
    """One line for the user: the fine-tuned ``bundle``'s F1 (IoU 0.5) on its validation chips (labels held back
    from training) beside its parent's on the same chips, each with a confidence cut chosen there; whether the
    fine-tune is no better. None for a bundle that records no such comparison (no parent, no validation chips)."""
    after, before = bundle.training.get("confidence_cut"), bundle.training.get("parent", {}).get("validation")
    if not after or not before:
        return None
    n = after["n_true"]
    if n < MIN_TRUE:
        return (f"only {n} held-back buildings in the validation chips: too few to tell whether it beats its parent; "
                "score both on a patch you traced (openfootprints evaluate)")
    line = f"F1 on the {n} held-back buildings of the validation chips: {after['f1']:.2f}, its parent {before['f1']:.2f}"
    if after["f1"] <= before["f1"]:
        line += (": no better than its parent here; keep detecting with the parent, or trace more buildings "
                 "where `openfootprints suggest` points and fine-tune again")
    return line
