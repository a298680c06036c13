"""The base model that ships with the package: the default of ``detect``, ``scale`` and ``serve``.

Trained on openly licensed imagery alone (OpenAerialMap drone orthophotos, CC BY 4.0, with OpenStreetMap
footprints, ODbL) by ``python bench/real.py --ship``; its data, scores per held-out place and attribution are in
``docs/base_model.md`` and in the bundle's training record.
"""

from __future__ import annotations

from pathlib import Path

from openfootprints.errors import InputError

BASE_MODEL = Path(__file__).with_name("base_model.ofp")
ATTRIBUTION = "imagery © OpenAerialMap contributors, CC BY 4.0; footprints © OpenStreetMap contributors, ODbL"


def model_or_base(path: str | None) -> str:
    """``path`` (a registered model, ``models:/NAME@ALIAS``, resolved to its bundle), or the shipped base model
    when None."""
    if path is not None and path.startswith("models:/"):
        from openfootprints.registry import resolve

        return resolve(path)
    if path is not None:
        return path
    if not BASE_MODEL.exists():
        raise InputError(f"{BASE_MODEL}: this installation has no base model; pass --model (a bundle from "
                         "`openfootprints train`)")
    return str(BASE_MODEL)
