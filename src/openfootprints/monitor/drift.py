"""Drift of imagery and model outputs from what a model was validated on.

A :class:`Profile` counts, over valid pixels, each band's normalized value (the network's input, in standard
deviations of the training imagery) in fixed bins, and the network's output (building probability, or energy)
in tenths; and, over the buildings found there, their confidence (before any calibration) in tenths, which
with the valid area gives buildings per km². Training stores the profile of its validation chips in the
bundle; detection builds one of the scene it runs on and compares the two with the population stability index
(PSI) per band, for the output and for the buildings' confidence:

    PSI = Σ (observed share − reference share) · ln(observed share / reference share)

Below 0.1 the two distributions are the same for practical purposes; 0.1–0.25 is a moderate shift; above
``MAJOR_PSI`` (0.25) the imagery is unlike the training data (another sensor, season, haze, processing or
ground resolution) and detection warns: its scores on the held-out places may not hold here. Buildings per km²
are reported beside the reference's but never warned on: a rural scene rightly has far fewer than a town.
No torch: this runs in the ONNX detection path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PIXEL_EDGES = np.linspace(-4.0, 4.0, 17)  # std units; values beyond the ends fall in the two outer bins
OUTPUT_EDGES = np.linspace(0.1, 0.9, 9)  # the output in tenths (and the buildings' confidence)
STRIDE = 4  # every 4th pixel of every 4th row: 1/16 of the pixels describe a distribution as well
MAJOR_PSI = 0.25
MODERATE_PSI = 0.1
MIN_PIXELS = 5000  # fewer sampled pixels than this: too few to judge
MIN_BUILDINGS = 30  # fewer buildings than this (in the run or the reference): their confidence is not compared
SHARE_FLOOR = 1e-4  # an empty bin counts as this share (PSI is infinite otherwise)


def decoding_settings(threshold: float, min_area_m2: float, min_confidence: float = 0.0) -> dict[str, float]:
    """The detection settings that decide which buildings a profile counts: the output threshold, the smallest
    area (m²) and the confidence cut (left out when 0, so profiles from before the cut still compare)."""
    settings = {"threshold": float(threshold), "min_area_m2": float(min_area_m2)}
    return settings | ({"min_confidence": float(min_confidence)} if min_confidence > 0 else {})


@dataclass
class Profile:
    """Counts over sampled valid pixels: ``bands`` (C, 18) per band and bin of normalized value, ``sums`` (C,) the
    sum of each band's normalized values (for the mean shift), ``output`` (10,) per tenth of the output; and
    ``buildings`` (10,): the buildings found, per tenth of their confidence, over ``area_m2`` square metres of
    valid imagery (each place counted once, however many windows saw it), with the ``decoding`` that found them
    (:func:`decoding_settings`: buildings found with other settings are not comparable)."""

    bands: np.ndarray
    sums: np.ndarray
    output: np.ndarray
    buildings: np.ndarray = field(default_factory=lambda: np.zeros(len(OUTPUT_EDGES) + 1, np.int64))
    area_m2: float = 0.0
    decoding: dict[str, float] | None = None

    @classmethod
    def empty(cls, n_bands: int) -> Profile:
        return cls(np.zeros((n_bands, len(PIXEL_EDGES) + 1), np.int64), np.zeros(n_bands),
                   np.zeros(len(OUTPUT_EDGES) + 1, np.int64))

    @property
    def pixels(self) -> int:
        return int(self.output.sum())

    def add_pixels(self, other: Profile) -> None:
        """Add the pixel counts of ``other`` (a batch of windows); the buildings are left alone, so the thread that
        vectorizes can count them while the one that predicts adds pixels."""
        self.bands += other.bands
        self.sums += other.sums
        self.output += other.output

    def add_buildings(self, confidence: np.ndarray) -> None:
        """Count buildings of these confidences, shape (n,), in [0, 1] (before calibration). A new array: a profile
        handed over by Ray holds read-only ones."""
        self.buildings = self.buildings + np.bincount(np.searchsorted(OUTPUT_EDGES, np.asarray(confidence, np.float64)),
                                      minlength=len(OUTPUT_EDGES) + 1)

    def buildings_per_km2(self) -> float | None:
        """Buildings found per km² of valid imagery (None when no area was counted)."""
        return float(self.buildings.sum() / (self.area_m2 / 1e6)) if self.area_m2 > 0 else None

    def band_means(self) -> np.ndarray:
        """(C,) mean normalized value of each band (0 for the training imagery's own mean)."""
        return self.sums / max(1, self.pixels)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (what a bundle stores)."""
        return {"bands": self.bands.tolist(), "sums": self.sums.tolist(), "output": self.output.tolist(),
                "buildings": self.buildings.tolist(), "area_m2": self.area_m2, "decoding": self.decoding,
                "pixel_edges": PIXEL_EDGES.tolist(), "output_edges": OUTPUT_EDGES.tolist(), "stride": STRIDE}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        """From :meth:`to_dict`; profiles stored before buildings were counted have none."""
        buildings = np.asarray(d.get("buildings", [0] * (len(OUTPUT_EDGES) + 1)), np.int64)
        return cls(np.asarray(d["bands"], np.int64), np.asarray(d["sums"], np.float64),
                   np.asarray(d["output"], np.int64), buildings, float(d.get("area_m2", 0.0)), d.get("decoding"))


def window_profile(images: np.ndarray, valid: np.ndarray, outputs: np.ndarray) -> Profile:
    """The profile of a batch: ``images`` (N, C, H, W) normalized, ``valid`` (N, H, W) bool, ``outputs`` (N, H, W)
    in [0, 1]; every ``STRIDE``-th pixel of every ``STRIDE``-th row is counted."""
    keep = valid[:, ::STRIDE, ::STRIDE]
    pixels = np.moveaxis(images[:, :, ::STRIDE, ::STRIDE], 1, 0)[:, keep]  # (C, n)
    profile = Profile.empty(images.shape[1])
    for c, values in enumerate(pixels):
        profile.bands[c] = np.bincount(np.searchsorted(PIXEL_EDGES, values), minlength=len(PIXEL_EDGES) + 1)
    profile.sums = pixels.sum(axis=1, dtype=np.float64)
    profile.output = np.bincount(np.searchsorted(OUTPUT_EDGES, outputs[:, ::STRIDE, ::STRIDE][keep]),
                                 minlength=len(OUTPUT_EDGES) + 1)
    return profile


def psi(reference: np.ndarray, observed: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins (counts)."""
    ref = np.maximum(reference / max(1, reference.sum()), SHARE_FLOOR)
    obs = np.maximum(observed / max(1, observed.sum()), SHARE_FLOOR)
    return float(np.sum((obs - ref) * np.log(obs / ref)))


@dataclass
class Drift:
    """PSI of each band, of the output and of the buildings' confidence (None: too few buildings to compare), the
    shift of each band's mean (std units), buildings per km² here and in the reference (None: not known), and the
    warning (or None)."""

    band_psi: list[float]
    output_psi: float
    mean_shift: list[float]
    pixels: int
    warning: str | None
    confidence_psi: float | None = None
    buildings_per_km2: float | None = None
    reference_buildings_per_km2: float | None = None

    def summary(self) -> dict[str, Any]:
        def rounded(v: float | None, digits: int) -> float | None:
            return None if v is None else round(v, digits)

        return {"band_psi": [round(v, 3) for v in self.band_psi], "output_psi": round(self.output_psi, 3),
                "confidence_psi": rounded(self.confidence_psi, 3),
                "mean_shift_std": [round(v, 2) for v in self.mean_shift], "pixels_sampled": self.pixels,
                "buildings_per_km2": rounded(self.buildings_per_km2, 1),
                "reference_buildings_per_km2": rounded(self.reference_buildings_per_km2, 1),
                "major": self.warning is not None}


def compare(reference: Profile, observed: Profile, scene: str = "the scene") -> Drift | None:
    """The drift of ``observed`` from ``reference``; None when too few pixels were seen to judge. Buildings are
    compared only when both were found with the same decoding (a reference from before buildings were counted
    has none)."""
    if observed.pixels < MIN_PIXELS or reference.pixels < MIN_PIXELS or len(observed.bands) != len(reference.bands):
        return None
    band_psi = [psi(r, o) for r, o in zip(reference.bands, observed.bands)]
    output_psi = psi(reference.output, observed.output)
    same_decoding = reference.decoding is not None and reference.decoding == observed.decoding
    confidence_psi = (psi(reference.buildings, observed.buildings) if same_decoding and
                      min(reference.buildings.sum(), observed.buildings.sum()) >= MIN_BUILDINGS else None)
    shift = (observed.band_means() - reference.band_means()).tolist()
    parts = [f"band {i + 1} PSI {v:.2f} (mean {s:+.1f} std)"
             for i, (v, s) in enumerate(zip(band_psi, shift)) if v >= MAJOR_PSI]
    if output_psi >= MAJOR_PSI:
        parts.append(f"model output PSI {output_psi:.2f}")
    if confidence_psi is not None and confidence_psi >= MAJOR_PSI:
        parts.append(f"building confidence PSI {confidence_psi:.2f}")
    warning = None
    if parts:
        what = ("imagery unlike the model's training data" if any(p.startswith("band") for p in parts)
                else "predictions unlike the model's on its training data")
        warning = (f"{scene}: {what} ({', '.join(parts)}; PSI >= {MAJOR_PSI} is far from it), as from another "
                   "place, sensor, season or ground resolution: expect fewer or less exact buildings than the "
                   "model's published scores; check a sample, or adapt the model to it")
    density = observed.buildings_per_km2() if same_decoding else None
    reference_density = reference.buildings_per_km2() if same_decoding else None
    return Drift(band_psi, output_psi, shift, observed.pixels, warning, confidence_psi, density, reference_density)
