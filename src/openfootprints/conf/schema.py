"""The configuration's structure: every section and key, its type and the check of its value.

Hydra composes ``config.yaml`` (every key's default and meaning) onto :class:`Config`, so a key that is not here, or
a value of the wrong type (``train.batch_size=abc``), is refused by OmegaConf, and
:func:`openfootprints.configuration.check_config` runs each field's check. Defaults live in ``config.yaml`` only:
a field here has none (``MISSING``), and a test makes sure the two name the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Iterator, Optional

from omegaconf import MISSING

from openfootprints.model.architectures import ARCHITECTURES


def key(ok: Callable[[Any], bool] | None = None, meaning: str = "") -> Any:
    """A config field whose value ``ok`` must accept (``meaning`` says what it must be, for the message)."""
    return field(default=MISSING, metadata={"check": (ok, meaning)} if ok else {})


def _multiple_of_32(v) -> bool:
    return v >= 32 and v % 32 == 0


def _share(v) -> bool:  # in [0, 1]
    return 0 <= v <= 1


def _below_one(v) -> bool:  # in [0, 1)
    return 0 <= v < 1


def _whole(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and v >= low and (high is None or v <= high)


POSITIVE, NON_NEGATIVE, AT_LEAST_1 = (lambda v: v > 0), (lambda v: v >= 0), (lambda v: v >= 1)


@dataclass
class Data:
    bands: Optional[list[int]] = key()
    resolution_m: Optional[float] = key(lambda v: v is None or v > 0, "null or positive")
    chip_px: int = key(_multiple_of_32, "a multiple of 32")
    block_m: float = key(POSITIVE, "positive")
    val_fraction: float = key(lambda v: 0 <= v < 1, "in [0, 1)")
    split_seed: Optional[int] = key(lambda v: v is None or _whole(0)(v), "null or a whole number ≥ 0")
    holdout_bounds: Optional[list[float]] = key()
    target: str = key(lambda v: v in ("eroded", "energy"), "eroded or energy")
    label_erosion_m: float = key(NON_NEGATIVE, "0 or more")
    energy_m: float = key(POSITIVE, "positive")
    source_weights: Optional[list[float]] = key(lambda v: v is None or all(w >= 0 for w in v),
                                                "null or a list of weights ≥ 0")
    areas: Optional[list[Optional[str]]] = key()
    block_min_valid: float = key(_share, "in [0, 1]")
    chip_min_valid: float = key(_share, "in [0, 1]")
    fix_invalid: bool = key()
    gap_weight_w0: float = key(NON_NEGATIVE, "0 or more")
    gap_sigma_m: float = key(POSITIVE, "positive")
    samples_per_epoch: int = key(AT_LEAST_1, "1 or more")
    val_chips: int = key(NON_NEGATIVE, "0 or more")
    num_workers: int = key(NON_NEGATIVE, "0 or more")


@dataclass
class Model:
    arch: str = key(lambda v: v in ARCHITECTURES, "one of " + ", ".join(ARCHITECTURES))
    encoder: str = key()
    pretrained: bool = key()
    decoder_channels: list[int] = key(lambda v: len(v) > 0 and all(c >= 1 for c in v), "a list of widths ≥ 1")
    dropout: float = key(_below_one, "in [0, 1)")
    drop_path: float = key(_below_one, "in [0, 1)")


@dataclass
class Augment:
    flips: bool = key()
    jitter: float = key(_below_one, "in [0, 1)")
    mosaic_prob: float = key(_share, "in [0, 1]")
    copy_paste_prob: float = key(_share, "in [0, 1]")
    copy_paste_max: int = key(AT_LEAST_1, "1 or more")
    zoom: float = key(_below_one, "in [0, 1)")
    coarsen_to_m: float = key(NON_NEGATIVE, "0 or more")
    blur_m: float = key(NON_NEGATIVE, "0 or more")
    noise: float = key(NON_NEGATIVE, "0 or more")
    saturation: float = key(_below_one, "in [0, 1)")


@dataclass
class Train:
    batch_size: int = key(AT_LEAST_1, "1 or more")
    max_epochs: int = key(AT_LEAST_1, "1 or more")
    max_minutes: float = key(NON_NEGATIVE, "0 or more")
    lr: float = key(POSITIVE, "positive")
    init: Optional[str] = key()
    init_normalization: str = key(lambda v: v in ("parent", "adapt"), "parent or adapt")
    freeze_encoder: bool = key()
    anchor_decay: float = key(NON_NEGATIVE, "0 or more")
    ema_decay: float = key(_below_one, "in [0, 1)")
    weight_decay: float = key(NON_NEGATIVE, "0 or more")
    dice_weight: float = key(NON_NEGATIVE, "0 or more")
    mixup_prob: float = key(_share, "in [0, 1]")
    mixup_alpha: float = key(POSITIVE, "positive")
    rdrop_alpha: float = key(NON_NEGATIVE, "0 or more")
    qat: bool = key()
    precision: str = key()
    accelerator: str = key()
    out: str = key()


@dataclass
class Finetune:
    lr: float = key(POSITIVE, "positive")
    max_minutes: float = key(NON_NEGATIVE, "0 or more")
    recipe: str = key(lambda v: v in ("parent", "config"), "parent or config")


@dataclass
class Suggest:
    n: int = key(AT_LEAST_1, "1 or more")
    chip_m: float = key(POSITIVE, "positive")
    min_valid: float = key(_share, "in [0, 1]")
    novelty_weight: float = key(NON_NEGATIVE, "0 or more")
    bbox: Optional[list[float]] = key()


@dataclass
class Diet:
    keep: float = key(lambda v: 0 < v <= 1, "in (0, 1]")
    offset: float = key(_below_one, "in [0, 1)")
    seeds: int = key(AT_LEAST_1, "1 or more")
    steps: int = key(AT_LEAST_1, "1 or more")
    gallery: int = key(NON_NEGATIVE, "0 or more")


@dataclass
class Selftrain:
    rounds: int = key(AT_LEAST_1, "1 or more")
    pseudo_fraction: float = key(lambda v: 0 < v < 1, "in (0, 1)")
    dropout: float = key(_below_one, "in [0, 1)")
    drop_path: float = key(_below_one, "in [0, 1)")
    jitter: float = key(_below_one, "in [0, 1)")


@dataclass
class Tracking:
    uri: Optional[str] = key()
    experiment: str = key()
    energy: bool = key()
    country: str = key()


@dataclass
class Detect:
    window_px: Optional[int] = key(lambda v: v is None or _multiple_of_32(v), "a multiple of 32")
    halo_m: Optional[float] = key(lambda v: v is None or v >= 0, "0 or more")
    batch_size: Optional[int] = key(lambda v: v is None or v >= 1, "1 or more, or null for the default")
    threshold: Optional[float] = key(lambda v: v is None or 0 < v < 1, "between 0 and 1")
    min_area_m2: float = key(NON_NEGATIVE, "0 or more")
    min_confidence: Optional[float] = key(lambda v: v is None or 0 <= v < 1, "null or in [0, 1)")
    simplify_m: float = key(NON_NEGATIVE, "0 or more")
    regularize_m: float = key(NON_NEGATIVE, "0 or more")
    max_building_m: float = key(POSITIVE, "positive")
    bbox: Optional[list[float]] = key()
    probabilities: Optional[str] = key()
    device: str = key()
    allow_other_dtype: bool = key()
    gdal_cache_mb: int = key(lambda v: v >= 16, "16 or more")
    tta: int = key(lambda v: v in (1, 2, 4, 8), "1, 2, 4 or 8")
    engine: str = key(lambda v: v in ("auto", "torch", "onnx", "onnx-int8"), "auto, torch, onnx or onnx-int8")
    compile: bool = key()
    adapt_bn: int = key(_whole(0), "a whole number, 0 or more")


@dataclass
class Serve:
    max_upload_mb: float = key(POSITIVE, "positive")
    upload_seconds: float = key(POSITIVE, "positive")
    max_megapixels: float = key(POSITIVE, "positive")
    max_seconds: float = key(POSITIVE, "positive")
    max_concurrent: int = key(_whole(1), "a whole number, 1 or more")
    max_queued: int = key(_whole(0), "a whole number, 0 or more")


@dataclass
class Scale:
    zoom: int = key(_whole(0, 22), "a whole number, 0–22")
    aoi: Any = key()  # [west, south, east, north] in degrees, or a polygon file
    engine: str = key(lambda v: v in ("local", "ray"), "local or ray")
    retries: int = key(_whole(0), "a whole number, 0 or more")
    ray_address: Optional[str] = key()
    ray_actors: Optional[int] = key(lambda v: v is None or v >= 1, "null or 1 or more")


@dataclass
class Evaluate:
    iou: float = key(lambda v: 0 < v <= 1, "in (0, 1]")
    bbox: Optional[list[float]] = key()
    region_column: Optional[str] = key()
    grid_m: Optional[float] = key(lambda v: v is None or v > 0, "null or positive")
    min_on_imagery: float = key(_share, "in [0, 1]")


@dataclass
class View:
    host: str = key()
    port: int = key(_whole(0, 65535), "a port number, 0–65535")
    pmtiles_above: int = key(_whole(0), "a whole number, 0 or more")
    tiles_min_zoom: int = key(_whole(0, 24), "a zoom, 0–24")
    tiles_max_zoom: int = key(_whole(0, 24), "a zoom, 0–24")
    imagery_zoom_levels: int = key(_whole(0, 8), "0–8")


@dataclass
class Synth:
    width: int = key(lambda v: v >= 16, "16 or more")
    height: int = key(lambda v: v >= 16, "16 or more")
    resolution_m: float = key(POSITIVE, "positive")
    crs: str = key()
    center_lonlat: list[float] = key(lambda v: len(v) == 2, "[longitude, latitude]")
    building_density: float = key(NON_NEGATIVE, "0 or more")
    seed: int = key()


@dataclass
class Demo:
    out_dir: str = key()
    train_px: int = key(lambda v: v >= 64, "64 or more")
    test_px: int = key(lambda v: v >= 64, "64 or more")
    train_minutes: float = key(POSITIVE, "positive")


@dataclass
class Config:
    """The whole configuration: one section per command or stage (``config.yaml`` says what each key means)."""

    seed: int = key()
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    augment: Augment = field(default_factory=Augment)
    train: Train = field(default_factory=Train)
    finetune: Finetune = field(default_factory=Finetune)
    suggest: Suggest = field(default_factory=Suggest)
    diet: Diet = field(default_factory=Diet)
    selftrain: Selftrain = field(default_factory=Selftrain)
    tracking: Tracking = field(default_factory=Tracking)
    detect: Detect = field(default_factory=Detect)
    serve: Serve = field(default_factory=Serve)
    scale: Scale = field(default_factory=Scale)
    evaluate: Evaluate = field(default_factory=Evaluate)
    view: View = field(default_factory=View)
    synth: Synth = field(default_factory=Synth)
    demo: Demo = field(default_factory=Demo)


def checked_keys(node: type = Config, prefix: str = "") -> Iterator[tuple[str, Callable[[Any], bool], str]]:
    """Every ``(section.key, check, meaning)`` of the schema whose field has a check."""
    for f in fields(node):
        section = f.default_factory
        if isinstance(section, type) and is_dataclass(section):
            yield from checked_keys(section, f"{prefix}{f.name}.")
        elif "check" in f.metadata:
            ok, meaning = f.metadata["check"]
            yield f"{prefix}{f.name}", ok, meaning
