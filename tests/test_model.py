import pytest
import torch
import timm

from openfootprints.errors import InputError
from openfootprints.model.bundle import FORMAT, Bundle, fingerprint_files, load_bundle, save_bundle, upgraded
from openfootprints.model.network import Architecture, build_network, imagenet_state_dict

from conftest import tiny_architecture


@pytest.mark.parametrize("encoder", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_packaged_imagenet_weights_map_onto_timm(encoder):
    weights = imagenet_state_dict(encoder)
    model = timm.create_model(encoder, pretrained=False)
    model.load_state_dict(weights)  # strict: every key and shape fits
    assert weights["classifier.weight"].shape == (1000, 1280)
    # trained weights, not an initialisation: batch-norm statistics moved away from timm's 0 / 1
    assert weights["bn1.running_var"].std() > 0.1


def test_pretrained_unet_takes_any_band_count():
    net = build_network(Architecture(in_channels=4, decoder_channels=[16, 16, 8, 8, 8]), pretrained=True)
    stem = net.encoder.model.conv_stem.weight
    assert stem.shape[1] == 4
    reference = imagenet_state_dict("efficientnet_lite0")["conv_stem.weight"]
    assert torch.allclose(stem[:, :3], reference * 3 / 4)  # repeated and rescaled, as timm adapts stems
    out = net(torch.zeros(2, 4, 64, 64))
    assert out.shape == (2, 1, 64, 64)


def test_other_encoders_build_from_scratch_and_unknown_ones_are_clear_errors():
    assert build_network(Architecture(encoder="resnet18", decoder_channels=[16, 16, 8, 8, 8]))(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    with pytest.raises(InputError, match="not an encoder"):
        build_network(Architecture(encoder="no_such_net"))
    with pytest.raises(InputError, match="pretrained"):
        build_network(Architecture(encoder="resnet18"), pretrained=True)


def test_bundle_round_trip_gives_the_same_predictions(tmp_path):
    arch = tiny_architecture()
    net = build_network(arch).eval()
    bundle = Bundle(arch, [1, 2, 3], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0], 0.5, threshold=0.4,
                    training={"steps": 3}, state_dict=net.state_dict())
    loaded = load_bundle(save_bundle(bundle, tmp_path / "m.ofp"))
    assert loaded.metadata() == bundle.metadata()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.network()(x), net(x))


def test_bundles_of_the_first_format_load_through_the_upgraders(tmp_path, tiny_bundle):
    payload = torch.load(tiny_bundle, weights_only=True)
    payload["format_version"] = 1
    del payload["min_confidence"]  # v1 had no confidence cut
    torch.save(payload, tmp_path / "v1.ofp")
    old, new = load_bundle(tmp_path / "v1.ofp"), load_bundle(tiny_bundle)
    assert upgraded({"format_version": 1, "threshold": 0.4}, "v1.ofp") == {
        "format_version": 2, "threshold": 0.4, "min_confidence": 0.0}
    assert old.metadata() == {**new.metadata(), "min_confidence": 0.0}
    assert all(torch.equal(old.state_dict[k], v) for k, v in new.state_dict.items())


def test_incompatible_or_foreign_files_are_refused(tmp_path, tiny_bundle):
    payload = torch.load(tiny_bundle, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.ofp")
    with pytest.raises(InputError, match="format v99"):
        load_bundle(tmp_path / "future.ofp")
    torch.save({"format": "something else"}, tmp_path / "other.ofp")
    with pytest.raises(InputError, match="not an openfootprints model bundle"):
        load_bundle(tmp_path / "other.ofp")
    (tmp_path / "junk.ofp").write_bytes(b"junk")
    with pytest.raises(InputError, match="not an openfootprints model bundle"):
        load_bundle(tmp_path / "junk.ofp")
    assert payload["format"] == FORMAT


def test_fingerprint_changes_with_the_data(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("one")
    first = fingerprint_files([a])
    a.write_text("two")
    assert fingerprint_files([a]) != first and len(first) == 16


@pytest.mark.parametrize("name", ["unet++", "fpn", "deeplabv3+", "segformer"])
def test_architectures_by_name_build_round_trip_and_export(name, tmp_path):
    from openfootprints.model.onnx import OnnxNetwork, export_onnx

    arch = Architecture(arch=name, decoder_channels=[16, 16, 8, 8, 8])
    net = build_network(arch, pretrained=True).eval()  # the packaged lite0 weights fit every architecture
    bundle = Bundle(arch, [1, 2, 3], [0.0] * 3, [1.0] * 3, 0.5, window=64, state_dict=net.state_dict())
    loaded = load_bundle(save_bundle(bundle, tmp_path / "m.ofp"))
    assert loaded.architecture.arch == name
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = loaded.network()(x)
    assert expected.shape == (2, 1, 64, 96)
    got = OnnxNetwork(export_onnx(loaded, tmp_path / "m.onnx"))(x.numpy())
    assert abs(got - expected.numpy()).max() < 1e-3


def test_bundles_from_before_architectures_had_names_are_unets(tmp_path, tiny_bundle):
    payload = torch.load(tiny_bundle, weights_only=True)
    del payload["architecture"]["arch"]  # as the previous version wrote them
    torch.save(payload, tmp_path / "old.ofp")
    old = load_bundle(tmp_path / "old.ofp")
    assert old.architecture.arch == "unet" and old.network()(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_an_unknown_architecture_is_named_with_the_choices():
    with pytest.raises(InputError, match="model.arch=unet3: not one of unet, unet\\+\\+"):
        build_network(Architecture(arch="unet3"))


def test_weights_load_across_a_dropout_head_both_ways():
    from dataclasses import replace

    from openfootprints.model.network import load_weights

    plain = build_network(tiny_architecture()).eval()
    noisy = build_network(replace(tiny_architecture(), dropout=0.1)).eval()  # the student: its head wrapped
    half = {k: v.half() if v.is_floating_point() else v for k, v in plain.state_dict().items()}  # as shipped
    load_weights(noisy, half)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(noisy(x), plain(x), atol=1e-2)  # dropout is off in eval: the same network
        load_weights(plain, noisy.state_dict())  # and back, from a student to a network without dropout
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in noisy.state_dict().items() if "head" not in k)
