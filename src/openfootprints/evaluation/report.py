"""The evaluation report: one self-contained HTML page (figures inlined as PNG).

It shows the scores, a precision–recall curve, a reliability diagram of the raw and the calibrated
confidence, F1 by building size, precision thresholds per region, and image crops of the most confident
false positives and the largest false negatives with predicted (magenta) and true (cyan) outlines.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from openfootprints.evaluation.calibration import reliability  # noqa: E402
from openfootprints.evaluation.metrics import Evaluation  # noqa: E402
from openfootprints.io.raster import display_rgb  # noqa: E402

N_CROPS = 8


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def pr_curve_png(result: Evaluation) -> str:
    order = np.argsort(-result.confidence, kind="stable")
    tp = np.cumsum(result.matched[order] >= 0)
    n = np.arange(1, len(order) + 1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    if len(order) and result.scores.n_true:
        ax.plot(tp / result.scores.n_true, tp / n, color="#7b2cbf")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"precision–recall at IoU {result.scores.iou_threshold:.2f} (AP {result.scores.ap:.3f})")
    ax.grid(alpha=0.3)
    return _png(fig)


def reliability_png(result: Evaluation, raw_confidence: np.ndarray | None) -> str:
    is_tp = result.matched >= 0
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    curves = [("confidence", result.confidence, "#7b2cbf")]
    if raw_confidence is not None and not np.allclose(raw_confidence, result.confidence):
        curves = [("raw (before calibration)", raw_confidence, "#999999"), ("calibrated", result.confidence, "#7b2cbf")]
    for label, conf, colour in curves:
        rows = [r for r in reliability(conf, is_tp) if r["count"]]
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=label, color=colour)
    ax.set(xlabel="confidence", ylabel="fraction that are true buildings", xlim=(0, 1), ylim=(0, 1),
           title="reliability")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def f1_by_size_png(result: Evaluation) -> str:
    rows = [r for r in result.by_size if r["n_true"] or r["n_predicted"]]
    labels = [f"{r['min_m2']:.0f}–{r['max_m2']:.0f}" if math.isfinite(r["max_m2"]) else f"≥{r['min_m2']:.0f}"
              for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, [0 if math.isnan(r["f1"]) else r["f1"] for r in rows], color="#7b2cbf")
    for i, r in enumerate(rows):
        ax.text(i, 0.02, f"n={r['n_true']}", ha="center", color="white", fontsize=8)
    ax.set(xlabel="building area (m²)", ylabel="F1", ylim=(0, 1), title="F1 by building size")
    return _png(fig)


def crop_png(scene, geom_scene_crs, predicted: np.ndarray, truth: np.ndarray, pad_px: int = 24,
             size: int = 192) -> str | None:
    """An RGB crop around one building with predicted and true outlines (all geometries in the scene's CRS)."""
    inv = ~scene.transform
    minx, miny, maxx, maxy = geom_scene_crs.bounds
    c0, r0 = inv @ (minx, maxy)
    c1, r1 = inv @ (maxx, miny)
    col0, row0 = max(0, int(min(c0, c1)) - pad_px), max(0, int(min(r0, r1)) - pad_px)
    col1, row1 = min(scene.width, int(max(c0, c1)) + pad_px), min(scene.height, int(max(r0, r1)) + pad_px)
    if col1 <= col0 or row1 <= row0:
        return None  # the building lies outside the imagery
    image, _ = scene.read(Window(col0, row0, col1 - col0, row1 - row0))
    rgb = (display_rgb(image, percentiles=(1, 99)) * 255).astype(np.uint8).transpose(1, 2, 0)
    scale = size / max(rgb.shape[:2])
    picture = Image.fromarray(np.ascontiguousarray(rgb)).resize(
        (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))), Image.Resampling.NEAREST)
    pen = ImageDraw.Draw(picture)
    for geoms, colour in ((truth, (0, 255, 255)), (predicted, (255, 0, 255))):
        for g in geoms:
            for poly in getattr(g, "geoms", [g]):
                pts = [((inv @ xy)[0] - col0, (inv @ xy)[1] - row0) for xy in poly.exterior.coords]
                pen.line([(x * scale, y * scale) for x, y in pts], fill=colour, width=2)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def error_crops(scene, predicted: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, result: Evaluation) -> dict[str, list]:
    """Crops of the most confident false positives and the largest false negatives."""
    pred = predicted.to_crs(scene.crs).geometry.to_numpy()
    true = truth.to_crs(scene.crs).geometry.to_numpy()
    fp = np.flatnonzero(result.matched < 0)
    fp = fp[np.argsort(-result.confidence[fp], kind="stable")][:N_CROPS]
    fn = np.flatnonzero(~result.truth_matched)
    fn = fn[np.argsort(-truth.to_crs(truth.estimate_utm_crs()).area.to_numpy()[fn], kind="stable")][:N_CROPS] if len(fn) else fn

    def near(geoms, around):
        return geoms[[g.intersects(around.buffer(around.length)) for g in geoms]] if len(geoms) else geoms

    crops = {
        "false positives (most confident)": [
            (crop_png(scene, pred[i], near(pred, pred[i]), near(true, pred[i])), f"confidence {result.confidence[i]:.2f}")
            for i in fp],
        "false negatives (largest)": [
            (crop_png(scene, true[i], near(pred, true[i]), near(true, true[i])), "missed") for i in fn],
    }
    return {name: [(png, cap) for png, cap in items if png is not None] for name, items in crops.items()}


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])

    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else html.escape(str(v))

    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out: str | Path, predicted: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, result: Evaluation,
                 scene=None, title: str = "openfootprints evaluation") -> Path:
    """Write the HTML page to ``out``; image crops only when ``scene`` (a Scene) is given."""
    raw = predicted["raw_confidence"].to_numpy(np.float64) if "raw_confidence" in predicted else None
    figures = [pr_curve_png(result), reliability_png(result, raw), f1_by_size_png(result)]
    scores = [{"metric": k, "value": v} for k, v in result.scores.to_dict().items()]
    scores += [{"metric": k, "value": v} for k, v in result.extra.items() if not isinstance(v, list)]
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Scores</h2>", _table(scores), "<h2>Curves</h2>",
             "".join(f'<img src="data:image/png;base64,{f}">' for f in figures),
             "<h2>By building size</h2>", _table(result.by_size)]
    if result.errors:  # docs/metrics.md, "What the errors are"
        parts += ["<h2>What the errors are</h2>",
                  _table([{"error": kind.replace("_", " "), **counts} for kind, counts in result.errors.items()])]
    if result.by_region:
        parts += ["<h2>By region</h2>", _table(result.by_region)]
    parts += ["<h2>Confidence thresholds for 80, 85 and 90 % precision</h2>",
              _table(result.extra.get("precision_thresholds", []))]
    if scene is not None:
        for name, crops in error_crops(scene, predicted, truth, result).items():
            items = "".join(f'<figure><img src="data:image/png;base64,{png}"><figcaption>{html.escape(cap)}'
                            f"</figcaption></figure>" for png, cap in crops)
            parts += [f"<h2>{html.escape(name)}</h2><p>magenta: detected, cyan: true</p>", items or "<p>none</p>"]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}"
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{margin:4px}"
            "figure{display:inline-block;margin:4px}figcaption{font-size:80%;text-align:center}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>")
    Path(out).write_text(page, encoding="utf-8")
    return Path(out)
