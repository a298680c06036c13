"""AdaBN: the network's batch-norm statistics re-estimated on the scene's own windows before detecting."""

import numpy as np
import pytest
import torch

from openfootprints.configuration import load_config
from openfootprints.errors import InputError
from openfootprints.pipeline import detect
from openfootprints.predict.adapt import adapt_batchnorm, window_grid
from openfootprints.predict.windows import Region


def test_the_windows_are_spread_over_the_region_and_fit_in_it():
    windows = window_grid(Region(0, 2048, 100, 2148), 4, 512)
    assert len(windows) == 4 and all(w.width == w.height == 512 for w in windows)
    assert windows[0].col_off == 100 and windows[-1].row_off == 1536 and windows[-1].col_off == 1636  # corners
    small = window_grid(Region(0, 300, 0, 200), 16, 512)
    assert [(w.width, w.height) for w in small] == [(192, 288)]  # smaller than a window: itself, to 32 px


def test_batch_norm_statistics_follow_the_new_imagery_and_nothing_else_changes():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5)).eval()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    rng = np.random.default_rng(0)
    brighter = [rng.normal(3.0, 2.0, (2, 3, 16, 16)).astype(np.float32) for _ in range(3)]
    assert adapt_batchnorm(net, iter(brighter)) == 6
    bn = net[1]
    with torch.no_grad():
        expected = net[0](torch.from_numpy(np.concatenate(brighter)))
    assert torch.allclose(bn.running_mean, expected.mean(dim=(0, 2, 3)), atol=1e-4)  # the plain average
    assert not net.training and not bn.training and bn.momentum == 0.1  # back to inference, as it was
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())  # weights untouched
    before = bn.running_mean.clone()
    assert adapt_batchnorm(net, iter([])) == 0 and torch.equal(bn.running_mean, before)  # nothing seen: unchanged


def test_detect_adapts_to_the_scene_on_pytorch_and_refuses_onnx(tiny_scene, tiny_bundle, tmp_path):
    from openfootprints.model.bundle import file_sha256

    sha = file_sha256(tiny_bundle)
    cfg = load_config(["detect.adapt_bn=2", "tracking.energy=false", "detect.min_confidence=0"])
    summary = detect(cfg, str(tiny_scene[0]), str(tiny_bundle), str(tmp_path / "b.parquet"), progress=False)
    assert summary["engine"] == "torch" and summary["adapt_bn_s"] > 0
    plain = detect(load_config(["tracking.energy=false", "detect.min_confidence=0", "detect.engine=torch"]),
                   str(tiny_scene[0]), str(tiny_bundle), str(tmp_path / "p.parquet"), progress=False)
    assert "adapt_bn_s" not in plain
    with pytest.raises(InputError, match="adapt_bn re-estimates"):
        detect(load_config(["detect.adapt_bn=2", "detect.engine=onnx"]), str(tiny_scene[0]), str(tiny_bundle),
               str(tmp_path / "o.parquet"), progress=False)
    assert file_sha256(tiny_bundle) == sha  # the file on disk is not changed by adapting


def test_a_loaded_model_is_itself_again_after_an_adapted_run(tiny_scene, tiny_bundle, tmp_path):
    import openfootprints as ofp

    with ofp.load_detector(tiny_bundle, engine="torch") as detector:
        net = detector.predictor.network.net
        bundle_mean = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
        ofp.detect_file(tiny_scene[0], tmp_path / "a.parquet", model=detector, adapt_bn=2, min_confidence=0)
        changed = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
        assert any(not torch.equal(changed[k], v) for k, v in bundle_mean.items())  # adapted to the scene
        ofp.detect_file(tiny_scene[0], tmp_path / "b.parquet", model=detector, min_confidence=0)
        assert all(torch.equal(net.state_dict()[k], v) for k, v in bundle_mean.items())  # the bundle's again


def test_scale_adapts_once_to_the_whole_scene_and_ray_refuses(tiny_scene, tiny_bundle, tmp_path, caplog):
    from openfootprints.scale.engine import scale

    cfg = load_config(["detect.adapt_bn=2", "tracking.energy=false", "scale.zoom=17", "detect.min_confidence=0"])
    with caplog.at_level("INFO"):
        summary = scale(cfg, str(tiny_scene[0]), str(tiny_bundle), str(tmp_path / "run"))
    assert summary["cells_done_now"] > 1 and caplog.text.count("batch-norm statistics re-estimated") == 1
    cfg.scale.engine = "ray"
    with pytest.raises(InputError, match="not supported on Ray"):
        scale(cfg, str(tiny_scene[0]), str(tiny_bundle), str(tmp_path / "ray"))
