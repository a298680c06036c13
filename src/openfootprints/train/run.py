"""``openfootprints train``: labelled scenes in, a model bundle out, the run tracked in MLflow."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from openfootprints.energy import energy_meter
from openfootprints.data.chips import (ChipDataset, LabelledScene, normalization_stats, split_blocks,
                                       validation_windows)
from openfootprints.errors import InputError
from openfootprints.io.atomic import atomic_outputs
from openfootprints.io.geo import degrees_to_crs
from openfootprints.io.provenance import config_path_beside, write_resolved_config
from openfootprints.io.raster import open_scene
from openfootprints.io.vector import read_polygons
from openfootprints.model.bundle import Bundle, fingerprint_files, save_bundle
from openfootprints.model.unet import Architecture, build_unet
from openfootprints.train.module import SegmentationModule

log = logging.getLogger(__name__)


def load_labelled_scenes(pairs: list[tuple[str, str]], cfg: DictConfig) -> list[LabelledScene]:
    """Open each (imagery, labels) pair; the first scene fixes the ground resolution unless configured."""
    if not pairs:
        raise InputError("train: give at least one --image with its --labels")
    sources, resolution = [], cfg.data.resolution_m
    bands = list(cfg.data.bands) if cfg.data.bands else None
    for image, labels in pairs:
        scene = open_scene(image, bands=bands, resolution_m=resolution)
        resolution = resolution or scene.resolution_m
        polygons = read_polygons(labels, crs=scene.crs, bounds=scene.bounds, fix_invalid=cfg.data.fix_invalid)
        if sources and len(scene.bands) != len(sources[0].scene.bands):
            raise InputError(f"{image}: {len(scene.bands)} bands, but {pairs[0][0]} has {len(sources[0].scene.bands)}")
        if sources and scene.dtype != sources[0].scene.dtype:
            raise InputError(f"{image}: {scene.dtype} pixels, but {pairs[0][0]} has {sources[0].scene.dtype}; "
                             "train on imagery of one pixel type")
        sources.append(LabelledScene(scene, polygons.geometry))
    return sources


def split_all(sources: list[LabelledScene], cfg: DictConfig) -> tuple[list, list]:
    """Spatial split of every scene into train and validation blocks, as (scene index, Window) pairs."""
    train, val = [], []
    for idx, src in enumerate(sources):
        scene = src.scene
        block_px = max(cfg.data.chip_px, round(cfg.data.block_m / scene.resolution_m))
        exclude = degrees_to_crs(cfg.data.holdout_bounds, scene.crs) if cfg.data.holdout_bounds else None
        t, v = split_blocks(scene, block_px, cfg.data.val_fraction, cfg.seed + idx, exclude)
        train += [(idx, w) for w in t]
        val += [(idx, w) for w in v]
    if not train:
        raise InputError(f"train: no training block left after the split (scenes {[s.scene.path for s in sources]})")
    return train, val


def train(cfg: DictConfig, pairs: list[tuple[str, str]], out: str | os.PathLike) -> Path:
    """Train a U-Net on labelled scenes and write the model bundle to ``out``. Returns the bundle path."""
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    sources = load_labelled_scenes(pairs, cfg)
    resolution = sources[0].scene.resolution_m
    train_blocks, val_blocks = split_all(sources, cfg)
    mean, std = normalization_stats(sources, train_blocks, seed=cfg.seed)
    erode_px = int(round(cfg.data.label_erosion_m / resolution))
    chip = cfg.data.chip_px
    gap = dict(gap_w0=cfg.data.gap_weight_w0, gap_sigma_px=cfg.data.gap_sigma_m / resolution)
    train_ds = ChipDataset(sources, train_blocks, chip, mean, std, erode_px, seed=cfg.seed, augment=True, **gap)
    sampler = torch.utils.data.RandomSampler(train_ds, replacement=True, num_samples=cfg.data.samples_per_epoch,
                                             generator=torch.Generator().manual_seed(cfg.seed))
    loader_args = dict(batch_size=cfg.train.batch_size, num_workers=cfg.data.num_workers,
                       persistent_workers=cfg.data.num_workers > 0)
    train_loader = torch.utils.data.DataLoader(train_ds, sampler=sampler, drop_last=True, **loader_args)
    val_windows = validation_windows(val_blocks, chip, cfg.data.val_chips)
    val_loader = None
    if val_windows:
        val_ds = ChipDataset(sources, val_blocks, chip, mean, std, erode_px, windows=val_windows)
        val_loader = torch.utils.data.DataLoader(val_ds, shuffle=False, **loader_args)

    arch = Architecture(encoder=cfg.model.encoder, in_channels=len(sources[0].scene.bands),
                        decoder_channels=list(cfg.model.decoder_channels))
    net = build_unet(arch, pretrained=cfg.model.pretrained)
    steps = cfg.train.max_epochs * (cfg.data.samples_per_epoch // cfg.train.batch_size)
    budget_s = cfg.train.max_minutes * 60 if cfg.train.max_minutes else None
    module = SegmentationModule(net, cfg.train.lr, cfg.train.weight_decay, cfg.train.dice_weight, steps, budget_s,
                                cfg.train.mixup_prob, cfg.train.mixup_alpha)

    mlflow_logger = make_mlflow_logger(cfg)
    mlflow_logger.log_hyperparams(flat_params(cfg, n_train_blocks=len(train_blocks), n_val_blocks=len(val_blocks)))
    trainer = L.Trainer(max_epochs=cfg.train.max_epochs, max_time={"minutes": cfg.train.max_minutes} if budget_s else None,
                        accelerator=cfg.train.accelerator, devices=1, precision=cfg.train.precision,
                        logger=mlflow_logger, enable_checkpointing=False, log_every_n_steps=5,
                        num_sanity_val_steps=0, enable_model_summary=False)
    start = time.monotonic()
    with energy_meter(cfg.tracking.country, cfg.tracking.energy) as energy:
        trainer.fit(module, train_loader, val_loader)
    seconds = time.monotonic() - start
    if energy:
        mlflow_logger.experiment.log_metric(mlflow_logger.run_id, "energy_kwh", energy["energy_kwh"])
        mlflow_logger.experiment.log_metric(mlflow_logger.run_id, "emissions_kg_co2e", energy["emissions_kg_co2e"])

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    bundle = Bundle(architecture=arch, bands=list(sources[0].scene.bands), mean=mean, std=std,
                    resolution_m=resolution, label_erosion_m=erode_px * resolution, dtype=sources[0].scene.dtype,
                    training={"config": OmegaConf.to_container(cfg, resolve=True),
                              "scenes": [list(p) for p in pairs], "epochs": trainer.current_epoch,
                              "steps": trainer.global_step, "seconds": round(seconds, 1), "metrics": metrics,
                              **energy,
                              "mlflow_run_id": mlflow_logger.run_id},
                    data_fingerprint=fingerprint_files([p for pair in pairs for p in pair]),
                    state_dict={k: v.detach().cpu() for k, v in net.state_dict().items()})
    with atomic_outputs(config_path_beside(out), out) as (tmp_config, tmp_bundle):
        write_resolved_config(cfg, tmp_config)
        save_bundle(bundle, tmp_bundle)
    path = Path(out)
    log_artifacts(mlflow_logger, [path, config_path_beside(out)])
    log.info("trained %d steps in %.0f s; bundle written to %s", trainer.global_step, seconds, path)
    return path


def make_mlflow_logger(cfg: DictConfig) -> MLFlowLogger:
    """An MLflow logger for ``tracking.uri`` (a local ``mlruns/`` folder by default)."""
    uri = str(cfg.tracking.uri)
    if uri.startswith("file:"):
        # MLflow 3 keeps the file store in maintenance mode behind this switch; it still works and needs no server.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(experiment_name=cfg.tracking.experiment, tracking_uri=uri)


def flat_params(cfg: DictConfig, **extra) -> dict:
    """The config flattened to ``section.key`` parameters for MLflow."""
    params = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            params[prefix] = node

    walk("", OmegaConf.to_container(cfg, resolve=True))
    params.update(extra)
    return params


def log_artifacts(mlflow_logger: MLFlowLogger, paths: list[Path]) -> None:
    for p in paths:
        mlflow_logger.experiment.log_artifact(mlflow_logger.run_id, str(p))

