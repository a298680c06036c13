"""Shared tiny fixtures: synthetic scenes written once per session, a small untrained model bundle."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from pathlib import Path

import pytest
import torch

from openfootprints.configuration import load_config
from openfootprints.model.bundle import Bundle, save_bundle
from openfootprints.model.network import Architecture, build_network
from openfootprints.synth.scene import SceneSpec, write_scene

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Exported models are cached in a folder of this test session, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("OPENFOOTPRINTS_CACHE", str(folder))
        yield folder


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


def bench_module(name: str):
    """``bench/NAME.py`` imported as a module (the benchmarks import each other from their own folder)."""
    import importlib.util
    import sys

    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", bench / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HEAVY = ("torch", "lightning", "timm", "segmentation_models_pytorch", "sklearn")  # what detection on ONNX never needs


def detect_in_child(scene: Path, model: Path, out: Path, *overrides: str) -> tuple[str, list[str]]:
    """``openfootprints detect`` in a fresh Python process (it must succeed): what it printed, and which of
    :data:`HEAVY` it imported."""
    import subprocess
    import sys

    code = ("import json, sys; from openfootprints.cli import main; "
            f"code = main(['detect', {str(scene)!r}, '--model', {str(model)!r}, '--out', {str(out)!r}, '--quiet', "
            f"'tracking.energy=false', *{list(overrides)!r}]); "
            f"print('HEAVY', json.dumps([m for m in {HEAVY!r} if m in sys.modules])); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    heavy = [line for line in done.stdout.splitlines() if line.startswith("HEAVY ")]
    assert heavy, done.stdout
    return done.stdout, json.loads(heavy[-1][len("HEAVY "):])


def tiny_architecture(in_channels: int = 3) -> Architecture:
    return Architecture(encoder="efficientnet_lite0", in_channels=in_channels, decoder_channels=[16, 16, 8, 8, 8])


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """An untrained small U-Net bundle at 0.5 m for 3 bands, window 128 px."""
    torch.manual_seed(0)
    arch = tiny_architecture()
    net = build_network(arch)
    bundle = Bundle(architecture=arch, bands=[1, 2, 3], mean=[120.0] * 3, std=[40.0] * 3, resolution_m=0.5,
                    window=128, halo_m=8.0, state_dict=net.state_dict())
    return save_bundle(bundle, tmp_path_factory.mktemp("model") / "tiny.ofp")


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A local S3 server for the session (moto in server mode, a real S3-protocol endpoint): ``127.0.0.1:PORT``."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_bucket(s3_endpoint, monkeypatch) -> str:
    """A new, empty bucket on the local S3 server, with the environment GDAL and pyarrow read pointing at it:
    its URL, ``s3://NAME``. Each test gets its own name, so nothing GDAL cached about another test's objects
    applies."""
    import pyarrow.fs as pafs

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_S3_ENDPOINT": s3_endpoint, "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",  # GDAL
           "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the bucket to look for side-car files
           "AWS_ENDPOINT_URL": f"http://{s3_endpoint}"}  # pyarrow (and boto3)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    name = f"test-{uuid.uuid4().hex[:12]}"
    # the AWS SDK gives up on a request that moves under 1 byte/s for request_timeout s (3 by default): a moto
    # server on cores busy with other tests can be that slow to answer
    pafs.S3FileSystem(endpoint_override=f"http://{s3_endpoint}", allow_bucket_creation=True,
                      request_timeout=30, connect_timeout=30).create_dir(name)
    return f"s3://{name}"
