"""A model soup: the weights of several models trained from the same parent, averaged into one.

Continuations of one checkpoint (other seeds, learning rates, data such as self-training's pseudo-labels) stay in
one basin of the loss, so their average is a model too, and often one that generalizes better than any of them
(Wortsman et al. 2022, "Model soups"). The uniform soup averages every parameter and batch-norm statistic with
equal weights; nothing is chosen on the places a model is scored on. The greedy soup tries the members best first
and keeps each one only if the soup scores no worse with it on validation chips (never on the places a model is
judged on), so a member that hurts is left out. A soup trains no step of its own: its lineage is the parent's
stages, then each member's own stage, so its steps, time and kWh are all the work it holds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch

from openfootprints.errors import InputError
from openfootprints.model.bundle import Bundle
from openfootprints.model.lineage import lineage, own_stage
from openfootprints.model.network import build_network, load_weights

SAME = ("bands", "mean", "std", "resolution_m", "target")  # what every member shares with the parent ...
SHAPE = ("arch", "encoder", "in_channels", "decoder_channels")  # ... and its network's (dropout may differ)


def uniform_soup(parent: Bundle, members: Sequence[Bundle], names: Sequence[str] | None = None) -> Bundle:
    """``parent``'s bundle with its weights replaced by the mean of its own and each of ``members``' (continuations
    of it: same architecture, bands, normalization, ground resolution and target). Float weights and batch-norm
    statistics are averaged in float32; integer buffers (batch counts) are the parent's. ``names``: what to call
    each member in the lineage (default: its recorded stage name). The confidence cut and reference profile stay
    the parent's until chosen again on validation chips."""
    if not members:
        raise InputError("a soup needs at least one model besides its parent")
    for i, member in enumerate(members):
        differ = [k for k in SAME if getattr(member, k) != getattr(parent, k)]
        differ += [k for k in SHAPE if getattr(member.architecture, k) != getattr(parent.architecture, k)]
        if differ:
            raise InputError(f"soup member {names[i] if names else i + 1}: its {', '.join(differ)} differ from the "
                             "parent's; a soup averages continuations of one model")
    states = [weights_as(parent, b) for b in (parent, *members)]
    averaged = {k: (torch.stack([s[k].float() for s in states]).mean(0) if v.is_floating_point() else v)
                for k, v in states[0].items()}
    soup = copy.copy(parent)
    soup.state_dict = averaged
    before = lineage(parent)
    stages = []
    for i, member in enumerate(members):
        stage = {**own_stage(member), "from": f"stage {len(before)}'s weights"}
        if names:
            stage["name"] = names[i]
        stages.append(stage)
    soup.training = {**{k: v for k, v in parent.training.items() if not k.startswith("stage_")},
                     "steps": 0, "seconds": 0.0, "energy_kwh": 0.0, "epochs": 0,
                     "ancestry": [*before, *stages],
                     "stage_from": f"the mean of stage {len(before)} and the {len(members)} after it (a uniform soup)",
                     "parent": {"path": "the model the members continued", "fingerprint": parent.data_fingerprint},
                     "soup": {"members": 1 + len(members), "rule": "uniform"}}
    return soup


def greedy_soup(parent: Bundle, candidates: Sequence[Bundle], score: Callable[[Bundle], float],
                names: Sequence[str]) -> tuple[Bundle | None, list[dict]]:
    """The greedy soup of ``parent`` and some of ``candidates`` (Wortsman et al. 2022): the candidates are tried in
    the order of their own ``score`` (best first); each joins the soup when the uniform soup with it scores at least
    as well as without it (Algorithm 1 of the paper; the soup starts as ``parent`` alone). ``score``: higher is better, measured on validation data
    only (e.g. F1 on the validation chips). Returns the soup (None when no candidate joined: the parent stays as it
    is) and the trail: each model tried, its own score and the soup's with it, and whether it joined."""
    own = [score(c) for c in candidates]
    best = score(parent)
    trail = [{"name": "parent", "own": best, "soup": best, "joined": True}]
    chosen: list[int] = []
    for i in sorted(range(len(candidates)), key=lambda i: -own[i]):
        trial = uniform_soup(parent, [candidates[j] for j in (*chosen, i)], [names[j] for j in (*chosen, i)])
        with_it = score(trial)
        trail.append({"name": names[i], "own": own[i], "soup": with_it, "joined": with_it >= best})
        if with_it >= best:
            chosen.append(i)
            best = with_it
    if not chosen:
        return None, trail
    soup = uniform_soup(parent, [candidates[j] for j in chosen], [names[j] for j in chosen])
    soup.training["soup"] = {"members": 1 + len(chosen), "rule": "greedy", "tried": trail}
    soup.training["stage_from"] = soup.training["stage_from"].replace("a uniform soup", "a greedy soup")
    return soup, trail


def weights_as(parent: Bundle, bundle: Bundle) -> dict[str, torch.Tensor]:
    """``bundle``'s weights, float32, under the keys of ``parent``'s network (a noisy student's dropout head mapped
    to a plain one, or back)."""
    net = build_network(parent.architecture)
    load_weights(net, bundle.state_dict)
    return net.state_dict()
