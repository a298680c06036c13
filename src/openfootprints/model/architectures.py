"""The network architectures a bundle can hold, by name (no torch import: the command line checks names with it)."""

# model.arch → segmentation-models-pytorch's name
ARCHITECTURES = {"unet": "unet", "unet++": "unetplusplus", "unetplusplus": "unetplusplus", "manet": "manet",
                 "fpn": "fpn", "deeplabv3+": "deeplabv3plus", "deeplabv3plus": "deeplabv3plus", "segformer": "segformer",
                 "linknet": "linknet", "pan": "pan", "upernet": "upernet"}
# these take model.decoder_channels (one width per encoder stage); the others use smp's decoders as they are
WITH_DECODER_CHANNELS = {"unet", "unetplusplus", "manet"}
