"""A model's lineage (the training stages that made it) and the champion-and-challenger rule."""

import pytest

from openfootprints.model.bundle import load_bundle
from openfootprints.model.lineage import MAX_LOSS, MIN_GAIN, format_lineage, judge, lineage, own_stage, totals

PLACES = ["nairobi_ke", "kampala_ug"]


def scores(nairobi: float, kampala: float, coarse: float) -> dict[str, float]:
    return {"nairobi_ke": nairobi, "kampala_ug": kampala, "nairobi_ke@0.5m": coarse}


def test_a_challenger_wins_only_by_the_mean_gain_without_a_place_losing_too_much():
    champion = scores(0.36, 0.52, 0.35)
    wins = judge(champion, scores(0.40, 0.53, 0.34), PLACES)  # mean +0.025, worst −0.01
    assert wins.wins and wins.mean_change == pytest.approx(0.025) and wins.worst_place == "nairobi_ke@0.5m"
    assert "challenger wins" in wins.reason and "+0.025" in wins.reason
    small = judge(champion, scores(0.37, 0.53, 0.35), PLACES)  # mean +0.01: not enough
    assert not small.wins and "loses" in small.reason
    lopsided = judge(champion, scores(0.50, 0.48, 0.35), PLACES)  # mean +0.05, Kampala −0.04
    assert not lopsided.wins and lopsided.worst_place == "kampala_ug" and lopsided.worst_change == pytest.approx(-0.04)
    coarse_drop = judge(champion, scores(0.45, 0.60, 0.31), PLACES)  # the 0.5 m copy counts for the loss limit
    assert not coarse_drop.wins and coarse_drop.worst_place == "nairobi_ke@0.5m"


def test_the_rule_is_inclusive_at_its_limits():
    champion = scores(0.30, 0.50, 0.30)
    edge = judge(champion, scores(0.30 + 2 * MIN_GAIN + MAX_LOSS, 0.50 - MAX_LOSS, 0.30), PLACES)
    assert edge.wins


def test_a_cheaper_challenger_may_be_held_to_a_loss_within_a_tolerance():
    champion = scores(0.36, 0.52, 0.35)
    close = judge(champion, scores(0.355, 0.51, 0.35), PLACES, min_gain=-0.01)  # mean −0.0075: within 0.01
    assert close.wins and "at least -0.01 needed" in close.reason
    assert not judge(champion, scores(0.355, 0.51, 0.35), PLACES).wins  # the usual rule wants +0.02
    assert not judge(champion, scores(0.34, 0.51, 0.35), PLACES, min_gain=-0.01).wins  # mean −0.015
    assert not judge(champion, scores(0.40, 0.52, 0.31), PLACES, min_gain=-0.01).wins  # one place −0.04


def test_champion_and_challenger_must_be_scored_on_the_same_places():
    with pytest.raises(ValueError, match="different places"):
        judge(scores(0.3, 0.5, 0.3), {"nairobi_ke": 0.4, "kampala_ug": 0.6}, PLACES)
    with pytest.raises(ValueError, match="mean places"):
        judge(scores(0.3, 0.5, 0.3), scores(0.3, 0.5, 0.3), ["xiamen_block"])


def test_the_lineage_adds_the_bundles_own_stage_to_its_ancestors(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    first = {"name": "from ImageNet", "steps": 2112, "seconds": 2580.0, "energy_kwh": 0.0123, "data": [["a", "b"]],
             "from": "ImageNet weights"}
    bundle.training = {"steps": 1000, "seconds": 600.0, "energy_kwh": 0.004, "scenes": [["a", "b"]],
                       "parent": {"path": "base.ofp", "fingerprint": "f"}, "ancestry": [first],
                       "stage_name": "continued", "stage_verdict": "challenger wins: …",
                       "held_out": [{"place": "nairobi_ke", "f1": 0.41}, {"place": "kampala_ug", "f1": 0.55}]}
    stages = lineage(bundle)
    assert stages[0] == first and stages[1]["name"] == "continued" and stages[1]["from"] == "the stage before"
    assert stages[1]["held_out_f1"] == {"nairobi_ke": 0.41, "kampala_ug": 0.55}
    assert totals(stages) == {"stages": 2, "steps": 3112, "seconds": 3180.0, "energy_kwh": 0.0163}
    text = format_lineage(stages)
    assert "1. from ImageNet: 2,112 steps, 43 min" in text and "challenger wins" in text
    assert text.splitlines()[-1] == "total: 2 stage(s), 3,112 steps, 53 min, 0.0163 kWh"


def test_a_bundle_trained_from_nothing_is_one_stage_and_unmeasured_energy_stays_unknown(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    bundle.training = {"steps": 5, "seconds": 2.0, "scenes": [["x.tif", "x.geojson"]]}
    (stage,) = lineage(bundle)
    assert stage == own_stage(bundle) and stage["from"] == "ImageNet weights" and stage["energy_kwh"] is None
    assert totals([stage])["energy_kwh"] is None and "–" in format_lineage([stage])


def test_models_lineage_prints_a_bundles_stages(tiny_bundle, capsys):
    import json

    from openfootprints.cli import main

    assert main(["models", "lineage", str(tiny_bundle)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("total: 1 stage(s), 0 steps")
    assert main(["models", "lineage", str(tiny_bundle), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["total"]["stages"] == 1 and printed["stages"][0]["from"] == "ImageNet weights"
    assert main(["models", "lineage", str(tiny_bundle), "extra"]) == 2
    assert "usage: openfootprints models lineage" in capsys.readouterr().err
