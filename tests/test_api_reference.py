"""The API reference builds, and documents every public function of ``openfootprints`` with its docstring."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

import openfootprints
from openfootprints import api

pytestmark = pytest.mark.slow  # imports every documented module

ROOT = Path(__file__).resolve().parents[1]


def without_markup(text: str) -> str:
    """The words of a page or docstring run together: no tags, no RST backticks, no whitespace."""
    return re.sub(r"\s+", "", html.unescape(re.sub(r"<[^>]+>", " ", text)).replace("``", ""))


def test_reference_documents_every_public_function(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "api_reference.py"), str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = tmp_path / "openfootprints" / "api.html"
    anchors = set(re.findall(r'id="([A-Za-z_]+)"', page.read_text()))
    public = set(openfootprints.__all__) - {"__version__"}
    assert public <= anchors, f"not in the reference: {public - anchors}"
    text = without_markup(page.read_text())
    for name in public:
        first_line = getattr(api, name).__doc__.split("\n")[0]
        assert without_markup(first_line)[:40] in text, name
    assert (tmp_path / "openfootprints" / "configuration.html").exists()
