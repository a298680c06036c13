import copy

import pytest
import torch

from openfootprints.errors import InputError
from openfootprints.model.bundle import load_bundle
from openfootprints.model.lineage import lineage, totals
from openfootprints.model.soup import uniform_soup


def continuation(parent, shift: float, steps: int, name: str):
    """The parent with every float weight moved by ``shift`` and a training record of ``steps`` steps from it."""
    child = copy.copy(parent)
    child.state_dict = {k: v + shift if v.is_floating_point() else v + 7 for k, v in parent.state_dict.items()}
    child.training = {"steps": steps, "seconds": 60.0 * steps, "energy_kwh": 0.001 * steps, "stage_name": name,
                      "parent": {"fingerprint": parent.data_fingerprint}, "ancestry": lineage(parent)}
    return child


@pytest.fixture()
def parent(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    bundle.training = {**bundle.training, "steps": 100, "seconds": 600.0, "energy_kwh": 0.01, "stage_name": "first"}
    return bundle


def test_the_soup_is_the_mean_of_parent_and_members_and_holds_their_work(parent):
    members = [continuation(parent, 0.3, 20, "a"), continuation(parent, 0.9, 30, "b")]
    soup = uniform_soup(parent, members)
    for k, v in parent.state_dict.items():
        if v.is_floating_point():
            assert torch.allclose(soup.state_dict[k], v.float() + 0.4, atol=1e-5), k
        else:  # batch counts: the parent's, not averaged
            assert torch.equal(soup.state_dict[k], v), k
    stages = lineage(soup)
    assert [s.get("name") for s in stages] == ["first", "a", "b", None]
    assert [s["from"] for s in stages[1:]] == ["stage 1's weights", "stage 1's weights",
                                               "the mean of stage 1 and the 2 after it (a uniform soup)"]
    assert totals(stages)["steps"] == 150 and totals(stages)["energy_kwh"] == pytest.approx(0.06)
    assert soup.training["soup"] == {"members": 3, "rule": "uniform"}
    assert parent.state_dict is not soup.state_dict and parent.training["steps"] == 100  # the parent is untouched


def test_a_soup_of_models_that_are_not_continuations_is_refused(parent):
    other = continuation(parent, 0.1, 10, "coarser")
    other.resolution_m = parent.resolution_m * 1.25
    with pytest.raises(InputError, match="coarser: its resolution_m differ"):
        uniform_soup(parent, [other], names=["coarser"])
    with pytest.raises(InputError, match="at least one model"):
        uniform_soup(parent, [])


def test_the_greedy_soup_keeps_only_members_that_do_not_lower_the_validation_score(parent):
    from openfootprints.model.soup import greedy_soup

    first = next(k for k, v in parent.state_dict.items() if v.is_floating_point())
    target = float(parent.state_dict[first].flatten()[0]) + 0.2  # the "validation score" peaks at this weight

    def score(bundle) -> float:
        return -abs(float(bundle.state_dict[first].flatten()[0]) - target)

    members = [continuation(parent, 0.9, 20, "far"), continuation(parent, 0.2, 30, "right"),
               continuation(parent, -0.6, 40, "wrong way")]
    soup, trail = greedy_soup(parent, members, score, ["far", "right", "wrong way"])
    assert [t["name"] for t in trail] == ["parent", "right", "far", "wrong way"]  # tried best first
    assert [t["joined"] for t in trail] == [True, True, False, False]  # "far" moves the mean of 2 off 0.2
    for k, v in parent.state_dict.items():
        if v.is_floating_point():
            assert torch.allclose(soup.state_dict[k], v.float() + 0.1, atol=1e-5), k  # the mean of parent, "right"
    assert soup.training["soup"]["members"] == 2 and soup.training["soup"]["rule"] == "greedy"
    assert [s.get("name") for s in lineage(soup)] == ["first", "right", None]
    assert "greedy soup" in lineage(soup)[-1]["from"] and totals(lineage(soup))["steps"] == 130

    nothing, trail = greedy_soup(parent, [members[2]], score, ["wrong way"])
    assert nothing is None and [t["joined"] for t in trail] == [True, False]
