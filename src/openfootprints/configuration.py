"""Configuration: the packaged Hydra config (``conf/config.yaml``) with overrides, checked in one place.

Every entry point — the command line, the Python API (:mod:`openfootprints.api`), the service — loads its settings
through :func:`load_config`, so a value that would fail deep inside a stage is refused up front, naming the key, and
an unknown key gets a did-you-mean.
"""

from __future__ import annotations

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from openfootprints.errors import InputError
from openfootprints.model.architectures import ARCHITECTURES


def load_config(overrides: list[str]) -> DictConfig:
    """The packaged ``conf/config.yaml`` with ``key=value`` overrides applied (Hydra's override grammar)."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise InputError(f"unexpected argument(s) {bad}; overrides look like key=value (e.g. train.max_minutes=5)")
    try:
        with initialize_config_module(config_module="openfootprints.conf", version_base="1.3"):
            return check_config(compose(config_name="config", overrides=overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise InputError(f"config: {str(err).splitlines()[0]}{did_you_mean(overrides)}") from err


def did_you_mean(overrides: list[str]) -> str:
    """`` (did you mean data.chip_px?)`` for the first override whose key is not in the config, else ''."""
    import difflib

    with initialize_config_module(config_module="openfootprints.conf", version_base="1.3"):
        keys = flat_keys(OmegaConf.to_container(compose(config_name="config"), resolve=False))
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
            return f" (no such key; did you mean {close[0]}?)" if close else " (no such key)"
    return ""


def flat_keys(node, prefix: str = "") -> list[str]:
    """Every ``section.key`` of a nested config dict."""
    if not isinstance(node, dict):
        return [prefix]
    return [k for key, value in node.items() for k in flat_keys(value, f"{prefix}.{key}" if prefix else key)]


CHECKS = [
    ("data.chip_px", lambda v: v >= 32 and v % 32 == 0, "a multiple of 32"),
    ("data.block_m", lambda v: v > 0, "positive"),
    ("data.val_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.label_erosion_m", lambda v: v >= 0, "0 or more"),
    ("data.target", lambda v: v in ("eroded", "energy"), "eroded or energy"),
    ("data.energy_m", lambda v: v > 0, "positive"),
    ("data.block_min_valid", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("data.chip_min_valid", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("data.source_weights", lambda v: v is None or all(w >= 0 for w in v), "null or a list of weights ≥ 0"),
    ("data.areas", lambda v: v is None or all(a is None or isinstance(a, str) for a in v),
     "null or a list of polygon files (or null), one per --image"),
    ("augment.zoom", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("augment.coarsen_to_m", lambda v: v >= 0, "0 or more"),
    ("augment.blur_m", lambda v: v >= 0, "0 or more"),
    ("augment.noise", lambda v: v >= 0, "0 or more"),
    ("augment.saturation", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.samples_per_epoch", lambda v: v >= 1, "1 or more"),
    ("data.gap_weight_w0", lambda v: v >= 0, "0 or more"),
    ("data.gap_sigma_m", lambda v: v > 0, "positive"),
    ("train.mixup_prob", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("train.mixup_alpha", lambda v: v > 0, "positive"),
    ("train.rdrop_alpha", lambda v: v >= 0, "0 or more"),
    ("model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.drop_path", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("augment.jitter", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("augment.mosaic_prob", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("augment.copy_paste_prob", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("augment.copy_paste_max", lambda v: v >= 1, "1 or more"),
    ("diet.keep", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("diet.offset", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("diet.seeds", lambda v: v >= 1, "1 or more"),
    ("diet.steps", lambda v: v >= 1, "1 or more"),
    ("diet.gallery", lambda v: v >= 0, "0 or more"),
    ("selftrain.rounds", lambda v: v >= 1, "1 or more"),
    ("selftrain.pseudo_fraction", lambda v: 0 < v < 1, "in (0, 1)"),
    ("train.batch_size", lambda v: v >= 1, "1 or more"),
    ("train.init_normalization", lambda v: v in ("parent", "adapt"), "parent or adapt"),
    ("finetune.lr", lambda v: v > 0, "positive"),
    ("suggest.n", lambda v: v >= 1, "1 or more"),
    ("model.arch", lambda v: v in ARCHITECTURES, "one of " + ", ".join(ARCHITECTURES)),
    ("evaluate.min_on_imagery", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("suggest.chip_m", lambda v: v > 0, "positive"),
    ("suggest.min_valid", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("suggest.novelty_weight", lambda v: v >= 0, "0 or more"),
    ("finetune.max_minutes", lambda v: v > 0, "positive"),
    ("train.max_epochs", lambda v: v >= 1, "1 or more"),
    ("detect.window_px", lambda v: v is None or (v >= 32 and v % 32 == 0), "a multiple of 32"),
    ("detect.halo_m", lambda v: v is None or v >= 0, "0 or more"),
    ("detect.batch_size", lambda v: v >= 1, "1 or more"),
    ("detect.gdal_cache_mb", lambda v: v >= 16, "16 or more"),
    ("detect.tta", lambda v: v in (1, 2, 4, 8), "1, 2, 4 or 8"),
    ("detect.threshold", lambda v: v is None or 0 < v < 1, "between 0 and 1"),
    ("detect.min_area_m2", lambda v: v >= 0, "0 or more"),
    ("detect.min_confidence", lambda v: v is None or 0 <= v < 1, "null or in [0, 1)"),
    ("detect.simplify_m", lambda v: v >= 0, "0 or more"),
    ("detect.regularize_m", lambda v: v >= 0, "0 or more"),
    ("detect.max_building_m", lambda v: v > 0, "positive"),
    ("serve.max_upload_mb", lambda v: v > 0, "positive"),
    ("serve.upload_seconds", lambda v: v > 0, "positive"),
    ("serve.max_megapixels", lambda v: v > 0, "positive"),
    ("serve.max_seconds", lambda v: v > 0, "positive"),
    ("serve.max_concurrent", lambda v: isinstance(v, int) and v >= 1, "a whole number, 1 or more"),
    ("serve.max_queued", lambda v: isinstance(v, int) and v >= 0, "a whole number, 0 or more"),
    ("view.port", lambda v: isinstance(v, int) and 0 <= v <= 65535, "a port number, 0–65535"),
    ("view.pmtiles_above", lambda v: isinstance(v, int) and v >= 0, "a whole number, 0 or more"),
    ("view.tiles_min_zoom", lambda v: isinstance(v, int) and 0 <= v <= 24, "a zoom, 0–24"),
    ("view.tiles_max_zoom", lambda v: isinstance(v, int) and 0 <= v <= 24, "a zoom, 0–24"),
    ("view.imagery_zoom_levels", lambda v: isinstance(v, int) and 0 <= v <= 8, "0–8"),
    ("evaluate.iou", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("scale.zoom", lambda v: isinstance(v, int) and 0 <= v <= 22, "a whole number, 0–22"),
    ("scale.engine", lambda v: v in ("local", "ray"), "local or ray"),
    ("scale.retries", lambda v: isinstance(v, int) and v >= 0, "a whole number, 0 or more"),
    ("scale.ray_actors", lambda v: v is None or (isinstance(v, int) and v >= 1), "null or 1 or more"),
    ("synth.width", lambda v: v >= 16, "16 or more"),
    ("synth.height", lambda v: v >= 16, "16 or more"),
    ("synth.resolution_m", lambda v: v > 0, "positive"),
]


def check_config(cfg: DictConfig) -> DictConfig:
    """Refuse values that would fail deep inside a stage, naming the key."""
    for key, ok, meaning in CHECKS:
        value = OmegaConf.select(cfg, key)
        try:
            good = ok(value)
        except TypeError:  # a string or a list where a number belongs
            raise InputError(f"config: {key}={value} must be a number, {meaning}") from None
        if not good:
            raise InputError(f"config: {key}={value} must be {meaning}")
    for key in ("data.holdout_bounds", "detect.bbox", "evaluate.bbox"):
        box = OmegaConf.select(cfg, key)
        if box is not None and (len(box) != 4 or not (box[0] < box[2] and box[1] < box[3])):
            raise InputError(f"config: {key}={list(box)} must be [west, south, east, north] with west < east, south < north")
        if box is not None and not (-180 <= box[0] <= 180 and -180 <= box[2] <= 180 and -90 <= box[1] <= 90
                                    and -90 <= box[3] <= 90):
            raise InputError(f"config: {key}={list(box)} must be in degrees (longitude, latitude; EPSG:4326): "
                             "[west, south, east, north], not in the imagery's map units")
    return cfg
