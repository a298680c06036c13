import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch

from conftest import detect_in_child
from openfootprints.cli import main
from openfootprints.errors import InputError
from openfootprints.model.bundle import load_bundle
from openfootprints.model.onnx import OnnxNetwork, export_onnx, load_model


@pytest.fixture(scope="module")
def exported(tiny_bundle, tmp_path_factory):
    return export_onnx(load_bundle(tiny_bundle), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_onnx_runtime_gives_the_same_probabilities(tiny_bundle, exported):
    bundle = load_bundle(tiny_bundle)
    x = torch.randn(3, 3, 96, 160)  # batch, height and width differ from the export example
    with torch.no_grad():
        expected = torch.sigmoid(bundle.network()(x)).numpy()
    got = 1 / (1 + np.exp(-OnnxNetwork(exported)(x.numpy())))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4


def test_onnx_file_carries_the_bundle_metadata(tiny_bundle, exported):
    meta = load_model(exported)
    bundle = load_bundle(tiny_bundle)
    assert meta.bands == bundle.bands and meta.mean == bundle.mean and meta.window == bundle.window
    assert meta.architecture == bundle.architecture and meta.training["onnx_path"] == str(exported)


def test_onnx_without_metadata_is_refused(tmp_path, tiny_bundle):
    import onnx

    path = export_onnx(load_bundle(tiny_bundle), tmp_path / "m.onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    with pytest.raises(InputError, match="without openfootprints metadata"):
        load_model(path)


def test_detect_with_onnx_and_torch_gives_the_same_buildings(tmp_path, capsys, tiny_scene, tiny_bundle, exported):
    assert main(["detect", str(tiny_scene[0]), "--model", str(tiny_bundle), "--out", str(tmp_path / "t.geojson"),
                 "--quiet", "detect.engine=torch", "detect.threshold=0.45"]) == 0
    assert main(["detect", str(tiny_scene[0]), "--model", str(exported), "--out", str(tmp_path / "o.geojson"),
                 "--quiet", "detect.threshold=0.45"]) == 0
    assert main(["detect", str(tiny_scene[0]), "--model", str(tiny_bundle), "--out", str(tmp_path / "a.geojson"),
                 "--quiet", "detect.engine=onnx", "detect.threshold=0.45"]) == 0
    capsys.readouterr()
    t, o, a = (gpd.read_file(tmp_path / f"{n}.geojson") for n in "toa")
    assert len(t) > 0
    assert len(t) == len(o) == len(a)
    utm = t.estimate_utm_crs()
    for other in (o, a):  # probabilities agree to ~1e-6, so at most a pixel may round to the other side
        x, y = t.to_crs(utm).geometry.to_numpy(), other.to_crs(utm).geometry.to_numpy()
        iou = shapely.area(shapely.intersection(x, y)) / shapely.area(shapely.union(x, y))
        assert iou.min() > 0.95
        assert np.abs(t["confidence"] - other["confidence"]).max() <= 2 / 255


def test_export_command(tmp_path, capsys, tiny_bundle):
    assert main(["export", str(tiny_bundle), "--out", str(tmp_path / "x.onnx")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "x.onnx").stat().st_size > 10_000


def test_a_bundle_is_exported_once_in_a_child_process_and_then_taken_from_the_cache(tmp_path, tiny_bundle,
                                                                                  monkeypatch):
    from openfootprints.model import onnx

    monkeypatch.setenv("OPENFOOTPRINTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx, "export_onnx", lambda *a: pytest.fail("exported in this process"))
    first = onnx.cached_onnx(tiny_bundle, tmp_path / "fallback")  # the child does not see the patch
    assert first.parent == tmp_path / "cache" / "onnx" and first.exists()
    assert onnx.read_onnx_metadata(first).architecture == load_bundle(tiny_bundle).architecture
    monkeypatch.setattr(onnx, "export_in_child", lambda *a: pytest.fail("exported again"))
    assert onnx.cached_onnx(tiny_bundle, tmp_path / "fallback") == first
    (tmp_path / "fallback").mkdir()
    (tmp_path / "a-file").write_text("")  # a cache that cannot be made: this run only, into the fallback folder
    monkeypatch.setenv("OPENFOOTPRINTS_CACHE", str(tmp_path / "a-file" / "cache"))
    monkeypatch.setattr(onnx, "export_in_child", lambda model, path: path.write_bytes(b"onnx"))
    assert onnx.cached_onnx(tiny_bundle, tmp_path / "fallback").parent == tmp_path / "fallback"


@pytest.mark.slow
def test_int8_export_is_calibrated_on_imagery_and_stays_close_to_fp32(tmp_path, capsys, tiny_scene, tiny_bundle,
                                                                      exported):
    out = tmp_path / "tiny.int8.onnx"
    assert main(["export", str(tiny_bundle), "--int8", "--calibration", str(tiny_scene[0]), "--chips", "4",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "not checked against fp32 (the bundle's training record names no training data" in said
    int8 = load_model(out)
    assert int8.training["quantization"]["check"] is None  # so detect runs it only when asked to
    assert int8.training["quantization"]["calibration_chips"] == 4
    assert "central 99.99 %" in int8.training["quantization"]["kind"]
    assert int8.training["quantization"]["bias_corrected"] > 0
    assert int8.mean == load_bundle(tiny_bundle).mean
    import onnx
    graph = onnx.load(str(out)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    dequantized = {o for node in graph.node if node.op_type == "DequantizeLinear" for o in node.output}
    kept = int8.training["quantization"]["fp32_nodes"]
    assert len(kept) == 2 and any("conv_stem" in k for k in kept) and any("segmentation_head" in k for k in kept)
    convs = {node.name: node for node in graph.node if node.op_type == "Conv"}
    for name in kept:  # the image's first convolution and the output head: fp32 weights, not dequantized ones
        assert convs[name].input[1] not in dequantized
    assert any(node.input[1] in dequantized for name, node in convs.items() if name not in kept)
    from openfootprints.model.quantize import calibration_chips
    x = calibration_chips(int8, [str(tiny_scene[0])], 1, seed=5)[0][:, :, :128, :128]  # imagery like the calibration's
    p32 = 1 / (1 + np.exp(-OnnxNetwork(exported)(x)))
    p8 = 1 / (1 + np.exp(-OnnxNetwork(out)(x)))
    # 8 bits of range on each tensor: differences small against the probabilities (quality: bench/cpu_int8.py)
    assert np.abs(p8 - p32).mean() < 0.1 and np.abs(p8 - p32).max() < 0.5
    assert main(["detect", str(tiny_scene[0]), "--model", str(out), "--out", str(tmp_path / "b.geojson"),
                 "--quiet", "tracking.energy=false"]) == 0


@pytest.mark.slow
def test_bias_correction_moves_each_quantized_convolutions_mean_output_onto_fp32s(tmp_path, tiny_scene, tiny_bundle):
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from openfootprints.model.quantize import (calibration_chips, channel_means, correct_biases, pre_activation,
                                               quantize_int8)

    bundle = load_bundle(tiny_bundle)
    chips = calibration_chips(bundle, [str(tiny_scene[0])], 4)
    chips.append(chips[0][:, :, :96, :96])  # a smaller scene's chip: sizes may differ
    int8 = onnx.load(str(quantize_int8(bundle, tmp_path / "t.int8.onnx", [str(tiny_scene[0])], 4)))
    export_onnx(bundle, tmp_path / "fp32.onnx")
    quant_pre_process(str(tmp_path / "fp32.onnx"), str(tmp_path / "prepared.onnx"), skip_symbolic_shape=True)
    reference = onnx.load(str(tmp_path / "prepared.onnx"))
    corrected = correct_biases(int8, reference, chips)  # as export --int8 did: nothing left to move
    convs = {node.output[0]: node for node in int8.graph.node if node.op_type == "Conv"}
    assert len(corrected) >= len(convs) - 4  # all but fp32 ones (stem, head) and biases two share (this net's zeros)
    producer = {out: node for node in int8.graph.node for out in node.output}
    biases = {name: producer[convs[name].input[2]].input[0] for name in corrected}

    def offsets() -> np.ndarray:  # |INT8 mean − fp32 mean| per channel, every corrected convolution
        got = channel_means(int8, corrected, chips, 8)
        want = channel_means(reference, [pre_activation(reference, name) for name in corrected], chips, 8)
        return np.concatenate([np.abs(g - w) for g, w in zip(got, want)])

    initializers = {init.name: init for init in int8.graph.initializer}
    assert offsets().max() < 0.05
    for name in biases.values():  # every bias pushed off by 40 of its steps
        values = numpy_helper.to_array(initializers[name])
        initializers[name].CopyFrom(numpy_helper.from_array(values + 40, name))
    assert offsets().max() > 0.05
    assert correct_biases(int8, reference, chips) == corrected
    assert offsets().max() < 0.05


def test_int8_export_without_imagery_is_refused(tmp_path, tiny_bundle, capsys):
    assert main(["export", str(tiny_bundle), "--int8", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "--calibration" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


def test_detection_with_an_onnx_model_never_imports_torch(tmp_path, tiny_scene, exported):
    _, heavy = detect_in_child(tiny_scene[0], exported, tmp_path / "b.parquet")
    assert heavy == []


def test_detect_on_the_cpu_refuses_a_missing_or_broken_bundle_in_one_line(tmp_path, tiny_scene, capsys, monkeypatch):
    monkeypatch.setenv("OPENFOOTPRINTS_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken.ofp"
    broken.write_bytes(b"not a bundle")
    for model, says in [(tmp_path / "nope.ofp", "no such model bundle"), (broken, "not an openfootprints model bundle")]:
        out = tmp_path / f"{model.stem}.parquet"
        assert main(["detect", str(tiny_scene[0]), "--model", str(model), "--out", str(out), "--quiet",
                     "tracking.energy=false", "detect.device=cpu"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(model) in err and says in err, err
        assert not out.exists()


@pytest.mark.slow
def test_a_bundle_on_the_cpu_runs_its_cached_export_without_pytorch(tmp_path, tiny_scene, tiny_bundle, monkeypatch):
    from openfootprints.configuration import load_config
    from openfootprints.model import onnx
    from openfootprints.pipeline import load_predictor

    monkeypatch.setenv("OPENFOOTPRINTS_CACHE", str(tmp_path / "cache"))  # the child process inherits it
    exported = onnx.cached_onnx(tiny_bundle, tmp_path)
    said, heavy = detect_in_child(tiny_scene[0], tiny_bundle, tmp_path / "b.parquet", "detect.device=cpu")
    assert "torch" not in heavy and f'"engine": "onnx ({exported.name})"' in said, said
    predictor = load_predictor(load_config(["detect.device=cpu"]), str(tiny_bundle), tmp_path)
    assert predictor.onnx_file == exported
    assert {k: v for k, v in predictor.bundle.metadata().items() if k != "training"} == \
        {k: v for k, v in load_bundle(tiny_bundle).metadata().items() if k != "training"}  # its contract, to the value
    torch_run = load_predictor(load_config(["detect.device=cpu", "detect.engine=torch"]), str(tiny_bundle), tmp_path)
    assert torch_run.onnx_file is None  # PyTorch when asked for


@pytest.mark.slow
@pytest.mark.parametrize("arch, encoder, first", [("fpn", "resnet18", "conv1"), ("deeplabv3+", "resnet18", "conv1")])
def test_int8_keeps_the_first_and_last_convolution_of_any_architecture(tmp_path, arch, encoder, first):
    import onnx
    import torch

    from openfootprints.model.architectures import Architecture
    from openfootprints.model.network import build_network
    from openfootprints.model.quantize import fp32_nodes

    net = build_network(Architecture(arch=arch, encoder=encoder, decoder_channels=[]), pretrained=False).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 64, 64),), str(path), input_names=["image"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    kept = fp32_nodes(onnx.load(str(path)))
    assert first in kept[0] and "segmentation_head" in kept[1]  # the head ends in a resize: traced back to its conv
