"""INT8 simulated in PyTorch, for quantization-aware training (``train.qat``).

``export --int8`` (:mod:`openfootprints.model.quantize`) rounds a trained network to ONNX Runtime's static INT8: each
convolution's weights to 8-bit steps per output channel (signed, symmetric), each convolution's input to 8-bit steps
per tensor (unsigned, over the central :data:`~openfootprints.model.quantize.PERCENTILE` % of its values), except the
first convolution (it reads the image) and the last (the head), which stay in fp32. A network trained in fp32 meets
that rounding for the first time at export; here it meets it in training: :func:`simulated_int8` rounds the weights
and inputs of the same convolutions on the same grids in every forward pass, and the gradient passes the rounding
straight through (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
Only Inference"). Not simulated: ONNX Runtime also rounds the tensors around Add, Concat and Resize, and calibrates
the ranges on its chips, where these follow the training batches. The weights stay float: leaving the context
restores plain convolutions, and ``export --int8`` quantizes them as it quantizes any network, calibrated on real
chips.

Folding a batch norm into its convolution scales each output channel by one number, so the per-channel steps of the
unfolded weights here are the steps ONNX Runtime takes on the folded ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.utils import parametrize

from openfootprints.model.quantize import PERCENTILE

WEIGHT_LEVELS = 127  # signed symmetric int8 weights use -127 … 127 (ONNX Runtime's QInt8 with symmetric ranges)
ACTIVATION_LEVELS = 255  # unsigned int8 activations: 0 … 255
MOMENTUM = 0.9  # how much of an input's running range each training batch keeps
SAMPLE = 1 << 16  # values of a tensor whose percentiles estimate its range in one batch


class WeightSteps(torch.nn.Module):
    """A convolution's weight (out, in/groups, kh, kw) rounded to int8 steps of ``max |w| / 127`` per output channel."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        peak = weight.detach().abs().amax(dim=tuple(range(1, weight.dim())))
        scale = (peak / WEIGHT_LEVELS).clamp(min=1e-12).float()
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -WEIGHT_LEVELS, WEIGHT_LEVELS)


class InputSteps:
    """A forward pre-hook that rounds a convolution's input to uint8 steps over its running range.

    While gradients are recorded (a training step, the encoder's too when it is frozen) the range moves towards each
    batch's central ``PERCENTILE`` % (estimated on :data:`SAMPLE` values drawn at random from the tensor), with zero
    always inside it, as ONNX Runtime's calibration places it; otherwise (validation, scoring) it stands still.
    ``low``/``high``: the range, None before the first batch. A copy of the network (the moving average of
    ``train.ema_decay``) shares the hook and so its range.
    """

    def __init__(self) -> None:
        self.low: float | None = None
        self.high: float | None = None

    def __deepcopy__(self, memo: dict) -> InputSteps:
        return self  # copies of the network round their inputs on the range training moves

    def observe(self, x: torch.Tensor) -> None:
        values = x.detach().flatten().float()
        if values.numel() > SAMPLE:  # at random: a stride would line up with the image's columns
            values = values[torch.randint(0, values.numel(), (SAMPLE,), device=values.device)]
        tail = (100.0 - PERCENTILE) / 200.0
        low, high = torch.quantile(values, values.new_tensor([tail, 1.0 - tail])).tolist()
        low, high = min(low, 0.0), max(high, 0.0)
        if self.low is None or self.high is None:
            self.low, self.high = low, high
        else:
            self.low = MOMENTUM * self.low + (1 - MOMENTUM) * low
            self.high = MOMENTUM * self.high + (1 - MOMENTUM) * high

    def __call__(self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = inputs[0]
        if torch.is_grad_enabled() or self.low is None:
            self.observe(x)
        assert self.low is not None and self.high is not None
        scale = max(self.high - self.low, 1e-8) / ACTIVATION_LEVELS
        zero = int(min(max(round(-self.low / scale), 0), ACTIVATION_LEVELS))
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, ACTIVATION_LEVELS), *inputs[1:])


def quantized_convolutions(net: torch.nn.Module) -> list[torch.nn.Conv2d]:
    """The convolutions that INT8 export quantizes: all but the first (it reads the image) and the last (the head),
    in the order the network registers them (encoder, decoder, head)."""
    convolutions = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    return convolutions[1:-1]


@contextlib.contextmanager
def simulated_int8(net: torch.nn.Module) -> Iterator[dict[str, InputSteps]]:
    """Within the context, ``net``'s quantized convolutions (:func:`quantized_convolutions`) compute with int8-rounded
    weights and inputs; on leaving it they are plain convolutions again, with the weights training gave them.
    Yields each convolution's input range by module name (for inspection)."""
    names = {module: name for name, module in net.named_modules()}
    convolutions = quantized_convolutions(net)
    ranges = {names[conv]: InputSteps() for conv in convolutions}
    handles = []
    try:
        for conv in convolutions:
            parametrize.register_parametrization(conv, "weight", WeightSteps())
            handles.append(conv.register_forward_pre_hook(ranges[names[conv]]))
        yield ranges
    finally:
        for handle in handles:
            handle.remove()
        for conv in convolutions:
            if parametrize.is_parametrized(conv, "weight"):
                parametrize.remove_parametrizations(conv, "weight", leave_parametrized=False)
