"""The ``openfootprints`` command line: one subcommand per job, Hydra ``key=value`` overrides after the arguments.

    openfootprints synth OUT.tif --labels OUT.geojson [synth.width=2048 …]
    openfootprints train --image A.tif --labels A.geojson [--image B.tif --labels B.gpkg] --out model.ofp [key=value …]
    openfootprints self-train --teacher T.ofp --image A.tif --labels A.geojson --unlabelled U.tif --out S.ofp
    openfootprints detect SCENE --model model.ofp --out buildings.parquet [detect.bbox=[w,s,e,n] …]
    openfootprints scale SCENE --model model.ofp --out DIR [scale.zoom=14 scale.aoi=[w,s,e,n] scale.engine=ray …]
    openfootprints evaluate PREDICTED TRUTH [--json metrics.json] [--report DIR [--imagery SCENE]] [evaluate.iou=0.5 …]
    openfootprints calibrate PREDICTED TRUTH --model model.ofp --out calibrated.ofp [evaluate.bbox=[w,s,e,n]]
    openfootprints export model.ofp --out model.onnx
    openfootprints export model.ofp --stac --license CC-BY-4.0
    openfootprints demo [--synthetic] [demo.out_dir=demo_output …]
    openfootprints serve --model model.ofp [--host 127.0.0.1] [--port 8000] [serve.max_concurrent=2 …]
    openfootprints view RESULT [--imagery SCENE] [--truth FILE] [--port 8765] [--host 127.0.0.1] [--no-browser]

Bad input ends with one line on stderr naming the file and the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from openfootprints import __version__
from openfootprints.errors import InputError
from openfootprints.configuration import load_config
from openfootprints.io.atomic import OUT_OF_SPACE, check_writable
from openfootprints.registry import model_or_base

log = logging.getLogger("openfootprints")
SCENE_HELP = ("imagery: a GeoTIFF/COG/VRT (a path, or an s3:// or gs:// URL), a folder of GeoTIFFs, an XYZ tile "
              "folder, a local STAC catalog or item collection, or a .txt list of scenes (one per line)")
MODEL_HELP = "model bundle (.ofp) or its ONNX export (.onnx); default: the base model shipped with openfootprints"
AREA_HELP = ("polygons (any vector format) where the labels of the --image before it are complete; outside them "
             "nothing is learnt (neither building nor background); default: complete everywhere")


def cmd_synth(args, cfg: DictConfig) -> None:
    from openfootprints.synth.scene import SceneSpec, write_scene

    s = cfg.synth
    spec = SceneSpec(width=s.width, height=s.height, resolution_m=s.resolution_m, crs=s.crs,
                     center_lonlat=tuple(s.center_lonlat), building_density=s.building_density, seed=s.seed)
    labels = args.labels or str(Path(args.out).with_suffix(".geojson"))
    n = write_scene(spec, args.out, labels)
    print(f"wrote {args.out} ({spec.width}×{spec.height} px at {spec.resolution_m} m, {spec.crs}) "
          f"and {labels} ({n} buildings)")


def labelled_pairs(command: str, args) -> list[tuple[str, str]]:
    """The (imagery, labels) pairs of repeated ``--image``/``--labels`` arguments."""
    if len(args.image) != len(args.labels):
        raise InputError(f"{command}: {len(args.image)} --image but {len(args.labels)} --labels; give them in pairs")
    return list(zip(args.image, args.labels))


class AreaOfImage(argparse.Action):
    """``--area FILE``: where the labels of the ``--image`` given before it are complete (kept by image index)."""

    def __call__(self, parser, namespace, value, option_string=None):
        if not namespace.image:
            parser.error("--area: give it after the --image whose labels it bounds")
        areas = dict(getattr(namespace, "areas", None) or {})
        areas[len(namespace.image) - 1] = value
        namespace.areas = areas


def with_areas(cfg: DictConfig, args) -> DictConfig:
    """The config with ``data.areas`` from ``--area`` options (one per --image, null where none was given)."""
    areas = getattr(args, "areas", None)
    if areas:
        cfg.data.areas = [areas.get(i) for i in range(len(args.image))]
    return cfg


def cmd_train(args, cfg: DictConfig) -> None:
    from openfootprints.api import train

    path = train(labelled_pairs("train", args), args.out or cfg.train.out, config=with_areas(cfg, args))
    print(f"wrote model bundle {path}")


def cmd_finetune(args, cfg: DictConfig) -> None:
    from openfootprints.api import finetune
    from openfootprints.model.bundle import load_bundle
    from openfootprints.training.finetune import against_parent

    path = finetune(args.model, labelled_pairs("finetune", args), args.out, config=with_areas(cfg, args))
    print(f"wrote fine-tuned model bundle {path}")
    comparison = against_parent(load_bundle(path))
    if comparison:
        print(comparison)


def cmd_self_train(args, cfg: DictConfig) -> None:
    from openfootprints.training.selftrain import self_train

    path = self_train(cfg, labelled_pairs("self-train", args), args.unlabelled, args.teacher, args.out or cfg.train.out)
    print(f"wrote student model bundle {path}")


def cmd_suggest(args, cfg: DictConfig) -> None:
    from openfootprints.api import suggest

    table = suggest(args.scene, args.model, args.n, args.out, config=cfg, progress=not args.quiet)
    print(f"wrote {len(table)} chips to label next to {args.out} (best first; score = uncertainty + "
          f"{cfg.suggest.novelty_weight:g} × novelty)")


def cmd_detect(args, cfg: DictConfig) -> None:
    from openfootprints.api import detect_file

    out = args.out or f"{Path(args.scene.rstrip('/')).stem}_buildings.parquet"
    summary = detect_file(args.scene, out, args.model, config=cfg, progress=not args.quiet)
    print(json.dumps(summary, indent=2))


def cmd_evaluate(args, cfg: DictConfig) -> None:
    from openfootprints.evaluation.metrics import format_errors, format_table
    from openfootprints.evaluation.run import evaluate_files

    json_path = args.json or str(Path(args.predicted).with_suffix(".metrics.json"))
    result = evaluate_files(cfg, args.predicted, args.truth, json_path, cfg.evaluate.bbox, args.report, args.imagery)
    print(format_table(result.scores))
    print(format_errors(result.errors))
    for key in ("ece", "ece_raw"):
        if key in result.extra:
            print(f"{'ECE' if key == 'ece' else 'ECE (raw confidence)'}: {result.extra[key]:.4f}")
    print(f"wrote {json_path}" + (f" and {Path(args.report) / 'index.html'}" if args.report else ""))


def cmd_scale(args, cfg: DictConfig) -> None:
    from openfootprints.api import detect_at_scale

    summary = detect_at_scale(args.scene, args.out, args.model, config=cfg)
    print(json.dumps(summary, indent=2))
    if summary["cells_failed"]:
        raise InputError(f"scale: {summary['cells_failed']} cell(s) failed after {cfg.scale.retries} retries "
                         f"(listed in {args.out.rstrip('/')}/summary.json); run the same command again to retry them")


def cmd_calibrate(args, cfg: DictConfig) -> None:
    from openfootprints.training.calibrate import calibrate

    print(json.dumps(calibrate(cfg, args.predicted, args.truth, args.model, args.out), indent=2))


def cmd_models(args, cfg: DictConfig) -> None:
    from openfootprints import registry

    if args.action == "lineage":  # the stages that made a bundle (default: the shipped base model)
        from openfootprints.model.bundle import load_bundle
        from openfootprints.model.lineage import format_lineage, lineage, totals

        if args.target is not None:
            raise InputError("usage: openfootprints models lineage [MODEL.ofp | models:/NAME@ALIAS]")
        stages = lineage(load_bundle(model_or_base(args.name)))
        print(json.dumps({"stages": stages, "total": totals(stages)}, indent=2) if args.json else format_lineage(stages))
        return
    usage = {"register": "models register NAME MODEL.ofp", "promote": "models promote NAME VERSION",
             "rollback": "models rollback NAME"}
    if args.action in usage and (args.name is None or (args.action != "rollback") != (args.target is not None)
                                 or (args.action == "promote" and not args.target.isdigit())):
        raise InputError(f"usage: openfootprints {usage[args.action]}")
    if args.action == "register":
        rows = [registry.register(args.target, args.name, args.registry, args.description or "")]
    elif args.action == "promote":
        rows = [registry.promote(args.name, int(args.target), args.alias, args.registry)]
    elif args.action == "rollback":
        rows = [registry.rollback(args.name, args.alias, args.registry)]
    else:
        rows = registry.list_versions(args.name, args.registry)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        aliases = f" @{', @'.join(r['aliases'])}" if r["aliases"] else ""
        scores = ", ".join(f"{k} {v:.3g}" for k, v in r["metrics"].items() if k.startswith("val_"))
        print(f"models:/{r['name']}/{r['version']}{aliases}  {r['sha256'][:12]}  {scores}  {r['source']}")


def cmd_export(args, cfg: DictConfig) -> None:
    from openfootprints.model.bundle import load_bundle
    from openfootprints.model.onnx import export_onnx

    if args.stac:
        from openfootprints.model.stac_item import write_model_item

        out = check_writable(args.out or Path(args.model).with_suffix(".stac.json"), {".json"})
        item = write_model_item(load_bundle(args.model), args.model, out, licence=args.license,
                                attribution=args.attribution)
        print(f"wrote {item} (STAC Item, Machine Learning Model extension)")
        return
    if args.int8:
        from openfootprints.model.quantize import int8_beside, quantize_int8

        out = check_writable(args.out or int8_beside(args.model), {".onnx"})
        bundle = load_bundle(args.model)
        quantize_int8(bundle, out, args.calibration, args.chips, source=args.model)
        print(f"wrote {out} (INT8); {int8_verdict(bundle, out, Path(out) == int8_beside(args.model))}")
        return
    out = check_writable(args.out or Path(args.model).with_suffix(".onnx"), {".onnx"})
    print(f"wrote {export_onnx(load_bundle(args.model), out)}")


def int8_verdict(bundle, out: Path, beside: bool) -> str:
    """Check the INT8 file ``out`` against the bundle's fp32 network on its validation chips, store the check in
    it, and say what detection will do with it (``beside``: it lies where ``detect`` looks for it)."""
    from openfootprints.model.quantize import record_check
    from openfootprints.training.int8_check import check_int8

    try:
        check = check_int8(bundle, out)
    except InputError as err:
        record_check(out, None)
        return f"not checked against fp32 ({err}): detect runs it with detect.engine=onnx-int8 or --model {out}"
    record_check(out, check)
    scores = (f"on {check['chips']} validation chips F1 {check['int8']['f1']:.3f} (fp32 {check['fp32']['f1']:.3f}), "
              f"pixel IoU {check['int8']['pixel_iou']:.3f} (fp32 {check['fp32']['pixel_iou']:.3f})")
    if not check["within_tolerance"]:
        return f"{scores}: more than 1 point below fp32, so detect runs it only with detect.engine=onnx-int8"
    return f"{scores}: detect runs it by default on the CPU" if beside else f"{scores}: detect --model {out} runs it"


def cmd_demo(args, cfg: DictConfig) -> None:
    from openfootprints.demo import run_demo

    from openfootprints.model import base

    real = not args.synthetic and (args.model or base.BASE_MODEL.exists())
    if not args.synthetic and not real:
        log.warning("this installation has no base model: running the synthetic demo (train, then detect); "
                    "`openfootprints demo --model M.ofp` runs the real scene with a model of yours")
    run_demo(cfg, synthetic=not real, model=args.model)


def cmd_serve(args, cfg: DictConfig) -> None:
    import uvicorn

    from openfootprints.serve import create_app

    if (args.imagery or args.truth) and not args.view:
        raise InputError("serve: --imagery and --truth go with --view RESULT")
    viewer = None
    if args.view:  # the web map of a result, at /viewer/
        from openfootprints import view

        viewer = view.prepare_viewer(cfg, args.view, args.imagery, args.truth)
    try:
        app = create_app(cfg, model_or_base(args.model), viewer=view.create_app(viewer) if viewer else None)
        if viewer:
            print(f"viewer of {args.view} at http://{args.host}:{args.port}/viewer/", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        if viewer:
            viewer.close()


def cmd_view(args, cfg: DictConfig) -> None:
    from openfootprints.view import create_app, prepare_viewer, serve

    if cfg.view.tiles_min_zoom > cfg.view.tiles_max_zoom:
        raise InputError(f"config: view.tiles_min_zoom={cfg.view.tiles_min_zoom} is above "
                         f"view.tiles_max_zoom={cfg.view.tiles_max_zoom}")
    viewer = prepare_viewer(cfg, args.result, args.imagery, args.truth)
    try:
        serve(create_app(viewer), args.host or cfg.view.host, cfg.view.port if args.port is None else args.port,
              open_browser=not args.no_browser)
    finally:
        viewer.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openfootprints", description="Building footprints from imagery.")
    parser.add_argument("--version", action="version", version=f"openfootprints {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common: dict[str, Any] = dict(epilog="Any key=value after the arguments overrides the configuration "
                                         "(src/openfootprints/conf/config.yaml), e.g. detect.min_area_m2=10.")

    p = sub.add_parser("synth", help="write a synthetic scene (GeoTIFF) and its true footprints", **common)
    p.add_argument("out", help="output GeoTIFF")
    p.add_argument("--labels", help="output footprints (any vector format by extension; default OUT.geojson)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train a model bundle on labelled scenes", **common)
    p.add_argument("--image", action="append", default=[],
                   help="imagery (repeat --image/--labels for more sources, of any format, resolution and CRS): "
                        "GeoTIFF/COG/VRT or XYZ tile folder")
    p.add_argument("--labels", action="append", default=[], help="footprints for the preceding --image")
    p.add_argument("--area", action=AreaOfImage, help=AREA_HELP)
    p.add_argument("--out", help="model bundle to write (default train.out)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="adapt a model bundle to a new place from a few labelled buildings", **common)
    p.add_argument("--model", help="the bundle to start from (default: the shipped base model); its bands, ground "
                                   "resolution and target are kept")
    p.add_argument("--image", action="append", default=[], help="imagery of the new place (repeatable)")
    p.add_argument("--labels", action="append", default=[], help="footprints for the preceding --image")
    p.add_argument("--area", action=AreaOfImage, help=AREA_HELP)
    p.add_argument("--out", required=True, help="fine-tuned bundle to write")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("self-train", help="noisy-student self-training: a teacher labels unlabelled imagery, "
                                          "a noisier student learns from labels and pseudo-labels", **common)
    p.add_argument("--teacher", required=True, help="teacher model bundle (.ofp or .onnx)")
    p.add_argument("--image", action="append", default=[], help="labelled imagery (repeat --image/--labels)")
    p.add_argument("--labels", action="append", default=[], help="footprints for the preceding --image")
    p.add_argument("--unlabelled", action="append", default=[], help="imagery without labels (repeatable)")
    p.add_argument("--out", help="student bundle to write (default train.out)")
    p.set_defaults(func=cmd_self_train)

    p = sub.add_parser("detect", help="find buildings in a scene, write the buildings table", **common)
    p.add_argument("scene", help=SCENE_HELP)
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--out", help="buildings table: .parquet (default: SCENE_buildings.parquet here), .geojson, "
                                 ".fgb, .gpkg or .csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("suggest", help="the chips of a scene where new labels would teach the model most "
                                       "(uncertain, unlike its training data), as boxes for JOSM or QGIS", **common)
    p.add_argument("scene", help=SCENE_HELP)
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--n", type=int, help="chips to suggest (default suggest.n)")
    p.add_argument("--out", required=True, help="the chips: .geojson, .gpkg, .fgb, .parquet or .csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("scale", help="detect over an area of interest in quadkey cells (local or Ray), resumable",
                       **common)
    p.add_argument("scene", help=SCENE_HELP)
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output folder (a path, s3://bucket/prefix or gs://bucket/prefix): "
                                                "buildings/cell=<quadkey>/part-0.parquet, manifest.json, summary.json")
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser("evaluate", help="score detected buildings against true footprints at IoU ≥ 0.5", **common)
    p.add_argument("predicted", help="buildings table from detect")
    p.add_argument("truth", help="true footprints (any vector format)")
    p.add_argument("--json", help="metrics JSON to write (default PREDICTED.metrics.json)")
    p.add_argument("--report", help="folder for an HTML report (curves, breakdowns, error crops)")
    p.add_argument("--imagery", help="the scene that was detected: true buildings mostly off its valid pixels are "
                                    "not scored (evaluate.min_on_imagery), and the report shows image crops of errors")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="the model registry: register bundles, list them, promote a version to an "
                                      "alias (champion), roll back; detect --model models:/NAME@champion; lineage: "
                                      "the training stages of a bundle (default: the shipped base model)", **common)
    p.add_argument("action", choices=["list", "register", "promote", "rollback", "lineage"])
    p.add_argument("name", nargs="?", help="registered model name (list: all when left out); lineage: the bundle "
                                           "(default: the shipped base model)")
    p.add_argument("target", nargs="?", help="register: the bundle (.ofp); promote: the version number")
    p.add_argument("--alias", default="champion", help="promote / rollback: the alias (default: champion)")
    p.add_argument("--description", help="register: why this version exists")
    p.add_argument("--registry", help="MLflow tracking URI (default: $OPENFOOTPRINTS_REGISTRY, else "
                                      "sqlite:///~/.openfootprints/registry.db)")
    p.add_argument("--json", action="store_true", help="print the versions as JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("calibrate", help="fit the confidence calibration on a validation area; write a calibrated bundle",
                       **common)
    p.add_argument("predicted", help="buildings table from detect on the validation area")
    p.add_argument("truth", help="true footprints of that area")
    p.add_argument("--model", required=True, help="the bundle that made the detections")
    p.add_argument("--out", required=True, help="calibrated bundle to write")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("export", help="write a model bundle as ONNX (with its metadata) for ONNX Runtime", **common)
    p.add_argument("model", help="model bundle (.ofp)")
    p.add_argument("--out", help="ONNX file to write (default MODEL.onnx, or MODEL.int8.onnx with --int8)")
    p.add_argument("--int8", action="store_true", help="quantize to INT8 for the CPU (static, QDQ, per-channel "
                                                       "weights), calibrated on chips of real imagery")
    p.add_argument("--calibration", action="append", help="with --int8: imagery to calibrate on (repeatable; "
                                                          "default: the scenes the bundle was trained on)")
    p.add_argument("--chips", type=int, default=32, help="with --int8: calibration chips of 256 px (default 32)")
    p.add_argument("--stac", action="store_true", help="write the model's STAC Item (Machine Learning Model "
                                                       "extension) instead, default MODEL.stac.json")
    p.add_argument("--license", default="other", help="with --stac: the model's licence, an SPDX id (default: other)")
    p.add_argument("--attribution", help="with --stac: who to credit for the model's training data")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="the base model on a small real scene: detect, evaluate, draw (--synthetic: "
                                    "synthesize scenes and train first)", **common)
    p.add_argument("--synthetic", action="store_true", help="synthesize a training and a test scene, train on the "
                                                            "first (demo.train_minutes), detect on the second")
    p.add_argument("--model", help="the model the real demo runs (default: the shipped base model)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="an HTTP service: POST a GeoTIFF to /detect, get its buildings (limits: serve.*)",
                       **common)
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--view", metavar="RESULT", help="also serve the web map of this buildings table at /viewer/")
    p.add_argument("--imagery", help="with --view: the scene to show under the buildings")
    p.add_argument("--truth", help="with --view: true footprints to outline")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("view", help="show a buildings table on a web map (imagery, confidence, truth) in the browser",
                       **common)
    p.add_argument("result", help="buildings table from detect (any of its formats)")
    p.add_argument("--imagery", help="the scene under the buildings: GeoTIFF/COG/VRT or XYZ tile folder")
    p.add_argument("--truth", help="true footprints to outline (any vector format)")
    p.add_argument("--port", type=int, help="port to listen on (default view.port, 8765; 0 = any free port)")
    p.add_argument("--host", help="address to listen on (default view.host, 127.0.0.1)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser; just print the address")
    p.set_defaults(func=cmd_view)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                  "lightning.fabric.utilities.seed", "mlflow", "alembic", "pyogrio", "codecarbon"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-") or "=" not in o]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        cfg = load_config(overrides)
        args.func(args, cfg)
    except InputError as err:
        print(f"openfootprints: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # permissions, full disk, a folder where a file was expected
        if err.errno in OUT_OF_SPACE:  # a write that failed midway, outside the outputs (which say their name)
            where = err.filename or f"a working file (in {tempfile.gettempdir()}, or beside the output)"
            print(f"openfootprints: error: disk full or file too large while writing {where} "
                  f"({os.strerror(err.errno)}); free some space and run again", file=sys.stderr)
            return 2
        where = f"{err.filename}: " if err.filename else ""
        print(f"openfootprints: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("openfootprints: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
