"""Every output carries the config that made it: ``<output>.config.yaml`` beside it."""

from __future__ import annotations

import math
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def config_path_beside(output: str | os.PathLike) -> Path:
    """Where the resolved config of an output goes: ``<output>.config.yaml``."""
    output = Path(output)
    return output.with_name(output.name + ".config.yaml")


def write_resolved_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config (every default and override), so the result can be reproduced."""
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))


def json_safe(value):
    """Replace NaN and ±inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
