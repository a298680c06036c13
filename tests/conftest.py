"""Shared tiny fixtures: synthetic scenes written once per session, a small untrained model bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openfootprints.cli import load_config
from openfootprints.model.bundle import Bundle, save_bundle
from openfootprints.model.unet import Architecture, build_unet
from openfootprints.synth.scene import SceneSpec, write_scene

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> tuple[Path, Path]:
    """A 256×256 px synthetic scene at 0.5 m in UTM and its footprints (GeoJSON)."""
    d = tmp_path_factory.mktemp("scene")
    image, labels = d / "scene.tif", d / "labels.geojson"
    write_scene(SceneSpec(width=256, height=256, seed=3), image, labels)
    return image, labels


@pytest.fixture()
def cfg():
    """The default config, as every command sees it."""
    return load_config([])


def tiny_architecture(in_channels: int = 3) -> Architecture:
    return Architecture(encoder="efficientnet_lite0", in_channels=in_channels, decoder_channels=[16, 16, 8, 8, 8])


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """An untrained small U-Net bundle at 0.5 m for 3 bands, window 128 px."""
    torch.manual_seed(0)
    arch = tiny_architecture()
    net = build_unet(arch)
    bundle = Bundle(architecture=arch, bands=[1, 2, 3], mean=[120.0] * 3, std=[40.0] * 3, resolution_m=0.5,
                    window=128, halo_m=8.0, state_dict=net.state_dict())
    return save_bundle(bundle, tmp_path_factory.mktemp("model") / "tiny.ofp")
