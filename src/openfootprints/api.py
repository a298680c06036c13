"""The Python API: what the command line does, as typed calls that return data.

    import openfootprints as ofp

    buildings = ofp.detect("scene.tif", model="model.ofp", min_area_m2=10)   # a GeoDataFrame, EPSG:4326
    with ofp.load_detector("model.ofp") as detector:                         # loaded once, many scenes
        summaries = [ofp.detect_file(s, f"{s}.parquet", model=detector) for s in ("a.tif", "b.tif")]
    scores = ofp.evaluate(buildings, "truth.geojson")                        # precision, recall, F1, …
    child = ofp.finetune("base.ofp", [("new.tif", "few.geojson")], "new.ofp", areas=["area.geojson"])

Keyword options are the keys of the command's own config section (``detect.*`` for :func:`detect`, ``train.*``
for :func:`train`, …); any other key goes in ``config`` as ``{"section.key": value}``, or pass a config from
:func:`config`. Every value is checked as the command line checks it (:func:`openfootprints.configuration.load_config`).
Sizes are metres on the ground; bounding boxes are ``[west, south, east, north]`` in degrees.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import geopandas as gpd
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from openfootprints.configuration import check_config, config_error, did_you_mean, load_config
from openfootprints.errors import InputError
from openfootprints.registry import model_or_base

if TYPE_CHECKING:
    from openfootprints.predict.probabilities import WindowPredictor

PathLike = str | os.PathLike


def config(overrides: dict[str, Any] | None = None, **section_values: dict[str, Any]) -> DictConfig:
    """The checked configuration with ``{"section.key": value}`` overrides and ``section={key: value}`` groups,
    e.g. ``config({"recipe": "base"}, detect={"min_area_m2": 10})``."""
    flat = dict(overrides or {})
    for section, values in section_values.items():
        flat |= {f"{section}.{key}": value for key, value in values.items()}
    return load_config([f"{key}={_hydra_value(value)}" for key, value in flat.items()])


def _hydra_value(value: Any) -> str:
    """A Python value written in Hydra's override grammar (None → null, lists as JSON, strings quoted if needed)."""
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float, list, tuple)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    text = str(value)
    return text if text.replace("_", "").replace("-", "").replace(".", "").replace("/", "").isalnum() else repr(text)


def _config_for(section: str, cfg: DictConfig | dict | None, options: dict[str, Any]) -> DictConfig:
    """The config of a call: ``cfg`` (a config, or ``{"section.key": value}`` overrides) with the call's keyword
    options as ``section.*`` keys, checked."""
    if isinstance(cfg, DictConfig):
        try:
            merged = cast(DictConfig, OmegaConf.merge(cfg, {section: options})) if options else cfg
        except OmegaConfBaseException as err:  # a key not in the schema, or a value of the wrong type
            raise InputError(f"config: {config_error(err)}{did_you_mean([f'{section}.{k}=' for k in options])}") from err
        return check_config(merged)
    return config(dict(cfg or {}), **({section: options} if options else {}))


class Detector:
    """A model loaded once to detect buildings in many scenes (a notebook loop, a service's worker, the cells of
    ``scale``): pass it as ``model=`` to :func:`detect` or :func:`detect_file`. Made by :func:`load_detector`; its
    device, engine and threads are fixed then (the ``detect.device``/``engine``/``compile`` of a later call are
    not used). Close it (or use ``with``) to remove the ONNX file it exported, if any."""

    def __init__(self, model_path: str, predictor: WindowPredictor, workdir: tempfile.TemporaryDirectory | None):
        self.model_path, self.predictor, self._workdir = model_path, predictor, workdir

    @property
    def engine(self) -> str:
        """What runs the network: ``torch``, or ``onnx (FILE)`` with the ONNX file (an INT8 file when one runs)."""
        return self.predictor.described

    def close(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_detector(model: PathLike | None = None, config: DictConfig | dict | None = None,
                  threads: int | None = None, workdir: PathLike | None = None, **options) -> Detector:
    """``model`` (a bundle or its ONNX export; default: the shipped base model) loaded on the device and engine of
    ``detect.device``/``detect.engine`` (``options``: ``detect.*`` keys), ready for any number of scenes.
    ``threads`` caps ONNX Runtime's threads (default: all cores); ``workdir``: where an ONNX export goes when the
    cache cannot be written (default: a temporary folder removed by :meth:`Detector.close`)."""
    from openfootprints.pipeline import load_predictor

    cfg = _config_for("detect", config, options)
    path = model_or_base(None if model is None else str(model))
    own = tempfile.TemporaryDirectory(prefix="openfootprints-model-") if workdir is None else None
    try:
        predictor = load_predictor(cfg, path, own.name if own is not None else str(workdir), threads)
    except BaseException:
        if own is not None:
            own.cleanup()
        raise
    return Detector(path, predictor, own)


def detect(scene: PathLike, model: PathLike | Detector | None = None, out: PathLike | None = None,
           config: DictConfig | dict | None = None, progress: bool = False, **options) -> gpd.GeoDataFrame:
    """Find the buildings of ``scene`` (any imagery ``detect`` reads) with ``model`` (a bundle or its ONNX export,
    or a :class:`Detector`; default: the shipped base model). Returns the buildings table (EPSG:4326, Open
    Buildings columns) and, with ``out``, also writes it there (format by extension). ``options``: ``detect.*``
    keys, e.g. ``bbox``, ``min_area_m2``, ``tta``. For a table larger than memory use :func:`detect_file`."""
    from openfootprints.io.vector import read_table

    with tempfile.TemporaryDirectory(prefix="openfootprints-api-") as tmp:
        path = Path(out) if out else Path(tmp) / "buildings.parquet"
        detect_file(scene, path, model, config, progress, **options)
        return read_table(str(path))


def detect_file(scene: PathLike, out: PathLike, model: PathLike | Detector | None = None,
                config: DictConfig | dict | None = None, progress: bool = False, **options) -> dict[str, Any]:
    """:func:`detect` streamed to the file ``out`` (GeoParquet, FlatGeobuf, GeoJSON, CSV, … by extension; any
    scene size, memory bounded) without reading it back. Returns what ``openfootprints detect`` prints: buildings,
    ``area_km2``, seconds per stage (``predict_s``, ``total_s``, …), ``km2_per_hour``, energy, the engine, the
    output paths, and ``drift``/``warning`` when the imagery is unlike the model's training data."""
    from openfootprints.pipeline import detect as run_detect

    cfg = _config_for("detect", config, options)
    if isinstance(model, Detector):
        path, predictor = model.model_path, model.predictor
    else:
        path, predictor = model_or_base(None if model is None else str(model)), None
    return run_detect(cfg, str(scene), path, str(out), progress=progress, predictor=predictor)


def detect_at_scale(scene: PathLike, out: PathLike, model: PathLike | None = None,
                    config: DictConfig | dict | None = None, **options) -> dict[str, Any]:
    """Detect over an area far larger than one run, in web-mercator cells (``scale.zoom``) written to the folder
    (or ``s3://``/``gs://`` URL) ``out``, resumable: a second call does only the cells not yet written. Runs in
    this process, or on a Ray cluster with ``engine="ray"``. ``options``: ``scale.*`` keys (``aoi``, ``zoom``,
    ``retries``, …); detection settings go in ``config`` as ``detect.*``. Returns ``OUT/summary.json``'s content."""
    from openfootprints.scale.engine import scale as run_scale

    cfg = _config_for("scale", config, options)
    return run_scale(cfg, str(scene), model_or_base(None if model is None else str(model)), str(out))


def evaluate(predicted: PathLike | gpd.GeoDataFrame, truth: PathLike | gpd.GeoDataFrame,
             imagery: PathLike | None = None, config: DictConfig | dict | None = None, **options) -> dict:
    """Score predicted buildings against true footprints at IoU ≥ ``evaluate.iou``: precision, recall, F1, AP50,
    pixel IoU, breakdowns by size (see docs/metrics.md). Either side may be a file or a GeoDataFrame.
    ``options``: ``evaluate.*`` keys, e.g. ``bbox``."""
    from openfootprints.evaluation.run import evaluate_files

    cfg = _config_for("evaluate", config, options)
    with tempfile.TemporaryDirectory(prefix="openfootprints-api-") as tmp:
        paths = []
        for name, value in (("predicted", predicted), ("truth", truth)):
            if isinstance(value, gpd.GeoDataFrame):
                value.to_parquet(Path(tmp) / f"{name}.parquet")
                value = Path(tmp) / f"{name}.parquet"
            paths.append(str(value))
        result = evaluate_files(cfg, paths[0], paths[1], bbox=cfg.evaluate.bbox,
                                imagery=None if imagery is None else str(imagery))
    return result.to_dict()


def train(sources: Sequence[tuple[PathLike, PathLike]], out: PathLike, areas: Sequence[PathLike | None] | None = None,
          config: DictConfig | dict | None = None, **options) -> Path:
    """Train a model bundle on (imagery, labels) pairs; ``areas``: one polygon file (or None) per pair saying
    where its labels are complete. ``options``: ``train.*`` keys, e.g. ``max_minutes``, ``init``. Returns the
    bundle's path."""
    from openfootprints.training.run import train as run_train

    cfg = _with_areas(_config_for("train", config, options), areas)
    return run_train(cfg, [(str(i), str(labels)) for i, labels in sources], str(out))


def finetune(model: PathLike | None, sources: Sequence[tuple[PathLike, PathLike]], out: PathLike,
             areas: Sequence[PathLike | None] | None = None, config: DictConfig | dict | None = None,
             **options) -> Path:
    """Adapt ``model`` (default: the shipped base model) to a new place from a few labels; keeps its bands,
    resolution, target and network. ``options``: ``finetune.*`` keys (``lr``, ``max_minutes``). Returns the new
    bundle's path."""
    from openfootprints.training.finetune import finetune as run_finetune

    cfg = _with_areas(_config_for("finetune", config, options), areas)
    return run_finetune(cfg, [(str(i), str(labels)) for i, labels in sources], None if model is None else str(model),
                        str(out))


def suggest(scene: PathLike, model: PathLike | None = None, n: int | None = None, out: PathLike | None = None,
            config: DictConfig | dict | None = None, progress: bool = False, **options) -> gpd.GeoDataFrame:
    """The ``n`` chips of ``scene`` where new labels would teach ``model`` most, ranked (EPSG:4326 boxes); also
    written to ``out`` when given. ``options``: ``suggest.*`` keys (``chip_m``, ``novelty_weight``, …)."""
    from openfootprints.labelling import suggest as run_suggest

    cfg = _config_for("suggest", config, options)
    with tempfile.TemporaryDirectory(prefix="openfootprints-api-") as tmp:
        path = Path(out) if out else Path(tmp) / "chips.geojson"
        return run_suggest(cfg, str(scene), model_or_base(None if model is None else str(model)), path, n,
                           progress=progress)


def load_model(path: PathLike | None = None):
    """A model bundle (``.ofp``, with weights) or an exported ``.onnx`` (its metadata); default: the base model.
    The :class:`~openfootprints.model.bundle.Bundle` says its bands, normalization, ground resolution (m/px),
    window (px), architecture, scores and training record."""
    from openfootprints.model.onnx import load_model as read

    return read(model_or_base(None if path is None else str(path)))


def stac_item(model: PathLike, out: PathLike | None = None, licence: str = "other",
              attribution: str | None = None) -> dict:
    """The STAC Item (Machine Learning Model extension) of a bundle: bands, normalization, ground resolution (m),
    window (px), output, architecture, training scores, ``licence`` (SPDX id) and ``attribution``; also written
    to ``out`` (JSON, asset links relative to it) when given."""
    from openfootprints.model.bundle import load_bundle
    from openfootprints.model.stac_item import model_item, write_model_item

    bundle = load_bundle(model)
    if out is not None:
        write_model_item(bundle, model, out, licence=licence, attribution=attribution)
        return json.loads(Path(out).read_text())
    return model_item(bundle, model, licence=licence, attribution=attribution).to_dict()


class MapView:
    """The web map viewer of a buildings table, served from this process in the background (:func:`view_map`): open
    :attr:`url` in a browser, or leave it as a notebook cell's value to see the map in the notebook. Close it (or
    use ``with``) to stop the server."""

    def __init__(self, url: str, resources: contextlib.ExitStack):
        self.url, self._resources = url, resources

    def close(self) -> None:
        self._resources.close()

    def __enter__(self) -> MapView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repr_html_(self) -> str:  # Jupyter shows the map itself
        return f'<iframe src="{self.url}" width="100%" height="520" style="border:0"></iframe>'

    def __repr__(self) -> str:
        return f"MapView({self.url})"


def view_map(buildings: PathLike | gpd.GeoDataFrame, imagery: PathLike | None = None, truth: PathLike | None = None,
             port: int = 0, config: DictConfig | dict | None = None, **options) -> MapView:
    """The map ``openfootprints view`` serves, from Python: ``buildings`` (a table ``detect`` wrote, or the
    GeoDataFrame :func:`detect` returned) coloured by confidence over ``imagery``, with the ``truth`` outlines;
    served on ``port`` of 127.0.0.1 (0: any free port) until :meth:`MapView.close`. ``options``: ``view.*`` keys."""
    from openfootprints.view import create_app, prepare_viewer, running

    cfg = _config_for("view", config, options)
    resources = contextlib.ExitStack()
    try:
        if isinstance(buildings, gpd.GeoDataFrame):
            folder = resources.enter_context(tempfile.TemporaryDirectory(prefix="openfootprints-view-"))
            buildings.to_parquet(Path(folder) / "buildings.parquet")
            buildings = Path(folder) / "buildings.parquet"
        viewer = prepare_viewer(cfg, buildings, imagery, truth)
        resources.callback(viewer.close)
        url = resources.enter_context(running(create_app(viewer), port=port))
    except BaseException:
        resources.close()
        raise
    return MapView(url, resources)


def _with_areas(cfg: DictConfig, areas: Sequence[PathLike | None] | None) -> DictConfig:
    if areas is not None:
        cfg.data.areas = [None if a is None else str(a) for a in areas]
    return cfg
