"""The pictures of docs/tutorial.md, drawn from the files its commands wrote, so the page cannot drift from the code.

    python docs/tutorial_pictures.py TUTORIAL_DIR [--out docs/tutorial]

Writes ``detect.png`` (the base model's buildings over the whole scene) and ``before_after.png`` (the check
patch: the base model on the left, the fine-tuned one on the right, each titled with its scores from
``base.json`` / ``finetuned.json``). Detected outlines are magenta, OpenStreetMap's cyan.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from openfootprints.demo import DEMO_LABELS, DEMO_SCENE, draw_outlines
from openfootprints.io.vector import read_polygons, read_table

CYAN, MAGENTA = (0, 255, 255), (255, 0, 255)
TITLE_PX = 36  # the band above each panel that holds its title (two lines)


def titled(panel: Image.Image, title: str) -> Image.Image:
    """``panel`` under a white band with ``title`` in it (PIL's built-in font: no font file needed)."""
    out = Image.new("RGB", (panel.width, panel.height + TITLE_PX), "white")
    out.paste(panel, (0, TITLE_PX))
    ImageDraw.Draw(out).multiline_text((6, 6), title, fill="black", spacing=4)
    return out


def scores_line(metrics: Path) -> str:
    m = json.loads(metrics.read_text())
    return (f"F1 {m['f1']:.2f}, precision {m['precision']:.2f}, recall {m['recall']:.2f}\n"
            f"{m['n_predicted']} found, {m['n_true']} true")


def east_patch(picture: Path, metrics: Path) -> Image.Image:
    """The part of a whole-scene picture that ``evaluate.bbox`` scored (its bounds are in the metrics file)."""
    import rasterio
    from rasterio.warp import transform_bounds

    bbox = json.loads(metrics.read_text())["bbox"]
    with rasterio.open(DEMO_SCENE) as src:
        west, south, east, north = transform_bounds("EPSG:4326", src.crs, *bbox)
        inverse = ~src.transform
        cols, rows = zip(inverse * (west, north), inverse * (east, south))
        box = (max(0, int(cols[0])), max(0, int(rows[0])), min(src.width, int(np.ceil(cols[1]))),
               min(src.height, int(np.ceil(rows[1]))))
    patch = Image.open(picture).crop(box)
    return patch.resize((patch.width * 2, patch.height * 2), Image.Resampling.NEAREST)  # small: shown twice as large


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tutorial", type=Path, help="the folder the tutorial's commands wrote (tutorial/)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("tutorial"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    truth = read_polygons(DEMO_LABELS)
    pictures = {}
    for name in ("base", "finetuned"):
        pictures[name] = draw_outlines(DEMO_SCENE, [(truth, CYAN), (read_table(args.tutorial / f"{name}.parquet"),
                                                                     MAGENTA)], args.out / f"{name}_outlines.png")
    detect = titled(Image.open(pictures["base"]), "base model, out of the box")
    detect.save(args.out / "detect.png")
    panels = [titled(east_patch(pictures[name], args.tutorial / f"{name}.json"),
                     f"{label}: {scores_line(args.tutorial / f'{name}.json')}")
              for name, label in (("base", "base"), ("finetuned", "fine-tuned"))]
    gap = 8
    side = Image.new("RGB", (sum(p.width for p in panels) + gap, max(p.height for p in panels)), "white")
    side.paste(panels[0], (0, 0))
    side.paste(panels[1], (panels[0].width + gap, 0))
    side.save(args.out / "before_after.png")
    for name in pictures.values():
        Path(name).unlink()
    print(f"wrote {args.out / 'detect.png'} and {args.out / 'before_after.png'}")


if __name__ == "__main__":
    main()
