"""The model's STAC Item (Machine Learning Model extension): what catalogues read, validated by stac-model."""

from __future__ import annotations

import json
import shutil

import pystac
from stac_model.schema import MLModelExtension, MLModelProperties

import openfootprints as ofp
from openfootprints.cli import main
from openfootprints.model.bundle import load_bundle


def test_export_stac_describes_the_bundle_for_catalogues(tiny_bundle, tmp_path, capsys):
    model = shutil.copy(tiny_bundle, tmp_path / "tiny.ofp")
    (tmp_path / "tiny.onnx").write_bytes(b"an export beside the bundle")
    assert main(["export", str(model), "--stac", "--license", "CC-BY-4.0", "--attribution", "© contributors"]) == 0
    assert "wrote" in capsys.readouterr().out
    written = json.loads((tmp_path / "tiny.stac.json").read_text())
    item = pystac.Item.from_dict(written)
    assert MLModelExtension.get_schema_uri() in item.stac_extensions
    bundle = load_bundle(model)
    assert item.properties["gsd"] == bundle.resolution_m and item.properties["license"] == "CC-BY-4.0"
    assert item.properties["attribution"] == "© contributors"
    mlm = {k: v for k, v in item.properties.items() if k.startswith("mlm:") or k == "file:size"}
    properties = MLModelProperties(**{k.removeprefix("mlm:"): v for k, v in mlm.items()})  # stac-model validates
    (model_input,) = properties.input
    assert model_input.input.shape == [-1, 3, bundle.window, bundle.window]
    assert [(s.mean, s.stddev) for s in model_input.value_scaling] == list(zip(bundle.mean, bundle.std))
    assert properties.total_parameters == sum(t.numel() for t in bundle.state_dict.values())
    assert item.assets["model"].href == "./tiny.ofp" and item.assets["onnx"].href == "./tiny.onnx"
    assert item.assets["model"].extra_fields["mlm:artifact_type"] == "torch.save"


def test_the_api_returns_the_item(tiny_bundle, tmp_path):
    item = ofp.stac_item(tiny_bundle, out=tmp_path / "item.json")
    assert item["properties"]["mlm:architecture"].startswith("U-Net") and (tmp_path / "item.json").exists()
    assert ofp.stac_item(tiny_bundle)["properties"]["license"] == "other"


def test_a_stac_item_must_be_json(tiny_bundle, tmp_path, capsys):
    assert main(["export", str(tiny_bundle), "--stac", "--out", str(tmp_path / "item.xml")]) != 0
    assert "unknown output format '.xml'" in capsys.readouterr().err
