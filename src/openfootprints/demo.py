"""``openfootprints demo``: the base model finds buildings in a small real scene, scored and drawn.

The scene ships with the package (``demo_scene/``): a 229 × 153 m crop of OpenAerialMap drone imagery of
Kampala, Uganda (0.30 m, CC BY 4.0) with its OpenStreetMap footprints (ODbL), a place the base model never
saw in training. The demo detects, evaluates at IoU 0.5 and draws predicted and true outlines over the image.
``--synthetic`` runs the whole path on synthetic data instead: synthesizes a training scene and a separate
test scene, trains within ``demo.train_minutes``, then detects, evaluates and draws the same way.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from openfootprints.evaluation.metrics import format_table
from openfootprints.io.atomic import atomic_path
from openfootprints.io.vector import read_table
from openfootprints.model.base import ATTRIBUTION
from openfootprints.model.quantize import int8_beside, usable_int8
from openfootprints.registry import model_or_base
from openfootprints.evaluation.run import evaluate_files
from openfootprints.pipeline import detect
from openfootprints.synth.scene import SceneSpec, write_scene
from openfootprints.training.run import train

log = logging.getLogger(__name__)
DEMO_SCENE = Path(__file__).with_name("demo_scene") / "kampala.tif"
DEMO_LABELS = Path(__file__).with_name("demo_scene") / "kampala.geojson"


def synth_spec(cfg: DictConfig, size: int, seed: int) -> SceneSpec:
    s = cfg.synth
    return SceneSpec(width=size, height=size, resolution_m=s.resolution_m, crs=s.crs,
                     center_lonlat=tuple(s.center_lonlat), building_density=s.building_density, seed=seed)


def draw_outlines(scene_path: str | Path, layers: list[tuple[gpd.GeoDataFrame, tuple[int, int, int]]],
                  out_png: str | Path) -> Path:
    """Draw polygon outlines (each layer in its colour) over an RGB scene and save a PNG."""
    with rasterio.open(scene_path) as src:
        rgb = src.read([1, 2, 3]).transpose(1, 2, 0)
        inverse, crs = ~src.transform, src.crs
    image = Image.fromarray(np.ascontiguousarray(rgb))
    pen = ImageDraw.Draw(image)
    for frame, colour in layers:
        for geom in frame.to_crs(crs).geometry:
            polys = geom.geoms if geom.geom_type == "MultiPolygon" else [geom]
            for poly in polys:
                pen.line([inverse @ xy for xy in poly.exterior.coords], fill=colour, width=2)
    with atomic_path(out_png) as tmp:
        image.save(tmp, format="PNG")
    return Path(out_png)


def run_demo(cfg: DictConfig, synthetic: bool = False, model: str | None = None) -> dict:
    """Run the demo into ``cfg.demo.out_dir``; returns the paths written and the scores. ``model``: the bundle
    the real demo runs (default: the shipped base model)."""
    out = Path(cfg.demo.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"test_scene": out / "test_scene.tif", "test_labels": out / "test_labels.geojson",
             "model": out / "model.ofp", "buildings": out / "buildings.parquet",
             "metrics": out / "metrics.json", "picture": out / "test_scene_outlines.png"}
    if synthetic:
        paths = {"train_scene": out / "train_scene.tif", "train_labels": out / "train_labels.geojson", **paths}
        log.info("1/5 synthesizing scenes")
        write_scene(synth_spec(cfg, cfg.demo.train_px, cfg.seed + 1), paths["train_scene"], paths["train_labels"])
        write_scene(synth_spec(cfg, cfg.demo.test_px, cfg.seed + 1000), paths["test_scene"], paths["test_labels"])
        cfg.train.max_minutes = cfg.demo.train_minutes
        log.info("2/5 training for at most %s minutes", cfg.train.max_minutes)
        train(cfg, [(str(paths["train_scene"]), str(paths["train_labels"]))], paths["model"])
    else:
        log.info("1/5 the real scene: Kampala, Uganda (%s)", ATTRIBUTION)
        sources = {"test_scene": DEMO_SCENE, "test_labels": DEMO_LABELS, "model": Path(model_or_base(model))}
        int8 = usable_int8(sources["model"])
        if int8 is not None:  # detect runs it on the CPU, as it would beside the model where it ships
            paths["model_int8"], sources["model_int8"] = int8_beside(paths["model"]), int8
        for name, shipped in sources.items():
            with atomic_path(paths[name]) as tmp:
                shutil.copyfile(shipped, tmp)
        log.info("2/5 the model: %s", model or "the shipped base model")
    log.info("3/5 detecting buildings on the test scene")
    summary = detect(cfg, str(paths["test_scene"]), str(paths["model"]), str(paths["buildings"]))
    log.info("4/5 evaluating at IoU %.2f", cfg.evaluate.iou)
    scores = evaluate_files(cfg, str(paths["buildings"]), str(paths["test_labels"]), str(paths["metrics"])).scores
    log.info("5/5 drawing outlines")
    truth = gpd.read_file(paths["test_labels"])
    draw_outlines(paths["test_scene"], [(truth, (0, 255, 255)), (read_table(paths["buildings"]), (255, 0, 255))],
                  paths["picture"])
    print(format_table(scores))
    print(f"\ndetect: {json.dumps(summary)}")
    print("\nfiles:")
    for name, path in paths.items():
        print(f"  {name:<13} {path}")
    print("  (outlines: cyan = true footprints, magenta = detected)")
    if not synthetic:
        print(f"  ({ATTRIBUTION})")
    return {"paths": {k: str(v) for k, v in paths.items()}, "scores": scores.to_dict()}
