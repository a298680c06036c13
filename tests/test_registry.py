"""The model registry: register, list, promote, roll back, and detect with models:/NAME@ALIAS (SQLite, offline)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from openfootprints.cli import main
from openfootprints.model.bundle import file_sha256, load_bundle, save_bundle

pytestmark = pytest.mark.slow  # creates MLflow databases


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    """A fresh SQLite registry for the test, through the environment (as `detect --model models:/…` reads it)."""
    uri = f"sqlite:///{tmp_path / 'registry' / 'registry.db'}"
    (tmp_path / "registry").mkdir()
    monkeypatch.setenv("OPENFOOTPRINTS_REGISTRY", uri)
    return uri


def models(capsys, *argv) -> list[dict]:
    assert main(["models", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def two_bundles(tiny_bundle, folder):
    """The tiny bundle and a second one with other weights (another training run)."""
    first = shutil.copy(tiny_bundle, folder / "first.ofp")
    other = load_bundle(tiny_bundle)
    other.state_dict = {k: v + 0.01 if v.is_floating_point() else v for k, v in other.state_dict.items()}
    other.training = {"metrics": {"val_pixel_iou": 0.61}}
    return first, save_bundle(other, folder / "second.ofp")


def test_register_promote_and_roll_back(registry, tiny_bundle, tmp_path, capsys):
    first, second = two_bundles(tiny_bundle, tmp_path)
    (v1,) = models(capsys, "register", "buildings", str(first))
    (v2,) = models(capsys, "register", "buildings", str(second), "--description", "more places")
    assert (v1["version"], v2["version"]) == (1, 2) and v2["metrics"] == {"val_pixel_iou": 0.61}
    assert v2["sha256"] == file_sha256(second) and v2["description"] == "more places"
    models(capsys, "promote", "buildings", "1")
    models(capsys, "promote", "buildings", "2")
    models(capsys, "promote", "buildings", "1", "--alias", "challenger")
    listed = {r["version"]: r["aliases"] for r in models(capsys, "list")}
    assert listed == {2: ["champion"], 1: ["challenger"]}
    (back,) = models(capsys, "rollback", "buildings")
    assert back["version"] == 1 and back["aliases"] == ["challenger", "champion"]
    assert main(["models", "rollback", "buildings"]) == 2  # nothing left to roll back to
    assert "nothing to roll back to" in capsys.readouterr().err


def test_detect_runs_the_registered_champion_and_refuses_a_changed_bundle(registry, tiny_bundle, tiny_scene,
                                                                         tmp_path, capsys):
    first, _ = two_bundles(tiny_bundle, tmp_path)
    models(capsys, "register", "buildings", str(first))
    models(capsys, "promote", "buildings", "1")
    torch.save({"not": "a bundle"}, first)  # the registry keeps its own copy: the user's file may change
    out = tmp_path / "b.parquet"
    assert main(["detect", str(tiny_scene[0]), "--model", "models:/buildings@champion", "--out", str(out),
                 "--quiet", "tracking.energy=false"]) == 0
    assert out.exists()
    capsys.readouterr()
    (stored,) = models(capsys, "list", "buildings")
    with open(stored["source"], "ab") as f:
        f.write(b"tampered")
    assert main(["detect", str(tiny_scene[0]), "--model", "models:/buildings/1", "--out", str(out)]) == 2
    assert "changed after it was registered" in capsys.readouterr().err


def test_unknown_names_and_bad_usage_are_one_line_errors(registry, capsys):
    assert main(["models", "list", "nothing"]) == 2
    assert "models:/nothing: no such registered model" in capsys.readouterr().err
    assert main(["models", "promote", "buildings"]) == 2
    assert "usage: openfootprints models promote NAME VERSION" in capsys.readouterr().err
    assert main(["detect", "x.tif", "--model", "models:/nothing@champion", "--out", "x.parquet"]) == 2
    assert "models:/nothing" in capsys.readouterr().err
