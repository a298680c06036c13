import pytest
import torch

from openfootprints.cli import main
from openfootprints.model.bundle import load_bundle
from openfootprints.model.fake_quant import ACTIVATION_LEVELS, InputSteps, quantized_convolutions, simulated_int8


def small_net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU6(),
                               torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.BatchNorm2d(8), torch.nn.ReLU6(),
                               torch.nn.Conv2d(8, 6, 1), torch.nn.ReLU6(), torch.nn.Conv2d(6, 1, 3, padding=1))


def test_the_first_and_last_convolutions_stay_in_fp32():
    net = small_net()
    assert quantized_convolutions(net) == [net[2], net[5]]
    with simulated_int8(net) as ranges:
        assert sorted(ranges) == ["2", "5"]
        assert type(net[0]) is torch.nn.Conv2d and type(net[7]) is torch.nn.Conv2d  # not parametrized


def test_weights_are_rounded_per_output_channel_to_signed_int8_steps():
    net = small_net()
    trained = net[5].weight.detach().clone()
    with simulated_int8(net):
        rounded = net[5].weight.detach()
        for channel, weights in zip(trained, rounded):
            step = weights.abs().max() / 127  # the largest weight keeps its value: it defines the step
            assert torch.isclose(weights.abs().max(), channel.abs().max())
            levels = weights / step
            assert torch.allclose(levels, levels.round(), atol=1e-4)
            assert (weights - channel).abs().max() <= step / 2 + 1e-7
        assert not torch.equal(rounded, trained)


def test_inputs_are_rounded_to_uint8_steps_over_a_range_that_holds_zero():
    hook = InputSteps()
    conv = torch.nn.Conv2d(4, 4, 1).train()
    x = torch.linspace(0.5, 3.0, 4 * 32 * 32).reshape(1, 4, 32, 32)  # all positive: the range is stretched to 0
    (rounded,) = hook(conv, (x,))
    assert hook.low == 0.0 and hook.high == pytest.approx(3.0, abs=1e-3)
    step = hook.high / ACTIVATION_LEVELS
    assert len(torch.unique(rounded)) <= ACTIVATION_LEVELS + 1
    assert (rounded - x).abs().max() <= step / 2 + 1e-6
    assert torch.allclose(rounded / step, (rounded / step).round(), atol=1e-3)


def test_the_input_range_follows_training_batches_and_stands_still_without_gradients():
    hook, conv = InputSteps(), torch.nn.Conv2d(1, 1, 1).train()
    hook(conv, (torch.full((1, 1, 8, 8), 2.0),))
    hook(conv, (torch.full((1, 1, 8, 8), 4.0),))
    assert hook.high == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)
    with torch.no_grad():  # validation, scoring
        hook(conv, (torch.full((1, 1, 8, 8), 100.0),))
    assert hook.high == pytest.approx(2.2)
    hook(conv.eval(), (torch.full((1, 1, 8, 8), 4.0),))  # a frozen encoder is in eval mode, and still trained through
    assert hook.high == pytest.approx(0.9 * 2.2 + 0.1 * 4.0)


def test_the_range_is_estimated_from_values_all_over_the_tensor():
    hook, conv = InputSteps(), torch.nn.Conv2d(1, 1, 1)
    x = torch.zeros(1, 1, 512, 512)
    x[..., 1::2] = 5.0  # every other column: a stride over the flattened tensor could see only one kind
    hook(conv, (x,))
    assert hook.low == 0.0 and hook.high == pytest.approx(5.0)


def test_a_copy_of_the_network_shares_the_ranges_training_moves():
    import copy

    net = small_net()
    with simulated_int8(net) as ranges:
        average = copy.deepcopy(net)  # as the moving average of train.ema_decay is made
        net.train()
        net(torch.rand(2, 3, 16, 16))
        shared = [hook for hook in average[5]._forward_pre_hooks.values() if isinstance(hook, InputSteps)]
        assert shared == [ranges["5"]] and ranges["5"].high is not None


def test_leaving_the_context_gives_back_plain_convolutions_with_the_trained_weights():
    net = small_net()
    keys = set(net.state_dict())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net[5].weight.detach().clone()
    with simulated_int8(net):
        net.train()
        loss = net(torch.rand(2, 3, 16, 16)).square().mean()
        loss.backward()  # straight through the rounding: the float weights get a gradient
        optimizer.step()
    assert set(net.state_dict()) == keys
    assert type(net[5]) is torch.nn.Conv2d and isinstance(net[5].weight, torch.nn.Parameter)
    assert not torch.equal(net[5].weight, before)  # trained, and not rounded on the way out
    assert not torch.allclose(net[5].weight / (net[5].weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127),
                              (net[5].weight / (net[5].weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127)).round(),
                              atol=1e-3)
    assert not net[5]._forward_pre_hooks


def test_simulated_int8_output_is_near_but_not_fp32():
    net = small_net().eval()
    x = torch.rand(1, 3, 32, 32)
    fp32 = net(x)
    with simulated_int8(net):
        int8 = net(x)
    assert not torch.equal(int8, fp32)
    assert (int8 - fp32).abs().max() < 0.05 * fp32.abs().max()


def test_train_with_qat_trains_through_the_rounding_and_writes_a_bundle_of_plain_weights(tiny_scene, tmp_path,
                                                                                         monkeypatch):
    import contextlib

    from openfootprints.training import run

    seen: list[dict] = []

    @contextlib.contextmanager
    def recorded(net):
        with simulated_int8(net) as ranges:
            seen.append(ranges)
            yield ranges

    monkeypatch.setattr(run, "simulated_int8", recorded)
    out = tmp_path / "qat.ofp"
    assert main(["train", "--image", str(tiny_scene[0]), "--labels", str(tiny_scene[1]), "--out", str(out),
                 "model.decoder_channels=[16,16,8,8,8]", "model.pretrained=false", "train.qat=true",
                 "train.ema_decay=0.5", "train.batch_size=2", "data.chip_px=64", "data.samples_per_epoch=4",
                 "train.max_epochs=1", "tracking.energy=false"]) == 0
    bundle = load_bundle(out)
    assert len(seen) == 1 and len(seen[0]) == 57  # every convolution of the U-Net but the first and the last
    assert all(steps.high is not None for steps in seen[0].values())  # each rounded its inputs in training
    assert bundle.training["config"]["train"]["qat"] is True
    assert not any("parametrizations" in k for k in bundle.state_dict)


def test_qat_needs_float32_training(tiny_scene, tmp_path, capsys):
    out = tmp_path / "qat.ofp"
    code = main(["train", "--image", str(tiny_scene[0]), "--labels", str(tiny_scene[1]), "--out", str(out),
                 "train.qat=true", "train.precision=bf16-mixed", "tracking.energy=false"])
    assert code != 0 and "train.qat" in capsys.readouterr().err
    assert not out.exists()
