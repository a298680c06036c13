"""Configuration: the packaged Hydra config (``conf/config.yaml``, typed by ``conf/schema.py``) with overrides,
checked in one place.

Every entry point — the command line, the Python API (:mod:`openfootprints.api`), the service — loads its settings
through :func:`load_config`, so a value that would fail deep inside a stage is refused up front, naming the key, and
an unknown key gets a did-you-mean.
"""

from __future__ import annotations

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from openfootprints.conf.schema import Config, checked_keys
from openfootprints.errors import InputError

ConfigStore.instance().store(name="openfootprints_schema", node=Config)  # config.yaml's first default


def load_config(overrides: list[str]) -> DictConfig:
    """The packaged ``conf/config.yaml`` with ``key=value`` overrides applied (Hydra's override grammar)."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise InputError(f"unexpected argument(s) {bad}; overrides look like key=value (e.g. train.max_minutes=5)")
    try:
        with initialize_config_module(config_module="openfootprints.conf", version_base="1.3"):
            return check_config(compose(config_name="config", overrides=overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise InputError(f"config: {config_error(err)}{did_you_mean(overrides)}") from err


KINDS = {"Integer": "a whole number", "Float": "a number", "Boolean": "true or false"}  # OmegaConf's type names


def config_error(err: Exception) -> str:
    """The first line of a Hydra or OmegaConf error; for a value of the wrong type (the schema's types,
    conf/schema.py), the key, the value and what it must be: ``train.batch_size=abc must be a whole number, 1 or
    more``."""
    cause = err.__cause__ if isinstance(err.__cause__, ValidationError) else err
    if not (isinstance(cause, ValidationError) and getattr(cause, "full_key", None)):
        return str(err).splitlines()[0]
    message = str(cause.msg).splitlines()[0]
    kind = KINDS.get(message.rsplit("converted to ", 1)[-1]) if "converted to " in message else None
    if kind is None:
        return f"{cause.full_key}={cause.value}: {message}"
    meaning = {key: meaning for key, _, meaning in checked_keys()}.get(str(cause.full_key))
    return f"{cause.full_key}={cause.value} must be {kind}" + (f", {meaning}" if meaning else "")


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


def check_config(cfg: DictConfig) -> DictConfig:
    """Refuse values that would fail deep inside a stage, naming the key."""
    for key, ok, meaning in checked_keys():
        value = OmegaConf.select(cfg, key)
        try:
            good = ok(value)
        except TypeError:  # a string or a list where a number belongs
            raise InputError(f"config: {key}={value} must be a number, {meaning}") from None
        if not good:
            shown = format(value, "g") if isinstance(value, float) else value  # -5, not the schema's -5.0
            raise InputError(f"config: {key}={shown} must be {meaning}")
    for key in ("data.holdout_bounds", "detect.bbox", "evaluate.bbox", "suggest.bbox"):
        box = OmegaConf.select(cfg, key)
        if box is not None and (len(box) != 4 or not (box[0] < box[2] and box[1] < box[3])):
            raise InputError(f"config: {key}={list(box)} must be [west, south, east, north] with west < east, south < north")
        if box is not None and not (-180 <= box[0] <= 180 and -180 <= box[2] <= 180 and -90 <= box[1] <= 90
                                    and -90 <= box[3] <= 90):
            raise InputError(f"config: {key}={list(box)} must be in degrees (longitude, latitude; EPSG:4326): "
                             "[west, south, east, north], not in the imagery's map units")
    if cfg.train.qat and str(cfg.train.precision) not in ("32-true", "32"):
        raise InputError(f"config: train.qat=true with train.precision={cfg.train.precision}: INT8 is simulated on "
                         "float32 weights (32-true)")
    return cfg
