"""A model's lineage, and the rule by which a challenger replaces the champion.

Training accumulates across runs: the shipped base model is the checkpoint every new run may continue from
(``train.init``), so a bundle's weights are the work of several stages. Each bundle records the stages before
it (``training["ancestry"]``, copied from its parent when it is trained from one); :func:`lineage` adds its own.
A stage says what it learnt from (the scenes), how long (optimizer steps, seconds on its machine, kWh) and how
it scored on the places it never saw.

A challenger replaces the champion only when, scored in the same run on the same held-out places (F1 at
IoU 0.5), the mean F1 over the held-out places rises by at least :data:`MIN_GAIN` and no place loses more than
:data:`MAX_LOSS` (:func:`judge`). A challenger that is cheaper to run (a model at a coarser ground resolution: fewer
windows for the same area) may be held to a smaller gain, even a loss within a tolerance (``min_gain`` < 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openfootprints.model.bundle import Bundle

MIN_GAIN = 0.02  # the challenger's mean held-out F1 must rise by at least this much ...
MAX_LOSS = 0.03  # ... and no held-out place may lose more than this much F1


@dataclass(frozen=True)
class Verdict:
    """What :func:`judge` found: whether the challenger wins, the change of the mean F1 over ``mean_places``,
    and the place whose F1 fell most (or rose least) with its change."""

    wins: bool
    mean_change: float
    worst_place: str
    worst_change: float
    min_gain: float = MIN_GAIN

    @property
    def reason(self) -> str:
        """One line: the rule's two numbers and the outcome."""
        outcome = "wins" if self.wins else "loses"
        return (f"challenger {outcome}: mean held-out F1 {self.mean_change:+.3f} (at least {self.min_gain:+.2f} needed), "
                f"worst place {self.worst_place} {self.worst_change:+.3f} (no place may lose more than {MAX_LOSS:.2f})")


def judge(champion: dict[str, float], challenger: dict[str, float], mean_places: list[str],
          min_gain: float = MIN_GAIN) -> Verdict:
    """The rule: ``champion`` and ``challenger`` map each held-out place to its F1 at IoU 0.5, scored in the same
    run; the mean over ``mean_places`` must change by at least ``min_gain`` (negative: a loss within that much
    is accepted, for a cheaper model), the loss limit applies to every place. Both must hold the same places."""
    if set(champion) != set(challenger):
        raise ValueError(f"champion and challenger were scored on different places: {sorted(champion)} against "
                         f"{sorted(challenger)}")
    missing = [p for p in mean_places if p not in champion]
    if missing or not mean_places:
        raise ValueError(f"mean places {missing or mean_places} not among the scored places {sorted(champion)}")
    mean_change = sum(challenger[p] - champion[p] for p in mean_places) / len(mean_places)
    worst = min(champion, key=lambda p: challenger[p] - champion[p])
    worst_change = challenger[worst] - champion[worst]
    wins = mean_change >= min_gain - 1e-9 and worst_change >= -MAX_LOSS - 1e-9
    return Verdict(wins, round(mean_change, 4), worst, round(worst_change, 4), min_gain)


def own_stage(bundle: Bundle) -> dict[str, Any]:
    """The stage that made ``bundle`` from its parent (or from ImageNet weights), from its training record."""
    t = bundle.training
    parent = t.get("parent")
    if parent is None:
        start = "ImageNet weights"
    elif t.get("ancestry"):
        start = "the stage before"
    else:  # trained from a bundle that recorded no lineage
        start = f"a bundle trained on data {parent.get('fingerprint', '?')}"
    stage = {"data": [list(pair) for pair in t.get("scenes", [])], "steps": int(t.get("steps") or 0),
             "seconds": float(t.get("seconds") or 0.0), "energy_kwh": t.get("energy_kwh"), "from": start,
             "data_fingerprint": bundle.data_fingerprint}
    for key in ("name", "what", "date", "command", "verdict", "from"):
        if t.get(f"stage_{key}"):
            stage[key] = t[f"stage_{key}"]
    if t.get("held_out"):
        stage["held_out_f1"] = {p["place"]: round(p["f1"], 4) for p in t["held_out"]}
    return stage


def lineage(bundle: Bundle) -> list[dict[str, Any]]:
    """Every stage that made ``bundle``, the first first: its ancestors' (recorded when it was trained from a
    parent), then its own."""
    return [*bundle.training.get("ancestry", []), own_stage(bundle)]


def totals(stages: list[dict[str, Any]]) -> dict[str, float | int | None]:
    """Steps, seconds and kWh over ``stages`` (kWh None when a stage did not measure it)."""
    kwh = [s.get("energy_kwh") for s in stages]
    measured = [float(k) for k in kwh if k is not None]
    return {"stages": len(stages), "steps": sum(int(s["steps"]) for s in stages),
            "seconds": round(sum(float(s["seconds"]) for s in stages), 1),
            "energy_kwh": round(sum(measured), 4) if len(measured) == len(kwh) else None}


def format_lineage(stages: list[dict[str, Any]]) -> str:
    """A table of ``stages`` and their totals, one line each, for ``openfootprints models lineage``."""
    lines = []
    for i, s in enumerate(stages, 1):
        kwh = "–" if s.get("energy_kwh") is None else f"{s['energy_kwh']:.4f} kWh"
        scores = ", ".join(f"{p} {f1:.3f}" for p, f1 in s.get("held_out_f1", {}).items())
        name = s.get("name") or "(unnamed)"
        lines.append(f"{i}. {name}{' (' + s['date'] + ')' if s.get('date') else ''}: {s['steps']:,} steps, "
                     f"{s['seconds'] / 60:.0f} min, {kwh}; from {s['from']}; {len(s['data'])} scene(s)"
                     + (f"; held-out F1: {scores}" if scores else "")
                     + (f"\n   {s['verdict']}" if s.get("verdict") else ""))
    t = totals(stages)
    kwh = "–" if t["energy_kwh"] is None else f"{t['energy_kwh']:.4f} kWh"
    lines.append(f"total: {t['stages']} stage(s), {t['steps']:,} steps, {float(t['seconds'] or 0) / 60:.0f} min, {kwh}")
    return "\n".join(lines)
