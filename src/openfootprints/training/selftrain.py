"""Noisy-student self-training: a teacher labels unlabelled imagery, a noisier student learns from both.

Each round: the teacher bundle predicts building probabilities over every unlabelled scene (soft
pseudo-labels, kept as uint8 rasters for the round only); a student, with dropout, stochastic depth and
photometric jitter at least as strong as ``selftrain.*`` asks, trains from the starting weights on labelled
chips and pseudo-labelled chips (``selftrain.pseudo_fraction`` of them) with soft-target BCE + Dice; the
student is the next round's teacher. (Xie et al. 2020; Sirko et al. 2021 §3.)
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import cast

from omegaconf import DictConfig, OmegaConf

from openfootprints.errors import InputError
from openfootprints.io.atomic import check_writable
from openfootprints.io.raster import open_scene
from openfootprints.model.onnx import load_model
from openfootprints.predict.probabilities import predict_probabilities
from openfootprints.training.run import train

log = logging.getLogger(__name__)


def pseudo_label(cfg: DictConfig, teacher_path: str, image: str, out: Path) -> Path:
    """The teacher's building probabilities over the whole of ``image`` (uint8 GeoTIFF, value / 255)."""
    teacher = load_model(teacher_path)
    scene = open_scene(image, bands=list(cfg.data.bands) if cfg.data.bands else teacher.bands,
                       resolution_m=teacher.resolution_m)
    d = cfg.detect
    return predict_probabilities(scene, teacher, out, batch_size=d.batch_size, device=d.device, progress=False,
                                 engine=d.engine, tta=d.tta)


def student_config(cfg: DictConfig) -> DictConfig:
    """The config with the student's noise raised to at least ``selftrain.dropout``/``drop_path``/``jitter``."""
    student = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    s = cfg.selftrain
    student.model.dropout = max(cfg.model.dropout, s.dropout)
    student.model.drop_path = max(cfg.model.drop_path, s.drop_path)
    student.augment.jitter = max(cfg.augment.jitter, s.jitter)
    return student


def self_train(cfg: DictConfig, pairs: list[tuple[str, str]], unlabelled: list[str], teacher: str,
               out: str | Path) -> Path:
    """Run ``selftrain.rounds`` rounds of noisy-student training from ``teacher``; the last student goes to
    ``out``, earlier ones to ``OUT.roundN.ofp``. Returns ``out``."""
    if not unlabelled:
        raise InputError("self-train: give at least one --unlabelled scene")
    out = check_writable(out)
    student_cfg = student_config(cfg)
    rounds = cfg.selftrain.rounds
    for r in range(1, rounds + 1):
        target = out if r == rounds else out.with_name(f"{out.stem}.round{r}{out.suffix}")
        with tempfile.TemporaryDirectory(prefix="openfootprints-pseudo-") as tmp:
            labels = [str(pseudo_label(cfg, teacher, image, Path(tmp) / f"pseudo{k}.tif"))
                      for k, image in enumerate(unlabelled)]
            log.info("self-training round %d/%d: teacher %s labelled %d scene(s)", r, rounds, teacher, len(labels))
            provenance = {"self_training": {"round": r, "rounds": rounds, "teacher": str(teacher),
                                            "unlabelled": list(unlabelled)}}
            teacher = str(train(student_cfg, pairs, target, pseudo=list(zip(unlabelled, labels)),
                                provenance=provenance))
    return out
