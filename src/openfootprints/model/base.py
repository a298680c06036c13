"""The base model that ships with the package: the default of ``detect``, ``scale`` and ``serve``.

Trained on openly licensed imagery alone (OpenAerialMap drone orthophotos, CC BY 4.0, with OpenStreetMap
footprints, ODbL) by ``python bench/real.py --ship``; its data, scores per held-out place and attribution are in
``docs/base_model.md`` and in the bundle's training record.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from openfootprints.model.bundle import Bundle

BASE_MODEL = Path(__file__).with_name("base_model.ofp")
ATTRIBUTION = "imagery © OpenAerialMap contributors, CC BY 4.0; footprints © OpenStreetMap contributors, ODbL"
CARD = "docs/base_model.md"  # the base model's card, in the project's repository


def is_base_model(bundle: Bundle) -> bool:
    """Whether ``bundle`` is a shipped base model (its training record says so; its ONNX and INT8 files too)."""
    return bool(bundle.training.get("base_model"))


def describe_model(bundle: Bundle) -> dict[str, Any]:
    """What ``detect`` says of the model that ran: which it is (the shipped base model and its card, or a bundle,
    fine-tuned from one or not), its version, ground resolution (metres per pixel) and training steps, all stages."""
    from openfootprints.model.lineage import lineage, totals

    stages = lineage(bundle)
    if is_base_model(bundle):
        name = "the openfootprints base model"
    elif len(stages) > 1:
        name = f"a bundle trained from another ({len(stages)} stages)"
    else:
        name = "a bundle"
    described: dict[str, Any] = {"name": name, "version": bundle.version, "resolution_m": bundle.resolution_m,
                                 "steps": totals(stages)["steps"]}
    if is_base_model(bundle):
        described |= {"card": CARD, "attribution": ATTRIBUTION}
    return described


def adapt_hint(scene: str, base: bool) -> str:
    """The commands that adapt the model to ``scene`` from a few labels (``base``: the model is the base model,
    ``finetune``'s default)."""
    model = "" if base else " --model MODEL.ofp"
    return (f"to adapt the model to this imagery: openfootprints suggest {scene}{model} --n 10 --out chips.geojson, "
            f"trace the buildings in those chips (or take OpenStreetMap's) into labels.geojson, then openfootprints "
            f"finetune{model} --image {scene} --labels labels.geojson --area chips.geojson --out adapted.ofp "
            "(docs/adapt.md)")
