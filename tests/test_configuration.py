"""The typed configuration: config.yaml's values on conf/schema.py's structure, every value checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from openfootprints.api import config
from openfootprints.conf.schema import Config, checked_keys
from openfootprints.configuration import flat_keys, load_config
from openfootprints.errors import InputError

CONFIG_YAML = Path(__file__).resolve().parents[1] / "src" / "openfootprints" / "conf" / "config.yaml"


def test_the_yaml_and_the_schema_name_the_same_keys():
    values = yaml.safe_load(CONFIG_YAML.read_text())
    values.pop("defaults")
    assert sorted(flat_keys(values)) == sorted(flat_keys(OmegaConf.to_container(OmegaConf.structured(Config))))
    assert not OmegaConf.missing_keys(load_config([]))  # every key has its default in the yaml


def test_values_take_the_schema_types():
    cfg = load_config(["train.max_minutes=5", "detect.min_area_m2=7", "data.bands=[1,2]"])
    assert isinstance(cfg.train.max_minutes, float) and isinstance(cfg.detect.min_area_m2, float)
    assert list(cfg.data.bands) == [1, 2] and OmegaConf.get_type(cfg, "train").__name__ == "Train"


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=abc", "train.batch_size=abc must be a whole number, 1 or more"),
    ("train.max_epochs=1.5", "train.max_epochs=1.5 must be a whole number, 1 or more"),
    ("detect.min_area_m2=abc", "detect.min_area_m2=abc must be a number, 0 or more"),
    ("data.bands=[a]", "data.bands[0]=a must be a whole number"),
    ("detect.compile=maybe", "detect.compile=maybe: Value 'maybe' is not a valid bool"),
    ("detect.engine=gpu", "detect.engine=gpu must be auto, torch, onnx or onnx-int8"),
    ("detect.min_aera_m2=3", "did you mean detect.min_area_m2?"),
])
def test_wrong_types_and_values_are_named_in_one_line(override, message):
    with pytest.raises(InputError, match="^config: ") as err:
        load_config([override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_api_checks_its_options_against_the_same_schema():
    cfg = load_config([])
    with pytest.raises(InputError, match="detect.min_area_m2=abc must be a number"):
        config({}, detect={"min_area_m2": "abc"})
    from openfootprints.api import _config_for

    with pytest.raises(InputError, match="did you mean detect.min_area_m2"):
        _config_for("detect", cfg, {"min_aera_m2": 3})
    assert _config_for("detect", cfg, {"min_area_m2": 7}).detect.min_area_m2 == 7.0


def test_every_check_refuses_something():
    """Each field's check is live: a value far out of any range (or of another kind) is refused."""
    checks = list(checked_keys())
    assert len(checks) > 80
    for key, ok, meaning in checks:
        assert meaning, key
        try:
            refused = not ok(-10**9)
        except TypeError:  # a check on a list or a string
            refused = True
        assert refused, key
