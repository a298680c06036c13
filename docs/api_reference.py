"""Build the Python API reference (HTML) with pdoc:  python docs/api_reference.py [OUT]  (default: docs/api).

The reference covers what a script or notebook uses: the API (``openfootprints.detect`` and the rest, from
``openfootprints.api``), its configuration, and the model bundle it loads. ``make docs`` runs this; the test
suite builds it too, so the reference never breaks unnoticed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pdoc
import pdoc.render

MODULES = ["openfootprints.api", "openfootprints.configuration", "openfootprints.model.bundle",
           "openfootprints.model.architectures"]


def build(out: Path) -> list[Path]:
    """Write the reference pages into ``out``; returns the pages written (one per module, and an index)."""
    pdoc.render.configure(docformat="restructuredtext", footer_text="openfootprints")
    pdoc.pdoc(*MODULES, output_directory=out)
    return sorted(out.rglob("*.html"))


if __name__ == "__main__":
    pages = build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "api")
    print(f"{len(pages)} pages in {pages[0].parent}")
