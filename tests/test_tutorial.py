"""docs/tutorial.md runs as written: every bash block, one after the other, in a fresh folder, with the shipped
base model; the viewer is started and stopped; the pictures script draws from what the commands wrote."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from openfootprints.model.base import BASE_MODEL

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
pytestmark = [pytest.mark.slow,  # fine-tunes a model
              pytest.mark.skipif(not BASE_MODEL.exists(), reason="no base model in this checkout")]


def tutorial_script(port: int) -> str:
    """The tutorial's bash blocks as one script: set up is the test's own (the venv runs it), the fine-tune is
    short, and each viewer is served for a few seconds on a free port, then stopped."""
    blocks = re.findall(r"```bash\n(.*?)```", TUTORIAL.read_text(), re.S)
    script = "\n".join(blocks).replace("make setup && source .venv/bin/activate\n", "")
    assert "finetune.max_minutes=5" in script
    script = script.replace("finetune.max_minutes=5", "finetune.max_minutes=0.4")
    lines = []
    for line in script.splitlines():
        if line.startswith("openfootprints view "):  # a server: it must come up, then it is stopped
            line = (f"(timeout -s INT 40 {line} --port {port} > view.log 2>&1 || [ $? = 124 ]; "
                    "grep -q 'viewer at http' view.log || { cat view.log; exit 1; })")  # 124: stopped by timeout
        lines.append(line)
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_tutorial_runs_as_written_and_the_fine_tune_is_scored_on_the_patch_it_never_saw(tmp_path):
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", tutorial_script(free_port())], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "tutorial"
    base, tuned = (json.loads((out / f"{n}.json").read_text()) for n in ("base", "finetuned"))
    assert base["n_true"] == tuned["n_true"] > 10  # the same east patch scored twice
    assert 0 < len(json.loads((out / "chips.geojson").read_text())["features"]) <= 20
    assert (out / "before_after.png").stat().st_size > 10_000 and (out / "detect.png").exists()
    assert (out / "report_finetuned" / "index.html").exists() and (out / "buildings.gpkg").exists()
    assert "buildings traced" in done.stdout


def test_the_notebook_runs_cell_by_cell(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.chdir(tmp_path)
    notebook = json.loads((ROOT / "docs" / "tutorial.ipynb").read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            code = "".join(cell["source"]).replace("max_minutes=5", "max_minutes=0.4")
            exec(compile(code, "tutorial.ipynb", "exec"), namespace)
    try:
        assert len(namespace["buildings"]) > 0 and namespace["buildings"].crs.to_epsg() == 4326
        assert len(namespace["chips"]) == 20 and Path("kampala.ofp").exists()
        scores = namespace["scores"]
        assert scores["base"]["n_true"] == scores["fine-tuned"]["n_true"] > 10
        assert urllib.request.urlopen(namespace["shown"].url, timeout=10).status == 200
    finally:
        namespace["shown"].close()
