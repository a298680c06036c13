"""``openfootprints train``: labelled scenes in, a model bundle out, the run tracked in MLflow."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import lightning as L
import numpy as np
import pandas as pd
import shapely
import torch
from lightning.pytorch.loggers import MLFlowLogger
from affine import Affine
from omegaconf import DictConfig, OmegaConf

from openfootprints.configuration import load_config
from openfootprints.data.augment import Augmentation
from openfootprints.data.chips import (ChipDataset, LabelledScene, block_probabilities, normalization_stats,
                                       split_blocks, validation_windows)
from openfootprints.data.pseudo import MixedDataset, PseudoChipDataset, PseudoLabelledScene
from openfootprints.energy import energy_meter
from openfootprints.errors import InputError
from openfootprints.io.atomic import atomic_outputs, atomic_path, check_writable
from openfootprints.io.geo import degrees_to_crs
from openfootprints.io.provenance import config_path_beside, write_resolved_config
from openfootprints.io.raster import Scene, display_rgb, open_scene
from openfootprints.io.vector import read_polygons
from openfootprints.model.bundle import Bundle, fingerprint_files, load_bundle, save_bundle
from openfootprints.model.fake_quant import simulated_int8
from openfootprints.model.lineage import lineage
from openfootprints.model.network import Architecture, build_network, load_weights
from openfootprints.monitor.drift import Profile, decoding_settings, window_profile
from openfootprints.predict.stream import ProbabilityArray
from openfootprints.training.confidence_cut import (CutChoice, choose_min_confidence, chip_outcomes,
                                                   true_polygons)
from openfootprints.training.diet import el2n_scores, prune, write_gallery
from openfootprints.training.module import Deadline, SegmentationModule
from openfootprints.vectorize.polygons import Buildings, iter_buildings

log = logging.getLogger(__name__)
WRAP_UP_S = 3.0  # of train.max_minutes kept for writing the bundle and logging it
UNTRAINED_IOU = 0.2  # validation pixel IoU below which a model is called untrained


def load_labelled_scenes(pairs: list[tuple[str, str]], cfg: DictConfig) -> list[LabelledScene]:
    """Open each (imagery, labels) pair, resampled to one ground resolution: ``data.resolution_m``, else the first
    scene's own. Each scene gets its weight from ``data.source_weights`` (default 1)."""
    if not pairs:
        raise InputError("train: give at least one --image with its --labels")
    weights = per_source(cfg.data.source_weights, 1.0, "data.source_weights", "weight", len(pairs))
    areas = per_source(cfg.data.areas, None, "data.areas", "area", len(pairs))
    sources: list[LabelledScene] = []
    resolution = cfg.data.resolution_m
    bands = list(cfg.data.bands) if cfg.data.bands else None
    for (image, labels), weight, area in zip(pairs, weights, areas):
        scene = open_scene(image, bands=bands, resolution_m=resolution)
        resolution = resolution or scene.resolution_m
        polygons = labels_on(labels, scene, cfg.data.fix_invalid, several=len(pairs) > 1)
        if sources and len(scene.bands) != len(sources[0].scene.bands):
            raise InputError(f"{image}: {len(scene.bands)} bands, but {pairs[0][0]} has {len(sources[0].scene.bands)}")
        if sources and scene.dtype != sources[0].scene.dtype:
            raise InputError(f"{image}: {scene.dtype} pixels, but {pairs[0][0]} has {sources[0].scene.dtype}; "
                             "train on imagery of one pixel type")
        sources.append(LabelledScene(scene, polygons.geometry, float(weight), labelled_area(area, scene, cfg)))
    if not any(len(src.polygons) for src in sources):  # not one building anywhere: wrong files or CRS, not negatives
        read_polygons(pairs[0][1], crs=sources[0].scene.crs, bounds=sources[0].scene.bounds,
                      fix_invalid=cfg.data.fix_invalid)  # raises, naming the file and both bounds
        raise InputError(f"train: no building in any of the labels {[labels for _, labels in pairs]}")
    return sources


def labels_on(path: str, scene: Scene, fix_invalid: bool, several: bool):
    """The label polygons of ``path`` in ``scene``'s CRS. With ``several`` sources, labels with no building on this
    scene (an empty file, or buildings elsewhere only) are a tile with no building: it teaches "nothing here",
    as a mapper means it (the run still needs a building somewhere, :func:`load_labelled_scenes`)."""
    if not several:
        return read_polygons(path, crs=scene.crs, bounds=scene.bounds, fix_invalid=fix_invalid)
    polygons = read_polygons(path, crs=scene.crs, fix_invalid=fix_invalid, allow_empty=True)
    on_scene = polygons[polygons.intersects(shapely.box(*scene.bounds))]
    if polygons.empty:
        log.info("%s: no building; %s is taken as imagery with no building", path, scene.path)
    elif on_scene.empty:  # could be a wrong CRS as well as a true negative: say so
        log.warning("%s: none of its %d buildings lies on %s (labels bounds %s, imagery bounds %s in %s): taken as "
                    "imagery with no building; if it has buildings, the labels are another place's or in another CRS",
                    path, len(polygons), scene.path, np.round(polygons.total_bounds, 1).tolist(),
                    np.round(scene.bounds, 1).tolist(), scene.crs.to_string())
    return on_scene.reset_index(drop=True)


def per_source(values, default, key: str, noun: str, n: int) -> list:
    """One value per --image from a config list (``null``: ``default`` for every source)."""
    if values is None:
        return [default] * n
    values = list(values)
    if len(values) != n:
        raise InputError(f"config: {key} has {len(values)} {noun}(s) for {n} --image(s); give one per --image")
    return values


def labelled_area(path: str | None, scene, cfg: DictConfig) -> shapely.Geometry | None:
    """The union of an area file's polygons in the scene's CRS: where that scene's labels are complete."""
    if path is None:
        return None
    polygons = read_polygons(path, crs=scene.crs, bounds=scene.bounds, fix_invalid=cfg.data.fix_invalid)
    return shapely.union_all(polygons.geometry.to_numpy())


NETWORK_STRIDE = 32  # a U-Net's input side must be a multiple of its encoder's total stride


def chips_fitted(cfg: DictConfig, sources: list[LabelledScene]) -> DictConfig:
    """``cfg`` with ``data.chip_px`` lowered to the shorter side of the smallest source (a multiple of 32 px at the
    training resolution) when a source is smaller than a chip: labelled tiles of 256 px (fAIr's, many mappers')
    are 192 px at 0.4 m. A source under 32 px is an error naming it."""
    smallest = min(sources, key=lambda src: min(src.scene.height, src.scene.width))
    side = min(smallest.scene.height, smallest.scene.width)
    if side >= cfg.data.chip_px:
        return cfg
    if side < NETWORK_STRIDE:
        raise InputError(f"{smallest.scene.path}: {smallest.scene.width}×{smallest.scene.height} px at "
                         f"{smallest.scene.resolution_m:g} m, too small to train on (at least {NETWORK_STRIDE} px a side)")
    chip_px = side // NETWORK_STRIDE * NETWORK_STRIDE
    log.info("chips of %d px (data.chip_px=%d): %s is %d×%d px at %g m", chip_px, cfg.data.chip_px,
             smallest.scene.path, smallest.scene.width, smallest.scene.height, smallest.scene.resolution_m)
    return cast(DictConfig, OmegaConf.merge(cfg, {"data": {"chip_px": chip_px}}))


SPLIT_KEYS = ("resolution_m", "chip_px", "block_m", "val_fraction", "holdout_bounds", "block_min_valid", "val_chips")


def with_split_seed(cfg: DictConfig, parent: Bundle | None, pairs: list[tuple[str, str]]) -> DictConfig:
    """``cfg`` with ``data.split_seed`` settled: the one given, else, for a continuation (``parent``) trained on the
    same scenes in the same order with the same split settings (:data:`SPLIT_KEYS`), the parent's split (so the
    blocks it was validated on, and its confidence cut chosen on, stay out of this run's training, and validation
    scores of both compare on the same chips), else the run's seed. Recorded in the bundle, so its validation
    chips can be rebuilt."""
    if cfg.data.split_seed is not None:
        return cfg
    seed = cfg.seed
    if parent is not None and same_scenes(parent, pairs, cfg.data.areas) and same_split_settings(parent, cfg):
        seed = recorded_split_seed(parent)
        log.info("the parent's train/validation split (data.split_seed=%d): its validation blocks stay out of "
                 "training", seed)
    return cast(DictConfig, OmegaConf.merge(cfg, {"data": {"split_seed": int(seed)}}))


def recorded_split_seed(bundle: Bundle) -> int:
    """The seed that drew a trained bundle's train/validation split: its ``data.split_seed``, else (bundles trained
    before it was recorded) its seed."""
    config = bundle.training.get("config", {})
    split = config.get("data", {}).get("split_seed")
    return int(config.get("seed", 0) if split is None else split)


def same_scenes(parent: Bundle, pairs: list[tuple[str, str]], areas: list | None = None) -> bool:
    """Whether ``parent`` was trained on the files of ``pairs`` (imagery, labels) in this order: the same file
    names, in order, and the same content (its data fingerprint: names, sizes and bytes), wherever the files lay
    when it was trained (a shipped bundle records paths from the data folder, e.g. ``oam/banepa/labels.geojson``)."""
    recorded = parent.training.get("scenes", [])
    names = [Path(p).name for pair in recorded for p in pair]
    if len(recorded) != len(pairs) or names != [Path(p).name for pair in pairs for p in pair]:
        return False
    files = [p for pair in pairs for p in pair] + [a for a in (areas or []) if a]
    return fingerprint_files(files) == parent.data_fingerprint


def same_split_settings(parent: Bundle, cfg: DictConfig) -> bool:
    """Whether ``cfg`` cuts the scenes into the blocks (and validation chips) ``parent``'s training did: the same
    :data:`SPLIT_KEYS` (keys it did not record at their defaults)."""
    defaults = cast(dict, OmegaConf.to_container(load_config([]).data))
    now = cast(dict, OmegaConf.to_container(cfg.data, resolve=True))
    recorded = parent.training.get("config", {}).get("data", {})
    return all(recorded.get(k, defaults[k]) == now[k] for k in SPLIT_KEYS)


def split_all(sources: list[LabelledScene], cfg: DictConfig) -> tuple[list, list]:
    """Spatial split of every scene into train and validation blocks, as (scene index, Window) pairs, drawn by
    ``data.split_seed`` (None: the run's seed; see :func:`with_split_seed`). A scene smaller than a block is one
    block of its size; scenes of one block each (separate labelled tiles) go to validation whole,
    ``data.val_fraction`` of them, when no scene has blocks to spare for it."""
    train, val, single = [], [], []
    seed = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
    for idx, src in enumerate(sources):
        scene = src.scene
        block_px = min(max(cfg.data.chip_px, round(cfg.data.block_m / scene.resolution_m)), scene.height, scene.width)
        exclude = degrees_to_crs(cfg.data.holdout_bounds, scene.crs) if cfg.data.holdout_bounds else None
        t, v = split_blocks(scene, block_px, cfg.data.val_fraction, seed + idx, exclude,
                            min_valid=cfg.data.block_min_valid, area=src.area)
        train += [(idx, w) for w in t]
        val += [(idx, w) for w in v]
        single += [(idx, t[0])] if len(t) == 1 and not v else []
    if not val and len(single) > 1 and cfg.data.val_fraction > 0:
        order = np.random.default_rng(seed).permutation(len(single))
        n_val = min(len(single) - 1, max(1, round(cfg.data.val_fraction * len(single))))
        val = [single[i] for i in sorted(order[:n_val])]
        train = [block for block in train if block not in val]
    if not train:
        raise InputError(f"train: no training block left after the split (scenes {[s.scene.path for s in sources]})")
    return train, val


def chip_settings(cfg: DictConfig, mean: list[float], std: list[float], resolution_m: float) -> dict:
    """The :class:`ChipDataset` arguments every chip of a run shares (sizes turned from metres into pixels)."""
    return dict(chip_px=cfg.data.chip_px, mean=mean, std=std, erode_px=int(round(cfg.data.label_erosion_m / resolution_m)),
                gap_w0=cfg.data.gap_weight_w0, gap_sigma_px=cfg.data.gap_sigma_m / resolution_m,
                target=cfg.data.target, ramp_px=cfg.data.energy_m / resolution_m)


def train(cfg: DictConfig, pairs: list[tuple[str, str]], out: str | os.PathLike,
          pseudo: list[tuple[str, str]] | None = None, provenance: dict | None = None) -> Path:
    """Train a U-Net on labelled scenes and write the model bundle to ``out``. Returns the bundle path.

    ``pseudo``: (imagery, teacher probability raster) pairs whose chips join training with soft targets
    (noisy-student self-training, see :mod:`openfootprints.training.selftrain`); ``provenance`` is stored in
    the bundle's training record.
    """
    check_writable(out)  # before any work: training must not end in weights that cannot be written
    started = time.monotonic()  # train.max_minutes counts from here: reading the data is part of the run
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    sources = load_labelled_scenes(pairs, cfg)
    cfg = chips_fitted(cfg, sources)
    resolution = sources[0].scene.resolution_m
    parent = load_bundle(cfg.train.init) if cfg.train.init else None
    cfg = with_split_seed(cfg, parent, pairs)
    train_blocks, val_blocks = split_all(sources, cfg)
    if parent and cfg.train.init_normalization == "parent":
        mean, std = parent.mean, parent.std
    else:  # a new model, or a parent adapted to this imagery's own statistics
        mean, std = normalization_stats(sources, train_blocks, seed=cfg.seed)
    chips = chip_settings(cfg, mean, std, resolution)
    arch = Architecture(arch=cfg.model.arch, encoder=cfg.model.encoder, in_channels=len(sources[0].scene.bands),
                        decoder_channels=list(cfg.model.decoder_channels), dropout=cfg.model.dropout,
                        drop_path=cfg.model.drop_path)
    loader_args = dict(batch_size=cfg.train.batch_size, num_workers=cfg.data.num_workers,
                       persistent_workers=cfg.data.num_workers > 0)
    val_windows = validation_windows(val_blocks, cfg.data.chip_px, cfg.data.val_chips)
    val_loader = None
    if val_windows:
        val_ds = ChipDataset(sources, val_blocks, windows=val_windows, **chips)
        val_loader = torch.utils.data.DataLoader(val_ds, shuffle=False, **loader_args)

    mlflow_logger = make_mlflow_logger(cfg, out)
    mlflow_logger.log_hyperparams(flat_params(cfg, n_train_blocks=len(train_blocks), n_val_blocks=len(val_blocks)))
    start = time.monotonic()
    diet: dict = {}
    with energy_meter(cfg.tracking.country, cfg.tracking.energy) as energy:
        if cfg.diet.keep < 1:
            train_blocks, diet = data_diet(cfg, sources, train_blocks, arch, chips, Path(out))
        train_ds: ChipDataset | MixedDataset
        train_ds = ChipDataset(sources, train_blocks, seed=cfg.seed, augment=augmentation(cfg, resolution),
                               probabilities=block_probabilities(sources, train_blocks),
                               min_valid=cfg.data.chip_min_valid, **chips)
        if pseudo:
            train_ds = MixedDataset(train_ds, pseudo_dataset(cfg, pseudo, resolution, mean, std),
                                    cfg.selftrain.pseudo_fraction, cfg.seed)
        sampler = torch.utils.data.RandomSampler(train_ds, replacement=True, num_samples=cfg.data.samples_per_epoch,
                                                 generator=torch.Generator().manual_seed(cfg.seed))
        train_loader = torch.utils.data.DataLoader(train_ds, sampler=sampler, drop_last=True, **loader_args)
        net = build_network(arch, pretrained=cfg.model.pretrained and parent is None)
        decode = decoding(cfg, chips["erode_px"] * resolution)  # the erosion as trained, whole pixels
        chip_decode = ChipDecoding(resolution, decode["threshold"], decode.get("seed_threshold"),
                                   decode["label_erosion_m"], cfg.detect.min_area_m2, cfg.detect.simplify_m)
        inherited = parent.min_confidence if parent and parent.threshold == decode["threshold"] else 0.0
        before = None
        if parent:
            start_from(net, parent, arch, cfg.train.init)
            if val_windows:  # what the run has to beat
                before = parent_on_chips(net, parent, cfg, sources, val_blocks, val_windows, resolution, inherited)
        steps = cfg.train.max_epochs * (cfg.data.samples_per_epoch // cfg.train.batch_size)
        deadline = started + cfg.train.max_minutes * 60 - WRAP_UP_S if cfg.train.max_minutes else None
        trainer = L.Trainer(max_epochs=cfg.train.max_epochs, callbacks=[Deadline(deadline)] if deadline else None,
                            accelerator=cfg.train.accelerator, devices=1, precision=cfg.train.precision,
                            logger=mlflow_logger, enable_checkpointing=False, log_every_n_steps=5,
                            num_sanity_val_steps=0, enable_model_summary=False)
        with simulated_int8(net) if cfg.train.qat else contextlib.nullcontext():  # plain convolutions after it
            module = segmentation_module(cfg, net, steps, deadline - time.monotonic() if deadline else None)
            trainer.fit(module, train_loader, val_loader)
        reference = ChipDataset(sources, val_blocks or train_blocks, **chips, windows=val_windows
                                or validation_windows(train_blocks, cfg.data.chip_px, cfg.data.val_chips))
        profile, cut = reference_profile(net, reference, arch.in_channels, cfg.train.batch_size, chip_decode,
                                         choose_cut=bool(val_windows), inherited=inherited)
    seconds = time.monotonic() - start
    if energy:
        mlflow_logger.experiment.log_metric(mlflow_logger.run_id, "energy_kwh", energy["energy_kwh"])
        mlflow_logger.experiment.log_metric(mlflow_logger.run_id, "emissions_kg_co2e", energy["emissions_kg_co2e"])

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    untrained = untrained_warning(metrics, trainer.global_step)
    if untrained:
        log.warning(untrained)
    bundle = Bundle(architecture=arch, bands=list(sources[0].scene.bands), mean=mean, std=std,
                    resolution_m=resolution, dtype=sources[0].scene.dtype, **decode,
                    min_confidence=cut.min_confidence, profile=profile.to_dict(),
                    training={"config": OmegaConf.to_container(cfg, resolve=True),
                              "confidence_cut": cut.to_dict() if val_windows or cut.inherited else None,
                              "scenes": [list(p) for p in pairs], **({"areas": list(cfg.data.areas)} if cfg.data.areas else {}),
                              "epochs": trainer.current_epoch,
                              "steps": trainer.global_step, "seconds": round(seconds, 1), "metrics": metrics,
                              **energy, **({"diet": diet} if diet else {}), **(provenance or {}),
                              **({"parent": {"path": str(cfg.train.init), "fingerprint": parent.data_fingerprint,
                                             "steps": parent.training.get("steps"),
                                             **({"validation": before.to_dict()} if before else {})},
                                  "ancestry": lineage(parent)} if parent else {}),
                              "mlflow_run_id": mlflow_logger.run_id, **({"warning": untrained} if untrained else {})},
                    data_fingerprint=fingerprint_files([p for pair in pairs for p in pair]
                                                     + [a for a in (cfg.data.areas or []) if a]),
                    state_dict={k: v.detach().cpu() for k, v in net.state_dict().items()})
    with atomic_outputs(config_path_beside(out), out) as (tmp_config, tmp_bundle):
        write_resolved_config(cfg, tmp_config)
        save_bundle(bundle, tmp_bundle)
    path = Path(out)
    log_artifacts(mlflow_logger, [path, config_path_beside(out)] + [Path(p) for p in diet.get("files", [])])
    log.info("trained %d steps in %.0f s; bundle written to %s", trainer.global_step, seconds, path)
    return path


def parent_on_chips(net: torch.nn.Module, parent: Bundle, cfg: DictConfig, sources: list[LabelledScene],
                    blocks: list, windows: list, resolution_m: float, inherited: float) -> CutChoice:
    """The parent (its weights in ``net``, before any step) scored on this run's validation chips (``windows`` of
    ``blocks``) as detection would run it: its own band normalization and decoding, a confidence cut chosen on the
    chips the way the run's own is (``inherited``: the cut where they hold too few buildings). Leaves ``net`` in
    the mode it found and the random number generators as they were (the run draws what it would have)."""
    chips = ChipDataset(sources, blocks, windows=windows, **chip_settings(cfg, parent.mean, parent.std, resolution_m))
    was_training = net.training
    with torch.random.fork_rng():
        _, cut = reference_profile(net, chips, parent.architecture.in_channels, cfg.train.batch_size,
                                   bundle_decoding(parent, cfg, resolution_m), inherited=inherited)
    net.train(was_training)
    return cut


def bundle_decoding(bundle: Bundle, cfg: DictConfig, resolution_m: float, with_cut: bool = False) -> ChipDecoding:
    """How detection decodes a trained bundle's output on chips at ``resolution_m`` (its threshold, seeds and
    growth; ``cfg.detect``'s minimum area and simplification), with its confidence cut or none."""
    return ChipDecoding(resolution_m, bundle.threshold, bundle.seed_threshold, bundle.label_erosion_m,
                        cfg.detect.min_area_m2, cfg.detect.simplify_m, bundle.min_confidence if with_cut else 0.0)


@dataclass(frozen=True)
class ChipDecoding:
    """How detection turns a chip's output into buildings (the bundle's decoding, :func:`decoding`, and
    ``detect``'s settings); sizes in metres on the ground, ``resolution_m`` metres per pixel."""

    resolution_m: float
    threshold: float
    seed_threshold: float | None
    grow_m: float
    min_area_m2: float
    simplify_m: float
    min_confidence: float = 0.0

    @property
    def transform(self) -> Affine:
        """Chip pixels → metres: x from 0 to the right, y from 0 down to −height."""
        return Affine(self.resolution_m, 0, 0, 0, -self.resolution_m, 0)

    def buildings(self, output: np.ndarray, valid: np.ndarray) -> Buildings:
        """The buildings detection finds in one chip's ``output`` (H, W) in [0, 1], in chip metres
        (:attr:`transform`), before the confidence cut; pixels outside ``valid`` (H, W) bool are background."""
        source = ProbabilityArray("chip", output.shape[1], output.shape[0], None, self.transform)
        source.array[:] = np.where(valid, np.round(output * 255), 0).astype(np.uint8)
        (found,) = iter_buildings(source, self.threshold, self.grow_m, self.simplify_m, self.min_area_m2,
                                  strip_px=len(output), tile_px=None, res_m=self.resolution_m,
                                  seed_threshold=self.seed_threshold)
        return found

    def touches_edge(self, polygons: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """(n,) bool: which of ``polygons`` (chip metres) reach within half a pixel of a chip's edge (H, W pixels)."""
        bounds = shapely.bounds(polygons).reshape(-1, 4)
        width_m, height_m, half = shape[1] * self.resolution_m, shape[0] * self.resolution_m, self.resolution_m / 2
        return ((bounds[:, 0] < half) | (bounds[:, 2] > width_m - half) | (bounds[:, 3] > -half)
                | (bounds[:, 1] < -height_m + half))

    def confidences(self, output: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(n,) confidence of each building detection keeps in one chip (:meth:`buildings`, then the cut). A
        building that reaches the chip's right or bottom edge is left to the chip beyond it (chips tile the
        validation blocks: each building is counted once, the half-open way)."""
        found = self.buildings(output, valid)
        bounds = shapely.bounds(found.polygons)
        width_m, height_m = output.shape[1] * self.resolution_m, output.shape[0] * self.resolution_m
        inside = (bounds[:, 2] < width_m - self.resolution_m / 2) & (bounds[:, 1] > -height_m + self.resolution_m / 2)
        keep = inside & (shapely.area(found.polygons) >= self.min_area_m2) & (found.confidence >= self.min_confidence)
        return found.confidence[keep]

    def settings(self) -> dict[str, float]:
        """What a detection must use for its buildings to compare with these (:attr:`Profile.decoding`)."""
        return decoding_settings(self.threshold, self.min_area_m2, self.min_confidence)


def reference_profile(net: torch.nn.Module, chips: ChipDataset, n_bands: int, batch_size: int,
                      decoding: ChipDecoding, choose_cut: bool = True,
                      inherited: float = 0.0) -> tuple[Profile, CutChoice]:
    """What the trained network sees on ``chips`` (the validation chips; the training chips, unaugmented, when
    there is no validation split), and the buildings detection finds in them: the reference each detection is
    compared with (:mod:`openfootprints.monitor`). With ``choose_cut``, the confidence cut is chosen on these
    chips first (:mod:`openfootprints.training.confidence_cut`) and the profile counts the buildings it keeps;
    ``inherited`` (a parent's cut) is the cut where these chips hold too few buildings to choose one."""
    profile = Profile.empty(n_bands)
    device = next(net.parameters()).device
    net.eval()
    outputs: list[tuple[np.ndarray, np.ndarray]] = []
    loader = torch.utils.data.DataLoader(chips, batch_size=batch_size, shuffle=False)
    with torch.inference_mode():
        for image, _, weight in loader:
            output = torch.sigmoid(net(image.to(device)).float())[:, 0].cpu().numpy()
            valid = weight[:, 0].numpy() > 0
            profile.add_pixels(window_profile(image.numpy(), valid, output))
            outputs += zip(output, valid)
            profile.area_m2 += float(valid.sum()) * decoding.resolution_m**2
    cut = (validation_cut(outputs, chips, decoding, inherited) if choose_cut
           else choose_min_confidence(np.zeros(0), np.zeros(0, bool), n_true=0, inherited=inherited))
    decoding = replace(decoding, min_confidence=cut.min_confidence)
    profile.decoding = decoding.settings()
    for output, valid in outputs:
        profile.add_buildings(decoding.confidences(output, valid))
    return profile, cut


def rechoose_confidence_cut(bundle: Bundle) -> tuple[Profile, CutChoice]:
    """The confidence cut and reference profile of a trained bundle, measured again on its validation chips
    (:func:`bundle_validation_chips`); for bundles trained before the cut existed. Set ``bundle.min_confidence``
    and ``bundle.profile`` from them to use it."""
    chips, decode, batch_size = bundle_validation_chips(bundle)
    return reference_profile(bundle.network(), chips, bundle.architecture.in_channels, batch_size,
                             replace(decode, min_confidence=0.0))


def bundle_validation_chips(bundle: Bundle) -> tuple[ChipDataset, ChipDecoding, int]:
    """A trained bundle's validation chips, rebuilt from its training record (the same scenes, config and seed
    give the same split), how detection decodes them (with the bundle's confidence cut) and the training batch
    size. Raises :class:`InputError` when the record names no validation split or its scenes are not here."""
    defaults = OmegaConf.to_container(load_config([]))  # keys added since the bundle was trained get their default
    cfg = cast(DictConfig, OmegaConf.merge(OmegaConf.create(defaults), bundle.training.get("config", {})))
    pairs = [(image, labels) for image, labels in bundle.training.get("scenes", [])]
    missing = [p for pair in pairs for p in pair if not os.path.exists(p)]
    if not pairs:
        raise InputError("the bundle's training record names no training data; its validation chips cannot be "
                         "rebuilt")
    if missing:
        raise InputError(f"{missing[0]}: not here (named in the bundle's training record); its validation chips "
                         "cannot be rebuilt")
    sources = load_labelled_scenes(pairs, cfg)
    _, val_blocks = split_all(sources, cfg)
    windows = validation_windows(val_blocks, cfg.data.chip_px, cfg.data.val_chips)
    if not windows:
        raise InputError(f"{pairs[0][0]}: the bundle was trained without a validation split")
    chips = ChipDataset(sources, val_blocks, windows=windows, **chip_settings(cfg, bundle.mean, bundle.std,
                                                                              bundle.resolution_m))
    return chips, bundle_decoding(bundle, cfg, bundle.resolution_m, with_cut=True), int(cfg.train.batch_size)


def validation_cut(outputs: list[tuple[np.ndarray, np.ndarray]], chips: ChipDataset,
                   decoding: ChipDecoding, inherited: float = 0.0) -> CutChoice:
    """The confidence cut that maximizes F1 over the chips (``outputs``: each chip's (output, valid), in the
    order of ``chips.windows``; valid: imagery inside the labelled area), matched against each chip's true
    buildings there; ``inherited`` where they hold too few (:func:`choose_min_confidence`)."""
    return choose_min_confidence(*validation_matches(outputs, chips, decoding), inherited=inherited)


def validation_matches(outputs: list[tuple[np.ndarray, np.ndarray]], chips: ChipDataset,
                       decoding: ChipDecoding) -> tuple[np.ndarray, np.ndarray, int]:
    """The buildings found in the chips' ``outputs`` (before any cut) matched to the chips' true buildings at
    IoU 0.5: (n,) confidences, (n,) bool true positive, and the number of true buildings. Buildings under
    ``min_area_m2`` are dropped; those cut by a chip's edge are matched but not counted, as are true ones."""
    confidence, is_tp, n_true = [], [], 0
    for (output, valid), window in zip(outputs, chips.windows or []):
        truth = true_polygons(np.where(valid, chips.raw_chip(*window).ids, 0), decoding.transform)
        found = decoding.buildings(output, valid)
        big = shapely.area(found.polygons) >= decoding.min_area_m2  # what detection keeps
        polygons, found_confidence = found.polygons[big], found.confidence[big]
        outcome = chip_outcomes(polygons, found_confidence, truth)
        # buildings cut by the chip's edge are matched but not counted: detection sees them whole, with context
        counted = ~decoding.touches_edge(polygons, output.shape)
        confidence.append(found_confidence[counted])
        is_tp.append(outcome[counted])
        n_true += int((~decoding.touches_edge(truth, output.shape)).sum())
    return (np.concatenate(confidence or [np.zeros(0)]), np.concatenate(is_tp or [np.zeros(0, bool)]), n_true)


def start_from(net: torch.nn.Module, parent: Bundle, arch: Architecture, path: str) -> None:
    """Load a parent bundle's weights into ``net`` (train.init): same architecture and input bands required; its
    normalization is kept (the caller uses the parent's mean and std)."""
    shape = ("arch", "encoder", "in_channels", "decoder_channels")  # dropout and drop path may differ: no weights
    if any(getattr(parent.architecture, k) != getattr(arch, k) for k in shape):
        raise InputError(f"{path}: train.init's architecture {parent.architecture.to_dict()} differs from this "
                         f"run's {arch.to_dict()}; set model.* to match it")
    load_weights(net, parent.state_dict)


def untrained_warning(metrics: dict, steps: int) -> str | None:
    """A warning when validation says the model has not learnt buildings yet (pixel IoU below 0.2)."""
    iou = metrics.get("val_pixel_iou")
    if iou is None or iou >= UNTRAINED_IOU:
        return None
    return (f"the model looks untrained: validation pixel IoU {iou:.2f} after {steps} steps; its buildings will be "
            "wrong; train longer (train.max_minutes) or check the labels against the imagery")


def decoding(cfg: DictConfig, erosion_m: float) -> dict:
    """The bundle fields that tell detection how to turn the model's output into instances.

    Eroded masks: components of probability ≥ 0.5, grown back by the erosion. Energy: seeds where the output is
    ≥ 0.75 (at least about half of ``energy_m`` inside a building's outline), grown over the footprint (≥ 0.5)
    by up to ``energy_m``.
    """
    if cfg.data.target == "energy":
        return dict(target="energy", threshold=0.5, seed_threshold=0.75, label_erosion_m=float(cfg.data.energy_m))
    return dict(target="eroded", threshold=0.5, label_erosion_m=erosion_m)


def augmentation(cfg: DictConfig, resolution_m: float) -> Augmentation:
    """The configured augmentation for chips of ``resolution_m`` metres per pixel (metres turned into pixels)."""
    a = cfg.augment
    return Augmentation(flips=a.flips, jitter=a.jitter, mosaic_prob=a.mosaic_prob,
                        copy_paste_prob=a.copy_paste_prob, copy_paste_max=a.copy_paste_max, zoom=a.zoom,
                        coarsen=max(1.0, a.coarsen_to_m / resolution_m), blur_px=a.blur_m / resolution_m,
                        noise=a.noise, saturation=a.saturation)


def segmentation_module(cfg: DictConfig, net: torch.nn.Module, steps: int, budget_s: float | None,
                        ema: bool = True) -> SegmentationModule:
    """The configured recipe's module; ``ema`` False: no moving average (the data diet's short scoring runs,
    whose few steps an average would leave near their first)."""
    t = cfg.train
    if ema and t.ema_decay > 0 and t.precision not in ("32-true", "32", "bf16-mixed", "16-mixed"):
        raise InputError(f"train.ema_decay={t.ema_decay:g} with train.precision={t.precision}: the average needs "
                         "float32 weights (32-true, or a mixed precision)")
    return SegmentationModule(net, t.lr, t.weight_decay, t.dice_weight, steps, budget_s, t.mixup_prob, t.mixup_alpha,
                              t.rdrop_alpha, freeze_encoder=t.freeze_encoder,
                              anchor_decay=t.anchor_decay if t.init else 0.0, ema_decay=t.ema_decay if ema else 0.0)


def short_fit(cfg: DictConfig, arch: Architecture, dataset: ChipDataset, steps: int,
              seed: int) -> torch.nn.Module:
    """A network trained for ``steps`` steps on ``dataset`` with the configured recipe; no logging, no validation."""
    L.seed_everything(seed, workers=True)
    net = build_network(arch, pretrained=cfg.model.pretrained)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=steps * cfg.train.batch_size,
                                             generator=torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(dataset, sampler=sampler, drop_last=True, batch_size=cfg.train.batch_size,
                                         num_workers=cfg.data.num_workers)
    trainer = L.Trainer(max_steps=steps, accelerator=cfg.train.accelerator, devices=1, precision=cfg.train.precision,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(segmentation_module(cfg, net, steps, None, ema=False), loader)
    return net.eval()


def data_diet(cfg: DictConfig, sources: list[LabelledScene], blocks: list, arch: Architecture, chips: dict,
              out: Path) -> tuple[list, dict]:
    """EL2N data diet: tile the training blocks into chips, score them with ``diet.seeds`` short runs of
    ``diet.steps`` steps, keep ``diet.keep`` of them after dropping the top ``diet.offset``.

    Returns the kept chips (as blocks of one chip each) and a record; writes ``OUT.el2n.csv`` (every chip,
    its bounds in the scene's CRS, score and whether kept) and ``OUT.el2n.png`` (the highest scores).
    """
    d = cfg.diet
    candidates = validation_windows(blocks, cfg.data.chip_px, limit=2**31)
    scoring = ChipDataset(sources, blocks, windows=candidates, **chips)
    scores = np.zeros(len(candidates))
    for k in range(d.seeds):
        seed = cfg.seed + 1000 + k
        learner = ChipDataset(sources, blocks, seed=seed, augment=augmentation(cfg, sources[0].scene.resolution_m),
                              **chips)
        scores += el2n_scores(short_fit(cfg, arch, learner, d.steps, seed), scoring, cfg.train.batch_size)
    scores /= max(d.seeds, 1)
    kept = prune(scores, d.keep, d.offset)
    csv_path, png_path = Path(f"{out}.el2n.csv"), Path(f"{out}.el2n.png")
    write_scores(csv_path, sources, candidates, scores, kept)
    top = np.argsort(-scores, kind="stable")[: d.gallery]
    raws = [scoring.raw_chip(*candidates[i]) for i in top]
    write_gallery(png_path, [display_rgb(r.image, r.valid) for r in raws], [r.ids > 0 for r in raws],
                  [float(scores[i]) for i in top],
                  [f"{Path(sources[candidates[i][0]].scene.path).name} col {candidates[i][1].col_off} "
                   f"row {candidates[i][1].row_off}" for i in top])
    log.info("data diet: kept %d of %d chips (EL2N %.3f–%.3f)", len(kept), len(candidates),
             scores[kept].min(), scores[kept].max())
    record = {"candidates": len(candidates), "kept": len(kept), "keep": d.keep, "offset": d.offset,
              "seeds": d.seeds, "steps": d.steps, "files": [str(csv_path), str(png_path)]}
    return [candidates[i] for i in kept], record


def write_scores(path: Path, sources: list[LabelledScene], windows: list, scores: np.ndarray,
                 kept: np.ndarray) -> None:
    """One row per chip: scene, pixel window, bounds in the scene's CRS, EL2N score, kept or not."""
    rows = []
    for (idx, w), score in zip(windows, scores):
        scene = sources[idx].scene
        west, south, east, north = scene.window_box(w).bounds
        rows.append({"scene": scene.path, "col_off": int(w.col_off), "row_off": int(w.row_off),
                     "size_px": int(w.width), "west": west, "south": south, "east": east, "north": north,
                     "crs": str(scene.crs), "el2n": float(score)})
    frame = pd.DataFrame(rows)
    frame["kept"] = False
    frame.loc[kept, "kept"] = True
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def pseudo_dataset(cfg: DictConfig, pseudo: list[tuple[str, str]], resolution: float, mean: list[float],
                   std: list[float]) -> PseudoChipDataset:
    """Chips of the pseudo-labelled scenes, from blocks outside ``data.holdout_bounds``, at the training resolution."""
    bands = list(cfg.data.bands) if cfg.data.bands else None
    sources, blocks = [], []
    for idx, (image, probabilities) in enumerate(pseudo):
        scene = open_scene(image, bands=bands, resolution_m=resolution)
        block_px = max(cfg.data.chip_px, round(cfg.data.block_m / scene.resolution_m))
        exclude = degrees_to_crs(cfg.data.holdout_bounds, scene.crs) if cfg.data.holdout_bounds else None
        usable, _ = split_blocks(scene, block_px, 0.0, cfg.seed + idx, exclude)
        sources.append(PseudoLabelledScene(scene, Path(probabilities)))
        blocks += [(idx, w) for w in usable]
    return PseudoChipDataset(sources, blocks, cfg.data.chip_px, mean, std, seed=cfg.seed + 7,
                             augment=augmentation(cfg, resolution))


def make_mlflow_logger(cfg: DictConfig, out: str | os.PathLike) -> MLFlowLogger:
    """An MLflow logger for ``tracking.uri``; by default an ``mlruns/`` folder beside the bundle ``out``, not
    wherever the command happens to run. The experiment is made here, once and quietly."""
    uri = str(cfg.tracking.uri or f"file:{Path(out).resolve().parent / 'mlruns'}")
    if uri.startswith("file:"):
        # MLflow 3 keeps the file store in maintenance mode behind this switch; it still works and needs no server.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    if client.get_experiment_by_name(cfg.tracking.experiment) is None:
        client.create_experiment(cfg.tracking.experiment)
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

